"""Runner units, the matrix, profiles and the train / run commands."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import tiny_detector  # noqa: F401  (registers the test-only model ``tiny_test``)
from tiny_cohort import make_cohort

import models
from benchmark import cli, runner
from benchmark.analysis.estimates import AP_COLUMNS, Estimates
from benchmark.analysis.sensitivity import sensitivity_frame
from benchmark.analysis.summary import summarise, summary_tables
from benchmark.config import apply_overrides, load_profile, resolve
from benchmark.evaluation import METRIC_KEYS
from benchmark.executors.local import LocalExecutor

SETS = ["train.iterations=4", "train.val_every=2", "train.checkpoint_every=2", "eval.bootstrap=10"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner") / "tiny"
    make_cohort(root, patients=8)
    # a hand-made "registered variant": the same patients (the runner only needs the format)
    make_cohort(root / "variants" / "nonrigid", patients=8)
    return root


def test_profiles_load_and_override():
    paper = load_profile("paper")
    assert paper["train"]["iterations"] == 60000 and paper["train"]["batch_size"] == 32
    assert paper["train"]["milestones"] == [30000, 50000] and paper["detector"]["input_size"] == 300
    cfg = apply_overrides(paper, ["train.iterations=200", "detector.overrides.groups=2"])
    assert cfg["train"]["iterations"] == 200 and cfg["detector"]["overrides"] == {"groups": 2}
    assert paper["train"]["iterations"] == 60000  # the original is untouched
    with pytest.raises(ValueError, match="unknown key 'iteration'.*iterations"):
        apply_overrides(paper, ["train.iteration=5"])
    with pytest.raises(ValueError, match="unknown profile 'fast'.*paper"):
        load_profile("fast")


def test_parse_models_takes_sets_names_and_patterns():
    assert runner.parse_models("all") == models.list_models(table="I")
    assert runner.parse_models("ablations") == models.list_models(table="III")
    assert runner.parse_models("gssd, pixellink_pp*") == [
        "gssd", "pixellink_pp", *models.list_models(pattern="pixellink_pp_*")
    ]
    with pytest.raises(ValueError, match="unknown model.*nope.*gssd_pp"):
        runner.parse_models("gssd,nope")


def test_unit_config_refuses_an_override_the_model_does_not_take(cohort, tmp_path):
    base = resolve("smoke", ["detector.overrides.groups=2"])
    for model in ("gssd", "pixellink"):
        with pytest.raises(ValueError, match=f"'{model}' takes no override 'groups'"):
            runner.unit_config(base, cohort, "unregistered", model, 1, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written


def test_builtin_profiles_share_one_shape():
    def keys(node, prefix=""):
        if not isinstance(node, dict) or prefix == "detector.overrides.":
            return {prefix}
        return set().union(*(keys(v, f"{prefix}{k}.") for k, v in node.items()))

    shapes = {
        name: keys({k: v for k, v in load_profile(name).items() if k != "description"})
        for name in ("paper", "quick", "smoke")
    }
    assert shapes["paper"] == shapes["quick"] == shapes["smoke"]


def test_profile_file_round_trip(tmp_path):
    mine = load_profile("smoke")
    mine["train"]["iterations"] = 7
    (tmp_path / "mine.json").write_text(json.dumps(mine))
    assert resolve(tmp_path / "mine.json")["train"]["iterations"] == 7


def test_unit_writes_the_run_folder_and_skips_when_finished(cohort, tmp_path):
    base = resolve("smoke", SETS)
    config = runner.unit_config(base, cohort, "unregistered", "tiny_test", 5, tmp_path)
    run_dir = runner.run_unit(config)
    assert run_dir == tmp_path / "tiny" / "unregistered" / "tiny_test" / "seed5"
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.json",
        "metrics.json",
        "train_log.csv",
        "predictions_val.csv",
        "predictions_test.csv",
        "checkpoints",
    } <= names
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("val", "test"):
        assert all(0.0 <= metrics[split][k] <= 1.0 for k in METRIC_KEYS)
        assert set(metrics[split]["ci"]) == set(METRIC_KEYS)
    assert metrics["best_iteration"] in (2, 4) and metrics["images_per_second"] > 0
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["model"] == "tiny_test" and saved["variant"] == "unregistered"
    assert saved["seed"] == 5 and saved["profile"] == "smoke"
    preds = pd.read_csv(run_dir / "predictions_test.csv")
    assert list(preds.columns) == ["patient", "slice", "kind", "x0", "y0", "x1", "y1", "score"]
    assert (preds["kind"] == "gt").any()
    stamp = (run_dir / "metrics.json").stat().st_mtime_ns
    runner.run_unit(config)  # finished: skipped
    assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp
    other = runner.unit_config(
        resolve("smoke", [*SETS, "train.lr=0.1"]), cohort, "unregistered", "tiny_test", 5, tmp_path
    )
    with pytest.raises(ValueError, match="other settings.*train"):
        runner.run_unit(other)


def test_matrix_runs_variant_and_unregistered_and_summarises(cohort, tmp_path):
    base = resolve("smoke", SETS)
    lines: list[str] = []
    executor = LocalExecutor(["tiny_detector"], gpus=[])
    ap, dirs = runner.run_matrix(
        base, "nonrigid", ["tiny_test"], [1], executor=executor, cohort=cohort, runs=tmp_path,
        report=lines.append,
    )
    assert sorted(d.parts[-3] for d in dirs) == ["nonrigid", "unregistered"]
    assert set(ap["variant"]) == {"nonrigid", "unregistered"}
    est, facts = summarise(dirs, tmp_path, "test", n_boot=20)
    assert facts.profiles == ("smoke",) and facts.seeds == (1,)
    assert set(facts.evaluated) == {"unregistered", "nonrigid"}
    tables = summary_tables(est, "nonrigid")
    assert set(tables) == {"tiny_test"}
    table = tables["tiny_test"]
    assert list(table.columns) == ["AP nonrigid", "AP unregistered", "sensitivity"]
    assert list(table.index) == [*METRIC_KEYS, "average (Fig. 5)"]
    shown = re.compile(r"^(n/a|-?\d+\.\d \[-?\d+\.\d, -?\d+\.\d\])$")
    assert all(shown.match(text) for text in table.iloc[:6].to_numpy().ravel())
    undefined = dict(table.attrs["undefined"])
    assert all(
        (table.loc[row, "sensitivity"] == "n/a") == (row in undefined) for row in table.index
    )
    lines.clear()
    runner.run_matrix(
        base, "nonrigid", ["tiny_test"], [1], executor=executor, cohort=cohort, runs=tmp_path,
        report=lines.append,
    )
    assert sum("finished before, skipped" in line for line in lines) == 2
    table2 = pd.read_csv(cohort / "variants" / "table2.csv")  # where analyze / report read it
    assert table2["variant"].tolist() == ["unregistered", "nonrigid"]


def test_a_newly_registered_variant_rewrites_table2(tmp_path, monkeypatch):
    import registration

    root = tmp_path / "tiny"
    make_cohort(root, patients=4)
    made: list[str] = []

    def fake_register(cohort_root, variant, **kwargs):  # the format only, no elastix
        made.append(variant)
        return make_cohort(root / "variants" / variant, patients=4)

    monkeypatch.setattr(registration, "register_variant", fake_register)
    table = root / "variants" / "table2.csv"
    runner.ensure_variant(root, "unregistered")
    assert not table.exists()  # nothing registered: no Table II to write
    runner.ensure_variant(root, "nonrigid")
    assert pd.read_csv(table)["variant"].tolist() == ["unregistered", "nonrigid"]
    runner.ensure_variant(root, "rigid")
    assert pd.read_csv(table)["variant"].tolist() == ["unregistered", "rigid", "nonrigid"]
    stamp = table.stat().st_mtime_ns
    runner.ensure_variant(root, "nonrigid")  # up to date: left alone, nothing registered
    assert made == ["nonrigid", "rigid"] and table.stat().st_mtime_ns == stamp
    table.write_text("variant,liver_dice\nunregistered,0.9\n")  # e.g. written by an older run
    runner.ensure_variant(root, "nonrigid")
    assert pd.read_csv(table)["variant"].tolist() == ["unregistered", "rigid", "nonrigid"]


def test_summary_tables_show_intervals_and_undefined():
    rows = [
        ("m", v, "test", k, value, value - 5, value + 5, float("nan"), 1)
        for v, value in (("unregistered", 60.0), ("nonrigid", 80.0), ("rigid", 0.0))
        for k in METRIC_KEYS
    ]
    ap = pd.DataFrame(rows, columns=list(AP_COLUMNS))
    sens = sensitivity_frame(ap, cells=[("test", k) for k in METRIC_KEYS])
    est = Estimates(ap, ap.drop(columns=["ci_low", "ci_high"]), sens, pd.DataFrame(), 0, 0, 10)
    table = summary_tables(est, "nonrigid")["m"]
    assert table.loc["IoU50", "AP nonrigid"] == "80.0 [75.0, 85.0]"
    assert table.loc["IoU50", "sensitivity"] == "25.0 [no CI]"  # 1 - 60 / 80, no resamples
    assert table.loc["average (Fig. 5)", "sensitivity"] == "n/a"
    rigid = summary_tables(est, "rigid")["m"]
    assert (rigid["sensitivity"] == "n/a").all()
    assert dict(rigid.attrs["undefined"])["IoU50"] == "registered AP is 0 (seed 0)"


def test_train_command_end_to_end(cohort, tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "--cohort",
            str(cohort),
            "--model",
            "tiny_test",
            "--profile",
            "smoke",
            "--runs",
            str(tmp_path),
            "--model-module",
            "tiny_detector",
            "--seed",
            "2",
            *[a for s in SETS for a in ("--set", s)],
        ]
    )
    out = capsys.readouterr().out
    # every AP printed carries its interval and the patients and boxes behind it
    assert code == 0 and "95% CI from" in out
    row = next(line for line in out.splitlines() if line.startswith("IoU50 "))
    assert row.count("[") == 2 and "test (" in out and "lesion boxes)" in out
    assert "tiny_test on tiny (unregistered), profile smoke, seed 2, input" in out
    assert (tmp_path / "tiny" / "unregistered" / "tiny_test" / "seed2" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--variant", "bspline"], "unknown variant 'bspline'; use one of unregistered"),
        (["run", "--variant", "rigid", "--models", "gssd,nope"], "unknown model.*nope.*gssd"),
        (["train", "--cohort", "{tmp}", "--model", "gssd"], "not a cohort folder"),
        (["train", "--cohort", "{cohort}", "--model", "nope"], "unknown model 'nope'"),
        (["run", "--variant", "rigid", "--profile", "nope"], "unknown profile 'nope'"),
        (["run", "--variant", "rigid", "--set", "train.lr"], "expected KEY=VALUE"),
    ],
)
def test_cli_errors_are_clear(argv, message, cohort, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, cohort=cohort) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert pd.Series([err]).str.contains(message, regex=True).all(), err


def test_help_of_both_commands(capsys):
    for command in ("train", "run"):
        with pytest.raises(SystemExit) as done:
            cli.main([command, "--help"])
        assert done.value.code == 0
        assert "--profile" in capsys.readouterr().out
