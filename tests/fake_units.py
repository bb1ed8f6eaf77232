"""A torch-free stand-in for ``train_unit``, so the GPU-process pool of the local executor can be
tested on CPU in well under a second: it records its process and ``CUDA_VISIBLE_DEVICES``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from benchmark.executors.units import UNIT_LOG, UnitOutcome, unit_log


def fake_unit(config: dict[str, Any], model_modules: Any = ()) -> UnitOutcome:
    """Sleep, then write ``metrics.json`` (with pid and GPU); ``config["fail"]`` raises."""
    run_dir = (
        Path(config["runs"]) / config["cohort_name"] / config["variant"] / config["model"]
        / f"seed{config['seed']}"
    )
    with unit_log(run_dir / UNIT_LOG):
        time.sleep(0.3)
        if config.get("fail"):
            raise ValueError("this unit was told to fail")
        info = {"pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}
        (run_dir / "metrics.json").write_text(json.dumps(info))
    return UnitOutcome(run_dir, False, 0.3)
