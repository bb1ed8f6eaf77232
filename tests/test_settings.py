"""Profile schema: every bad setting is one clear line, found before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_cohort import make_cohort

from benchmark import cli
from benchmark.config import apply_overrides, load_profile, profile_names, resolve
from benchmark.settings import check


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("settings") / "tiny"
    make_cohort(root, patients=3)
    return root


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (["--iterations", "-5"], "--iterations -5: train.iterations must be at least 1"),
        (["--set", "train.lr=abc"], "--set train.lr=abc: train.lr must be a number"),
        (["--set", "train.lr=0"], "--set train.lr=0: train.lr must be greater than 0"),
        (["--set", "train.lr=NaN"], "--set train.lr=NaN: train.lr must be a finite number"),
        (["--set", "train.batch_size=0"],
         "--set train.batch_size=0: train.batch_size must be at least 1"),
        (["--set", "train.batch_size=2.5"],
         "--set train.batch_size=2.5: train.batch_size must be a whole number"),
        (["--set", "train.augment=1"], "--set train.augment=1: train.augment must be true or false"),
        (["--set", "train.milestones=[3,2]"],
         "--set train.milestones=[3,2]: train.milestones must be increasing"),
        (["--set", "train.milestones=[4]"],
         "--set train.milestones=[4]: train.milestones [4] must each be below "
         "train.iterations (4)"),
        (["--iterations", "3"],  # the smoke profile steps the LR at 3
         "--iterations 3: train.milestones [3] must each be below train.iterations (3)"),
        (["--set", "train.amp=fp16"], "--set train.amp=fp16: train.amp must be 'none' or 'bf16'"),
        (["--device", "gpu"], "--device gpu: train.device must be auto, cpu, mps, cuda or cuda:N"),
        (["--set", "train.select_metrics=[]"],
         "--set train.select_metrics=[]: train.select_metrics must hold at least 1 item"),
        (["--set", 'train.select_metrics=["AP50"]'],
         '--set train.select_metrics=["AP50"]: train.select_metrics holds unknown metric '
         "'AP50'; use IoU30"),
        (["--set", "eval.score_threshold=1.5"],
         "--set eval.score_threshold=1.5: eval.score_threshold must be below 1"),
        (["--set", "seeds=[-1]"], "--set seeds=[-1]: seeds[0] must be at least 0"),
        (["--set", "detector={}"], "--set detector={}: detector lacks settings input_size, "
         "width, optimise_anchors, overrides"),
        (["--set", "train.iteration=5"], "--set train.iteration: unknown key 'iteration'"),
        (["--seed", "-1"], "--seed -1: a seed must be a whole number"),
    ],
)
def test_bad_setting_is_one_line_and_writes_nothing(cohort, tmp_path, capsys, options, line):
    before = _tree(cohort)
    runs = tmp_path / "runs"
    argv = ["train", "--cohort", str(cohort), "--model", "ssd", "--profile", "smoke",
            "--runs", str(runs), *options]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {line}") and err.count("\n") == 1, err
    assert not runs.exists() and _tree(cohort) == before


def test_run_checks_settings_before_making_a_cohort(tmp_path, capsys):
    argv = ["run", "--variant", "nonrigid", "--work", str(tmp_path / "work"),
            "--runs", str(tmp_path / "runs"), "--set", "train.batch_size=0"]
    assert cli.main(argv) == 2
    assert "train.batch_size must be at least 1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_several_problems_share_one_line():
    with pytest.raises(ValueError) as err:
        resolve("smoke", ["train.lr=abc", "eval.batch_size=0"])
    message = str(err.value)
    assert "\n" not in message
    assert message == ("--set train.lr=abc: train.lr must be a number; --set eval.batch_size=0: "
                       "eval.batch_size must be at least 1")


def test_profile_file_problems_name_the_file_and_the_value(tmp_path):
    mine = load_profile("smoke")
    mine["train"]["iterations"] = "4"
    mine["registration"]["threads"] = 2
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(mine))
    with pytest.raises(ValueError) as err:
        resolve(path)
    assert str(err.value) == (
        f"profile {path.resolve()}: train.iterations must be a whole number (got '4'); "
        "registration has unknown settings threads (copy a built-in profile for the valid keys)"
    )


@pytest.mark.parametrize("name", profile_names())
def test_builtin_profiles_are_valid(name):
    check(load_profile(name), name)


def test_resolved_config_is_the_plain_dict_it_always_was():
    """Run folders compare the saved config.json with the resolved config: validation must not
    reshape it (no added defaults, no converted values)."""
    sets = ["train.lr=1", "detector.overrides.groups=2", "phantom.motion_mm=null"]
    resolved = resolve("smoke", sets, model="ssd", seed=3)
    expected = {**apply_overrides(load_profile("smoke"), sets), "model": "ssd", "seed": 3}
    assert resolved == expected and type(resolved) is dict
    assert type(resolved["train"]["lr"]) is int
    assert json.loads(json.dumps(resolved)) == resolved
