"""Progress of a whole matrix, printed by the driver: done / running / failed / ETA."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from benchmark.training_progress import duration


class MatrixProgress:
    """Counts units as they finish and prints one line per event.

    The ETA is throughput based (units finished in this session per second of wall time), so it
    holds for one worker and for many alike; it is unknown until a unit has finished here.
    """

    def __init__(
        self,
        total: int,
        report: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.report, self.clock = total, report, clock
        self.start = clock()
        self.done = self.skipped = self.failed = self.running = 0
        self.failures: list[tuple[str, Path, str]] = []

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.skipped - self.failed

    def eta_seconds(self) -> float | None:
        if self.done == 0:
            return None
        return (self.clock() - self.start) / self.done * self.remaining

    def status(self) -> str:
        eta = self.eta_seconds()
        text = "?" if eta is None else duration(eta)
        finished = self.done + self.skipped
        return (
            f"{finished}/{self.total} done ({self.skipped} skipped), {self.running} running, "
            f"{self.failed} failed, ETA {text}"
        )

    def set_running(self, running: int) -> None:
        """Update the running count; prints only when it changed."""
        if running != self.running:
            self.running = running
            self.report(f"[{self.status()}]")

    def on_skipped(self, label: str, started: bool = False) -> None:
        """A finished unit (``started``: found finished by its worker, e.g. done elsewhere)."""
        self.skipped += 1
        if started:
            self.running = max(0, self.running - 1)
        self.report(f"{label}: finished before, skipped  [{self.status()}]")

    def on_started(self, label: str) -> None:
        self.running += 1
        self.report(f"{label}: training ...  [{self.status()}]")

    def on_done(self, label: str, seconds: float) -> None:
        self.done += 1
        self.running = max(0, self.running - 1)
        self.report(f"{label}: done in {duration(seconds)}  [{self.status()}]")

    def on_failed(self, label: str, log: Path, error: str) -> None:
        self.failed += 1
        self.running = max(0, self.running - 1)
        self.failures.append((label, log, error))
        self.report(f"{label}: FAILED ({error}); log: {log}  [{self.status()}]")

    def finish(self) -> None:
        elapsed = duration(self.clock() - self.start)
        self.report(
            f"matrix: {self.done} trained, {self.skipped} skipped, {self.failed} failed "
            f"in {elapsed}"
        )

