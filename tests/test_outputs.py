"""A full disk or a missing permission while a run writes: the error names the file, nothing
partial is left, and the same command resumes once the disk has room."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tiny_detector  # noqa: F401  (registers the test-only model ``tiny_test``)
import torch
from tiny_cohort import make_cohort

from benchmark import atomic, run_folder, runner
from benchmark.checkpoints import BEST, CHECKPOINTS, LAST
from benchmark.config import resolve
from benchmark.outputs import OutputError
from benchmark.training import train

REPO = Path(__file__).resolve().parents[1]
SETS = ["train.iterations=4", "train.val_every=3", "train.checkpoint_every=2",
        "eval.bootstrap=10"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("outputs") / "tiny"
    make_cohort(root, patients=3)
    return root


def _unit(cohort: Path, runs: Path) -> dict:
    return runner.unit_config(resolve("smoke", SETS), cohort, "unregistered", "tiny_test", 1, runs)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _full_disk_after(nbytes: int):
    """A writer that gets ``nbytes`` onto the disk and then finds it full."""

    def write(stream_or_path) -> None:
        if isinstance(stream_or_path, (str, os.PathLike)):
            with open(stream_or_path, "wb") as stream:
                stream.write(b"x" * nbytes)
        else:
            stream_or_path.write(b"x" * nbytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_full_disk_during_a_checkpoint_names_it_and_keeps_the_last(cohort, tmp_path, monkeypatch):
    config = _unit(cohort, tmp_path)
    run_dir = run_folder.unit_dir(config)
    train(config, run_dir, stop_at=2)
    last = (run_dir / CHECKPOINTS / LAST).read_bytes()
    before = _files(run_dir)
    monkeypatch.setattr(torch, "save", lambda state, stream: _full_disk_after(100)(stream))
    with pytest.raises(OutputError) as err:
        train(config, run_dir)  # iteration 3 validates and saves best.pt first
    assert str(err.value).startswith(
        f"{run_dir / CHECKPOINTS / BEST}: cannot write the checkpoint (No space left on device)"
    )
    assert err.value.errno == errno.ENOSPC
    assert _files(run_dir) == before and (run_dir / CHECKPOINTS / LAST).read_bytes() == last
    monkeypatch.undo()
    assert train(config, run_dir).iteration == 4  # resumes once there is room


def test_full_disk_while_writing_predictions_leaves_the_unit_unfinished(
    cohort, tmp_path, monkeypatch
):
    config = _unit(cohort, tmp_path)
    run_dir = run_folder.unit_dir(config)
    to_csv = pd.DataFrame.to_csv

    def predictions_fill_the_disk(frame, path, **kwargs):
        if "predictions" in Path(path).name:
            return _full_disk_after(50)(path)
        return to_csv(frame, path, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", predictions_fill_the_disk)
    with pytest.raises(OutputError, match=r"predictions_val\.csv: cannot write the val predictions"):
        runner.run_unit(config)
    files = _files(run_dir)
    assert not any("predictions" in f or f.endswith(".tmp") for f in files), files
    assert not run_folder.is_finished(config)
    monkeypatch.undo()
    runner.run_unit(config)
    assert run_folder.is_finished(config) and (run_dir / "predictions_test.csv").exists()


def test_no_permission_names_the_file_and_writes_nothing(cohort, tmp_path, monkeypatch):
    config = _unit(cohort, tmp_path)

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match=r"config\.json: cannot write the run's settings "
                       r"\(Permission denied\)"):
        runner.run_unit(config)
    assert _files(tmp_path) == set()


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs POSIX file limits")
def test_a_real_failed_write_in_torch_save_names_the_checkpoint(cohort, tmp_path):
    """The operating system refuses a write (a file size limit, like a full disk): torch's zip
    writer must report it as an OSError naming our file, not "[enforce fail at ...]"."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    argv = [sys.executable, "-m", "benchmark", "train", "--cohort", str(cohort), "--model",
            "tiny_test", "--model-module", "tiny_detector", "--profile", "smoke",
            "--runs", str(tmp_path / "runs"), *[a for s in SETS for a in ("--set", s)]]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tmp_path,
                          preexec_fn=_limit_file_size, timeout=600)
    run_dir = tmp_path / "runs" / "tiny" / "unregistered" / "tiny_test" / "seed1111"
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "iteration" not in line]  # progress
    assert errors == [
        f"error: {run_dir / CHECKPOINTS / LAST}: cannot write the checkpoint (File too large); "
        "free disk space or fix the folder's permissions, then rerun the same command to resume"
    ]
    assert _files(run_dir) == {".lock", "config.json", "train_log.csv"}
