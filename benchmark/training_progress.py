"""Progress inside one training unit: iteration, loss, images/s and ETA.

On a terminal a tqdm bar (cleared when the unit ends); elsewhere (a log file, a pipe, a worker
process sharing the terminal with others) one line every :func:`line_every` iterations, e.g.
``gssd / nonrigid / seed 1111: iteration 100/250 (40%), loss 1.234, 12.3 images/s, ETA 2 min``.
The ETA counts everything since the unit (re)started, validation included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class ProgressDisplay:
    """Where a unit shows its progress; ``bar``: a tqdm bar (``None``: when ``stream`` is a
    terminal), else lines."""

    stream: TextIO
    bar: bool | None = None


def line_every(total: int, log_every: int) -> int:
    """Iterations between two progress lines: about ten lines per unit, on logged iterations
    (the loss is read only there)."""
    return log_every * max(1, round(total / 10 / log_every))


class TrainingProgress:
    """Report the iterations ``start .. stop`` of one unit to a :class:`ProgressDisplay`."""

    def __init__(
        self,
        display: ProgressDisplay,
        label: str,
        start: int,
        stop: int,
        log_every: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label, self.start, self.stop, self.clock = label, start, stop, clock
        self.stream = display.stream
        self.every = line_every(stop, log_every)
        self.began = clock()
        bar = display.bar if display.bar is not None else _is_terminal(display.stream)
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=stop, initial=start, desc=label, unit="it", leave=False,
                            file=display.stream, dynamic_ncols=True)

    def step(self, iteration: int, loss: float | None = None,
             images_per_second: float | None = None) -> None:
        """After ``iteration`` (1-based); ``loss`` and images/s where they were measured."""
        if self.bar is not None:
            self.bar.update(iteration - self.bar.n)
            if loss is not None:
                self.bar.set_postfix_str(f"loss {loss:.4g}, {images_per_second:.1f} img/s",
                                         refresh=False)
            return
        if loss is not None and (iteration % self.every == 0 or iteration == self.stop):
            self.stream.write(f"{self.label}: {self.line(iteration, loss, images_per_second)}\n")
            self.stream.flush()

    def line(self, iteration: int, loss: float, images_per_second: float | None) -> str:
        done = iteration - self.start
        eta = (self.clock() - self.began) / done * (self.stop - iteration) if done else math.nan
        speed = "" if images_per_second is None else f", {images_per_second:.1f} images/s"
        return (f"iteration {iteration}/{self.stop} ({100 * iteration / self.stop:.0f}%), "
                f"loss {loss:.4g}{speed}, ETA {duration(eta)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def duration(seconds: float) -> str:
    """``42 s``, ``5 min``, ``3.2 h`` (``?`` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
