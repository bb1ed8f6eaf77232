"""The training loop: it learns, resumes to identical weights, and fails cleanly."""

from __future__ import annotations

import errno

import numpy as np
import pandas as pd
import pytest
import tiny_detector
import torch
from tiny_cohort import make_cohort

from benchmark.checkpoints import BEST, CHECKPOINTS, LAST, load_checkpoint
from benchmark.config import resolve
from benchmark.dataset import LesionSliceDataset
from benchmark.evaluation import evaluate_frame
from benchmark.prediction import predict
from benchmark.sampler import batch_keys
from benchmark.training import TrainingError, train


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("train") / "tiny", patients=8)


def config(cohort, *sets: str, model: str = "tiny_test") -> dict:
    base = [
        "train.batch_size=4",
        "train.val_every=6",
        "train.checkpoint_every=4",
        "train.log_every=2",
        "train.iterations=12",
        "train.milestones=[9]",
        "train.lr=0.01",
        "detector.width=0.25",
    ]
    return resolve(
        "smoke",
        [*base, *sets],
        cohort=str(cohort.root),
        variant="unregistered",
        model=model,
        seed=3,
    )


def test_data_order_is_a_function_of_seed_and_iteration():
    keys = [k for it in range(5) for k in batch_keys(10, 4, seed=1, iteration=it)]
    assert [d for _, d in keys] == list(range(20))
    assert sorted(i for i, _ in keys[:10]) == list(range(10))  # first epoch is a permutation
    assert batch_keys(10, 4, 1, 3) == keys[12:16]
    assert batch_keys(10, 4, 2, 0) != keys[:4]


def test_loop_learns_lesions(cohort, tmp_path):
    cfg = config(
        cohort,
        "train.iterations=150",
        "train.milestones=[]",
        "train.augment=false",
        "train.batch_size=8",
        "train.val_every=150",
        "train.checkpoint_every=150",
        "detector.width=0.5",
    )
    train(cfg, tmp_path)
    model = tiny_detector.build_tiny(64, 0.5)
    model.load_state_dict(load_checkpoint(tmp_path / CHECKPOINTS / LAST)["model"])
    frame = predict(model, LesionSliceDataset(cohort, "train", 64), torch.device("cpu"))
    assert evaluate_frame(frame)["IoU50"] > 0.8
    log = pd.read_csv(tmp_path / "train_log.csv")
    losses = log["loss"].dropna().to_numpy()
    assert losses[-3:].mean() < 0.5 * losses[:3].mean()


def test_resume_gives_the_same_weights(cohort, tmp_path):
    cfg = config(cohort)  # augmentation on, LR step at 9, validation at 6 and 12
    straight = train(cfg, tmp_path / "a")
    first = train(cfg, tmp_path / "b", stop_at=8)
    assert first.iteration == 8
    resumed = train(cfg, tmp_path / "b")
    assert resumed.iteration == straight.iteration == 12
    a = load_checkpoint(tmp_path / "a" / CHECKPOINTS / LAST)
    b = load_checkpoint(tmp_path / "b" / CHECKPOINTS / LAST)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["best_iteration"] == b["best_iteration"]
    log_a = pd.read_csv(tmp_path / "a" / "train_log.csv").drop(columns="images_per_second")
    log_b = pd.read_csv(tmp_path / "b" / "train_log.csv").drop(columns="images_per_second")
    pd.testing.assert_frame_equal(log_a, log_b)


def test_nan_loss_stops_with_iteration_and_keeps_checkpoint(cohort, tmp_path):
    cfg = config(cohort, "detector.overrides.fail_after=5")
    with pytest.raises(TrainingError, match=r"iteration 6 .*lower train.lr"):
        train(cfg, tmp_path)
    saved = load_checkpoint(tmp_path / CHECKPOINTS / LAST)
    assert saved["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_full_disk_leaves_previous_checkpoint(cohort, tmp_path, monkeypatch):
    cfg = config(cohort)
    train(cfg, tmp_path, stop_at=4)
    before = (tmp_path / CHECKPOINTS / LAST).read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="cannot write the checkpoint.*No space left"):
        train(cfg, tmp_path)
    assert (tmp_path / CHECKPOINTS / LAST).read_bytes() == before
    assert not list((tmp_path / CHECKPOINTS).glob("*.tmp"))


def test_missing_or_damaged_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint missing"):
        load_checkpoint(tmp_path / BEST)
    (tmp_path / BEST).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="damaged checkpoint"):
        load_checkpoint(tmp_path / BEST)


def test_dc_group_keeps_its_lr_ratio_through_the_schedule(cohort, tmp_path, monkeypatch):
    def groups(self, lr):
        body = list(self.body.parameters())
        rest = [p for p in self.parameters() if all(p is not q for q in body)]
        return [{"params": body, "lr": lr}, {"params": rest, "lr": 0.1 * lr}]

    monkeypatch.setattr(tiny_detector.TinyDetector, "param_groups", groups)
    train(config(cohort, "train.checkpoint_every=12"), tmp_path)
    state = load_checkpoint(tmp_path / CHECKPOINTS / LAST)["optimizer"]
    lrs = [g["lr"] for g in state["param_groups"]]
    np.testing.assert_allclose(lrs, [0.001, 0.0001])


def test_log_names_each_loss_term_once_also_after_resuming_an_old_log(
    cohort, tmp_path, monkeypatch
):
    loss = tiny_detector.TinyDetector._loss

    def torchvision_style(self, *args):  # torchvision's detectors name their terms loss_...
        parts = loss(self, *args)
        return {"loss_classifier": parts["heat"], "size": parts["size"]}

    monkeypatch.setattr(tiny_detector.TinyDetector, "_loss", torchvision_style)
    cfg = config(cohort)
    train(cfg, tmp_path, stop_at=4)
    last = tmp_path / CHECKPOINTS / LAST
    saved = load_checkpoint(last)  # as an earlier version logged it: loss_<term> for every term
    saved["log"] = [{("loss_" + k if k.startswith("loss_c") else k): v for k, v in row.items()}
                    for row in saved["log"]]
    assert "loss_loss_classifier" in saved["log"][0]
    torch.save(saved, last)
    train(cfg, tmp_path, stop_at=8)
    log = pd.read_csv(tmp_path / "train_log.csv")
    terms = [c for c in log.columns if c.startswith("loss_")]
    assert terms == ["loss_classifier", "loss_size"]
    assert log["loss_classifier"].notna().sum() == log["loss"].notna().sum() == 4
