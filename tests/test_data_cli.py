"""``data synth``, ``data info``, ``data show`` through the CLI: output, resume, errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.cohort import MANIFEST, PARTIAL_MARKER, Cohort

TINY = ["--patients", "3", "--seed", "4", "--size", "48", "--slices", "4", "--no-progress"]


def _synth(out: Path, *extra: str) -> int:
    return main(["data", "synth", "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "ph"
    assert _synth(out) == 0
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_synth_writes_a_complete_cohort(cohort_dir, capsys):
    cohort = Cohort(cohort_dir)
    assert cohort.patient_ids == ["phantom0000", "phantom0001", "phantom0002"]
    assert sorted(cohort.manifest["params"]) == sorted(
        [
            "patients",
            "seed",
            "generator_version",
            "size",
            "slices",
            "motion_mm",
            "bulk_mm",
            "noise_hu",
            "z_subsamples",
        ]
    )
    assert not (cohort_dir / PARTIAL_MARKER).exists()
    assert {cohort.record(p)["split"] for p in cohort.patient_ids} == {"train", "val", "test"}


def test_info_text_and_json(cohort_dir, capsys):
    assert main(["data", "info", str(cohort_dir)]) == 0
    text = capsys.readouterr().out
    assert "patients  3: train 1, val 1, test 1" in text
    assert "arterial" in text and "liver Dice to portal" in text
    assert main(["data", "info", str(cohort_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["patients"] == 3 and summary["slices"]["mean"] == 4
    assert set(summary["liver_dice_to_portal"]) == {"precontrast", "arterial", "delayed"}
    for stats in summary["liver_dice_to_portal"].values():
        assert 0.5 < stats["mean"] <= 1.0
    assert sum(summary["lesion_phases"].values()) == 3


def test_show_writes_png(cohort_dir, tmp_path, capsys):
    out = tmp_path / "fig" / "slice.png"
    assert (
        main(["data", "show", str(cohort_dir), "--patient", "phantom0001", "--out", str(out)]) == 0
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert (
        main(
            [
                "data",
                "show",
                str(cohort_dir),
                "--patient",
                "phantom0001",
                "--slice",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert not [p for p in out.parent.iterdir() if p.name != "slice.png"], "no temporary files left"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--patient", "nobody"], "no patient 'nobody'"),
        (["--patient", "phantom0000", "--slice", "9"], "--slice 9 is outside"),
    ],
)
def test_show_errors(cohort_dir, tmp_path, capsys, args, message):
    assert main(["data", "show", str(cohort_dir), *args, "--out", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err


def test_resume_after_a_killed_run(cohort_dir, tmp_path):
    out = tmp_path / "ph"
    shutil.copytree(cohort_dir, out)
    before = _files(out)
    # what a kill leaves: no manifest, the partial marker, one patient missing, a temp folder
    header = {k: v for k, v in json.loads((out / MANIFEST).read_text()).items() if k != "patients"}
    (out / MANIFEST).unlink()
    (out / PARTIAL_MARKER).write_text(json.dumps(header))
    shutil.rmtree(out / "patients" / "phantom0002")
    (out / "patients" / ".phantom0002.abc.tmp").mkdir()
    kept = out / "patients" / "phantom0000" / "portal.nii.gz"
    os.utime(kept, (1, 1))
    assert main(["data", "info", str(out)]) == 2  # incomplete cohorts are refused by readers
    assert _synth(out) == 0
    assert kept.stat().st_mtime == 1, "finished patients are not regenerated"
    after = {k: v for k, v in _files(out).items() if ".tmp" not in k}
    assert after == before


def test_rerun_with_other_parameters_is_refused(cohort_dir, tmp_path, capsys):
    out = tmp_path / "ph"
    shutil.copytree(cohort_dir, out)
    assert main(["data", "synth", "--out", str(out), *TINY, "--motion-mm", "3"]) == 2
    assert "other parameters" in capsys.readouterr().err
    assert Cohort(out).manifest["params"]["motion_mm"] != 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--patients", "0"], "must be at least 1"),
        (["--patients", "many"], "is not an integer"),
        (["--patients", "2", "--size", "8"], "must be at least 32"),
        (["--patients", "2", "--motion-mm", "-1"], "must be >= 0"),
        (["--patients", "2", "--motion-mm", "nan"], "must be >= 0"),
        (["--patients", "2", "--bulk-mm", "-2"], "must be >= 0"),
        (["--patients", "2", "--workers", "0"], "must be at least 1"),
        (["--patients", "2", "--seed", "-3"], "must be at least 0"),
        (["--patients", "2", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_numbers_and_options(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as err:
        main(["data", "synth", "--out", str(tmp_path / "c"), *args])
    assert err.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["data", "synth", "--out", str(blocker / "c"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(blocker) in err
    assert main(["data", "synth", "--out", str(blocker), *TINY]) == 2
    assert "is not a folder" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["data", "synth", "--out", str(busy), *TINY]) == 2
    assert "not a cohort" in capsys.readouterr().err
    assert (busy / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["synth", "info", "show"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as err:
        main(["data", command, "--help"])
    assert err.value.code == 0
    assert len(capsys.readouterr().out) > 300
