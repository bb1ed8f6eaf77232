"""Executors: local vs Ray give the same run folders and variants; kills, locks, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
import slow_detector  # noqa: F401  (registers ``slow_tiny_test``)
import tiny_detector  # noqa: F401  (registers ``tiny_test``)
import torch
from conftest import REPO
from fake_units import fake_unit
from shift_backend import ShiftBackend
from tiny_cohort import make_cohort

from benchmark import cli, run_folder, runner
from benchmark.cohort import Cohort, variant_dir
from benchmark.config import resolve
from benchmark.executors import (
    UNIT_LOG,
    LocalExecutor,
    MatrixProgress,
    RunLock,
    RunLocked,
    make_executor,
    read_owner,
    units,
)
from registration import register_variant

MODULES = ["tiny_detector", "slow_detector"]
SETS = ["eval.bootstrap=10", "train.threads=1"]
TIMING = {"images_per_second", "seconds", "device"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("executors") / "tiny"
    make_cohort(root, patients=6)
    make_cohort(root / "variants" / "nonrigid", patients=6, seed=1)
    return root


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the module; workers import the tests' modules."""
    ray = pytest.importorskip("ray")
    path = os.pathsep.join([str(REPO), str(REPO / "tests")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield ray
    ray.shutdown()


def ray_executor(**options):
    from benchmark.executors.ray import RayExecutor

    return RayExecutor(model_modules=MODULES, poll=0.2, **options)


def metrics(run_dir):
    data = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in data.items() if k not in TIMING}


def test_smoke_matrix_through_ray_equals_local(cohort, ray_local, tmp_path, capsys):
    base = resolve("smoke", SETS)
    args = (base, "nonrigid", ["tiny_test", "ssd"], [3])
    lines: list[str] = []
    ap_local, dirs_local = runner.run_matrix(
        *args, cohort=cohort, runs=tmp_path / "local", report=lines.append,
        executor=LocalExecutor(MODULES, gpus=[]),
    )
    ap_ray, dirs_ray = runner.run_matrix(
        *args, cohort=cohort, runs=tmp_path / "ray", report=lines.append,
        executor=ray_executor(),
    )
    assert len(dirs_ray) == 4 and {d.parts[-3] for d in dirs_ray} == {"unregistered", "nonrigid"}
    pd.testing.assert_frame_equal(ap_local, ap_ray)
    for a, b in zip(dirs_local, dirs_ray, strict=True):
        assert a.relative_to(tmp_path / "local") == b.relative_to(tmp_path / "ray")
        assert metrics(a) == metrics(b)
        for split in ("val", "test"):
            name = f"predictions_{split}.csv"
            pd.testing.assert_frame_equal(pd.read_csv(a / name), pd.read_csv(b / name))
        assert (b / UNIT_LOG).exists() and read_owner(b) is None  # lock released
    assert any("4/4 done (0 skipped), 0 running, 0 failed" in line for line in lines)
    # the same matrix through the CLI on Ray: every unit is skipped, nothing is rewritten
    stamps = [(d / "metrics.json").stat().st_mtime_ns for d in dirs_ray]
    argv = ["run", "--variant", "nonrigid", "--cohort", str(cohort), "--models", "tiny_test,ssd",
            "--seeds", "3", "--profile", "smoke", "--runs", str(tmp_path / "ray"),
            "--executor", "ray", *[a for m in MODULES for a in ("--model-module", m)],
            *[a for s in SETS for a in ("--set", s)]]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("finished before, skipped") == 4 and "sensitivity (eq. 6" in out
    assert [(d / "metrics.json").stat().st_mtime_ns for d in dirs_ray] == stamps


def kill_when_checkpointed(run_dir, killed: list[int], timeout: float = 60.0) -> None:
    """Kill (SIGKILL) the worker that holds ``run_dir`` once it has written a checkpoint."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        owner = read_owner(run_dir)
        if owner and (run_dir / "checkpoints" / "last.pt").exists():
            os.kill(owner["pid"], signal.SIGKILL)
            killed.append(owner["pid"])
            return
        time.sleep(0.05)


def test_killed_ray_worker_is_reported_and_a_rerun_resumes(cohort, ray_local, tmp_path):
    slow = resolve("smoke", [*SETS, "train.iterations=8", "train.val_every=8",
                             "train.checkpoint_every=2"])
    fast = resolve("smoke", SETS)
    units = [runner.unit_config(slow, cohort, "unregistered", "slow_tiny_test", 1, tmp_path),
             runner.unit_config(fast, cohort, "unregistered", "tiny_test", 1, tmp_path)]
    slow_dir, fast_dir = run_folder.unit_dir(units[0]), run_folder.unit_dir(units[1])
    killed: list[int] = []
    killer = threading.Thread(target=kill_when_checkpointed, args=(slow_dir, killed))
    killer.start()
    lines: list[str] = []
    failed = ray_executor(max_retries=0).run_units(units, lines.append)
    killer.join()
    assert killed and failed == [units[0]]  # only the killed unit failed ...
    assert (fast_dir / "metrics.json").exists()  # ... and the other one finished
    report = next(line for line in lines if "FAILED" in line)
    assert str(slow_dir / UNIT_LOG) in report
    assert not (slow_dir / "metrics.json").exists()
    assert torch.load(slow_dir / "checkpoints" / "last.pt", weights_only=True)["iteration"] >= 2
    stamp = (fast_dir / "metrics.json").stat().st_mtime_ns
    config_stamp = (slow_dir / "config.json").stat().st_mtime_ns
    # the rerun resumes the killed unit from its checkpoint and skips the finished one
    assert ray_executor().run_units(units, lines.append) == []
    log = (slow_dir / UNIT_LOG).read_text()
    assert log.count("=== attempt on") == 2
    resumed = [int(w) for w in log.split("resuming at iteration")[1].split()[:1]]
    assert resumed and resumed[0] >= 2
    assert len(pd.read_csv(slow_dir / "train_log.csv")) > 0
    assert (fast_dir / "metrics.json").stat().st_mtime_ns == stamp
    assert (slow_dir / "config.json").stat().st_mtime_ns == config_stamp  # not started afresh
    assert set(metrics(slow_dir)) >= {"val", "test", "best_iteration"}
    assert metrics(slow_dir)["iterations"] == 8


def test_registration_through_ray_equals_local(ray_local, tmp_path):
    from registration_phantom import make_cohort as make_phantom
    from registration_phantom import make_patient

    roots = [tmp_path / "local", tmp_path / "ray"]
    for root in roots:
        make_phantom(root, [make_patient(f"p{i}", i, size=48, slices=3) for i in range(2)])
    register_variant(roots[0], "rigid", backend=ShiftBackend(), progress=False)
    register_variant(roots[1], "rigid", backend=ShiftBackend(), progress=False,
                     executor=ray_executor())
    local, ray = (Cohort(variant_dir(r, "rigid")) for r in roots)
    assert local.patient_ids == ray.patient_ids == ["p0", "p1"]
    for pid in local.patient_ids:
        a, b = local.load(pid, displacement=True), ray.load(pid, displacement=True)
        for phase in a.phases:
            np.testing.assert_array_equal(a.phases[phase], b.phases[phase])
            np.testing.assert_array_equal(a.liver[phase], b.liver[phase])
            np.testing.assert_array_equal(a.displacement[phase], b.displacement[phase])
        np.testing.assert_array_equal(a.lesion, b.lesion)
    logs = [pd.read_csv(variant_dir(r, "rigid") / "registration_log.csv").drop(columns="seconds")
            for r in roots]
    pd.testing.assert_frame_equal(*logs)
    assert "failed" not in set(logs[0]["status"]) and (logs[0]["status"] == "registered").any()


def test_failed_unit_is_reported_and_the_others_go_on(cohort, tmp_path):
    bad = resolve("smoke", [*SETS, 'detector.overrides={"fail_after": 0}'])
    good = resolve("smoke", SETS)
    units = [runner.unit_config(bad, cohort, "unregistered", "tiny_test", 1, tmp_path),
             runner.unit_config(good, cohort, "unregistered", "tiny_test", 2, tmp_path)]
    lines: list[str] = []
    failed = LocalExecutor(MODULES, gpus=[]).run_units(units, lines.append)
    assert failed == [units[0]]
    report = next(line for line in lines if "FAILED" in line)
    bad_log = run_folder.unit_dir(units[0]) / UNIT_LOG
    assert str(bad_log) in report and "TrainingError" in report
    assert "Traceback" in bad_log.read_text()
    assert (run_folder.unit_dir(units[1]) / "metrics.json").exists()
    assert "1 trained, 0 skipped, 1 failed" in lines[-1]


def test_matrix_with_failed_units_ends_with_an_error_naming_their_logs(cohort, tmp_path):
    bad = resolve("smoke", [*SETS, 'detector.overrides={"fail_after": 0}'])
    with pytest.raises(RuntimeError, match=r"2 of 2 units failed .*unit\.log"):
        runner.run_matrix(bad, "nonrigid", ["tiny_test"], [1], cohort=cohort, runs=tmp_path,
                          report=lambda line: None, executor=LocalExecutor(MODULES, gpus=[]))


def test_local_executor_runs_one_process_per_gpu(tmp_path):
    units = [{"runs": str(tmp_path), "cohort_name": "c", "variant": "unregistered",
              "model": "m", "seed": s, "fail": s == 2} for s in range(5)]
    lines: list[str] = []
    failed = LocalExecutor(gpus=[0, 1], unit=fake_unit).run_units(units, lines.append)
    assert failed == [units[2]]
    assert "FAILED (ValueError: this unit was told to fail); log: " in "".join(lines)
    done = [json.loads((run_folder.unit_dir(c) / "metrics.json").read_text())
            for c in units if c not in failed]
    assert {d["gpu"] for d in done} == {"0", "1"}  # both GPUs used, one process each
    assert len({d["pid"] for d in done}) == 2 and os.getpid() not in {d["pid"] for d in done}
    assert "4 trained, 0 skipped, 1 failed" in lines[-1]


def test_local_executor_without_gpu_runs_cpu_units_processes(tmp_path):
    units = [{"runs": str(tmp_path), "cohort_name": "c", "variant": "unregistered",
              "model": "m", "seed": s, "train": {"device": "auto", "cpu_units": 3 - s % 2}}
             for s in range(4)]  # the smallest cpu_units among the units wins: 2
    lines: list[str] = []
    assert LocalExecutor(gpus=[], unit=fake_unit).run_units(units, lines.append) == []
    done = [json.loads((run_folder.unit_dir(c) / "metrics.json").read_text()) for c in units]
    assert len({d["pid"] for d in done}) == 2 and os.getpid() not in {d["pid"] for d in done}
    assert {d["gpu"] for d in done} == {os.environ.get("CUDA_VISIBLE_DEVICES")}  # not pinned
    assert "4 trained, 0 skipped, 0 failed" in lines[-1]
    for unit in units:
        unit["train"]["cpu_units"] = 1
        unit["seed"] += 10
    LocalExecutor(gpus=[], unit=fake_unit).run_units(units, lines.append)
    done = [json.loads((run_folder.unit_dir(c) / "metrics.json").read_text()) for c in units]
    assert {d["pid"] for d in done} == {os.getpid()}  # one after another in this process


def test_lock_refuses_a_second_live_writer_and_frees_on_death(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from benchmark.executors.locks import RunLock; "
         f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert read_owner(tmp_path)["pid"] == holder.pid
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            RunLock(tmp_path, wait=0.2, poll=0.05).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the dead holder's lock is gone; its owner text is overwritten
        assert read_owner(tmp_path)["pid"] == os.getpid()
    assert read_owner(tmp_path) is None


def test_progress_counts_and_eta():
    now = [0.0]
    lines: list[str] = []
    progress = MatrixProgress(4, lines.append, clock=lambda: now[0])
    progress.on_skipped("a")
    progress.on_started("b")
    assert "ETA ?" in lines[-1] and "1 running" in lines[-1]
    now[0] = 60.0
    progress.on_done("b", 60.0)
    assert "2/4 done (1 skipped), 0 running, 0 failed, ETA 2 min" in lines[-1]
    progress.on_failed("c", REPO / "x.log", "ValueError: bad")
    assert "FAILED (ValueError: bad); log: " in lines[-1] and "ETA 60 s" in lines[-1]


def test_without_ray_the_executor_says_how_to_install(monkeypatch, cohort, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'phasebench\[ray\]'"):
        make_executor("ray")
    code = cli.main(["run", "--variant", "nonrigid", "--cohort", str(cohort), "--models",
                     "tiny_test", "--model-module", "tiny_detector", "--profile", "smoke",
                     "--runs", str(tmp_path), "--executor", "ray"])
    assert code == 2 and "phasebench[ray]" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing ran
    with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
        make_executor("local", "auto")


def test_retried_registration_task_of_a_written_patient_returns_at_once(tmp_path):
    class Written:  # a CohortWriter whose patient p0 is already complete
        root = tmp_path / "variant"

        @staticmethod
        def done() -> set[str]:
            return {"p0"}

    missing_source = str(tmp_path / "no-such-cohort")  # any real work would fail on it
    assert units.register_patient_unit(missing_source, Written(), "p0", "rigid", None, 1) == "p0"
