"""Progress inside a training unit: iteration, loss, images/s and ETA, as a bar or as lines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import tiny_detector  # noqa: F401  (registers the test-only model ``tiny_test``)
from tiny_cohort import make_cohort

from benchmark import run_folder, runner
from benchmark.config import resolve
from benchmark.executors.units import UNIT_LOG, train_unit
from benchmark.training import train
from benchmark.training_progress import ProgressDisplay, TrainingProgress, line_every


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_tenth_of_the_unit_with_eta():
    stream, clock = io.StringIO(), Clock()
    meter = TrainingProgress(ProgressDisplay(stream), "m / v / seed 1", 20, 120, 5, clock)
    assert meter.every == line_every(120, 5) == 10
    for it in range(21, 41):
        clock.now += 0.5
        meter.step(it, 1.25, 64.0) if it % 5 == 0 else meter.step(it)
    assert stream.getvalue().splitlines() == [
        "m / v / seed 1: iteration 30/120 (25%), loss 1.25, 64.0 images/s, ETA 45 s",
        "m / v / seed 1: iteration 40/120 (33%), loss 1.25, 64.0 images/s, ETA 40 s",
    ]


def test_line_every_fits_long_and_short_units():
    assert line_every(60000, 50) == 6000
    assert line_every(250, 10) == 20
    assert line_every(4, 1) == 1
    assert line_every(12, 5) == 5


def test_bar_on_request_shows_loss_and_speed():
    stream = io.StringIO()
    meter = TrainingProgress(ProgressDisplay(stream, bar=True), "unit", 0, 10, 2)
    for it in range(1, 11):
        meter.step(it, 0.5, 12.0) if it % 2 == 0 else meter.step(it)
    assert meter.bar.n == 10 and meter.bar.postfix == "loss 0.5, 12.0 img/s"
    meter.bar.refresh()
    assert "10/10" in stream.getvalue() and "loss 0.5, 12.0 img/s" in stream.getvalue()
    meter.close()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("progress") / "tiny"
    make_cohort(root, patients=3)
    return root


SETS = ["train.iterations=6", "train.log_every=1", "train.val_every=3",
        "train.checkpoint_every=3", "train.milestones=[]", "eval.bootstrap=0"]


def test_training_reports_each_unit_line_also_after_resuming(cohort, tmp_path):
    config = runner.unit_config(resolve("smoke", SETS), cohort, "unregistered", "tiny_test", 1,
                                tmp_path)
    first, second = io.StringIO(), io.StringIO()
    train(config, tmp_path / "run", stop_at=3, progress=ProgressDisplay(first))
    train(config, tmp_path / "run", progress=ProgressDisplay(second))
    lines = [line.split(", ETA")[0] for line in second.getvalue().splitlines()]
    assert [line.split(", loss")[0] for line in lines] == [
        f"tiny_test / unregistered / seed 1: iteration {it}/6 ({100 * it / 6:.0f}%)"
        for it in (4, 5, 6)
    ]
    assert all("images/s" in line for line in lines)
    assert len(first.getvalue().splitlines()) == 3


def test_a_unit_shows_progress_on_stderr_not_in_its_log(cohort, tmp_path, capsys):
    config = runner.unit_config(resolve("smoke", SETS), cohort, "unregistered", "tiny_test", 2,
                                tmp_path)
    train_unit(config)
    err = capsys.readouterr().err
    assert "tiny_test / unregistered / seed 2: iteration 6/6 (100%)" in err
    assert "iteration 6/6" not in (run_folder.unit_dir(config) / UNIT_LOG).read_text()
