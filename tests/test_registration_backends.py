"""The two elastix bindings agree: SimpleITK-SimpleElastix against itk-elastix.

The bindings each bring their own ITK and must never share a process, so the SimpleElastix side
always runs in a subprocess (the same interpreter) and itk-elastix in this one. SimpleElastix
is installed in its own environment (plain SimpleITK shares its module name): CI makes one and
runs this file there with PHASEBENCH_REQUIRE_SIMPLEELASTIX=1, which turns the skip into a
failure. This file imports neither torch nor the detector stack (CI runs it with
``--noconftest``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from registration_phantom import make_cohort, make_patient, shifted_patient

from benchmark.cohort import CohortWriter
from registration import alignment_table, register_variant
from registration.backends import get_backend, set_threads, simpleelastix_available
from registration.presets import parameter_maps
from registration.variants import ALL_VARIANTS, parse_variant

REPO = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("PHASEBENCH_REQUIRE_SIMPLEELASTIX") == "1"
TABLE_VARIANTS = ("rigid", "affine", "nonrigid", "nonrigid-fast")
# Table II of the two backends on the same cohort (docs/registration.md, "Backends")
TOLERANCE = {"liver_dice": 0.003, "ncc": 0.01, "residual_mm": 0.1, "residual_inplane_mm": 0.1}


@pytest.fixture(scope="module")
def simpleelastix():
    """Runs a script with SimpleElastix in a subprocess; skips (fails when required) without it."""
    if not simpleelastix_available():
        if REQUIRED:
            pytest.fail("PHASEBENCH_REQUIRE_SIMPLEELASTIX=1 but SimpleITK-SimpleElastix (with "
                        "ElastixImageFilter) is not installed in this environment")
        pytest.skip("SimpleITK-SimpleElastix not installed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}

    def run(script: str, *args: str, cwd: Path) -> None:
        subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, check=True,
                       cwd=cwd, timeout=900)

    return run


@pytest.fixture(scope="module")
def itk_backend():
    set_threads(1)
    return get_backend("itk-elastix")


MAPS_SIDE = """
import json, sys
from registration.backends import get_backend
from registration.presets import parameter_maps
from registration.variants import parse_variant
backend = get_backend("simpleelastix")
maps = {name: backend.elastix_maps(parameter_maps(parse_variant(name)), -1000.0)
        for name in sys.argv[2:]}
open(sys.argv[1], "w").write(json.dumps(maps))
"""


def test_backends_run_the_same_maps(simpleelastix, itk_backend, tmp_path):
    simpleelastix(MAPS_SIDE, tmp_path / "maps.json", *ALL_VARIANTS, cwd=tmp_path)
    theirs = json.loads((tmp_path / "maps.json").read_text())
    for name in ALL_VARIANTS:
        mine = itk_backend.elastix_maps(parameter_maps(parse_variant(name)), -1000.0)
        assert mine == theirs[name], name


FIELDS_SIDE = """
import sys
import numpy as np
from registration.backends import get_backend, set_threads
from registration_phantom import make_patient, shifted_patient
set_threads(1, "simpleelastix")
backend = get_backend("simpleelastix")
patient = make_patient("e", 5, size=96, slices=1, lesion_slices=())
fixed, moving = patient.phases["portal"][0], patient.phases["arterial"][0]
out = {m: backend.displacement(backend.register(fixed, moving, (4.0, 4.0), m))
       for m in ("rigid", "affine")}
volume = shifted_patient()
out["rigid-3d"] = backend.displacement(backend.register(
    volume.phases["portal"], volume.phases["arterial"], volume.spacing, "rigid"))
np.savez(sys.argv[1], **out)
"""


def test_backends_agree_on_transforms(simpleelastix, itk_backend, tmp_path):
    out = tmp_path / "simpleelastix.npz"
    simpleelastix(FIELDS_SIDE, out, cwd=tmp_path)
    assert list(tmp_path.iterdir()) == [out]  # nothing written into the working directory
    other = np.load(out)
    patient = make_patient("e", 5, size=96, slices=1, lesion_slices=())
    fixed, moving = patient.phases["portal"][0], patient.phases["arterial"][0]
    for method in ("rigid", "affine"):
        mine = itk_backend.displacement(itk_backend.register(fixed, moving, (4.0, 4.0), method))
        assert np.abs(mine - other[method])[fixed > -500].max() < 1.0  # mm, a quarter pixel
    volume = shifted_patient()
    fixed = volume.phases["portal"]
    mine = itk_backend.displacement(
        itk_backend.register(fixed, volume.phases["arterial"], volume.spacing, "rigid"))
    assert mine.shape == (*fixed.shape, 3)
    assert np.abs(mine - other["rigid-3d"])[fixed > -500].max() < 1.0  # mm, < 1/5 voxel


REGISTER_SIDE = """
import sys
from registration.stage import register_variant
for variant in sys.argv[2:]:
    register_variant(sys.argv[1], variant, backend="simpleelastix", progress=False)
"""


def test_table2_agrees_between_backends(simpleelastix, tmp_path):
    patient = make_patient("a", 1, size=192, slices=2, lesion_slices=(0,),
                           lesion_phase="arterial")
    make_cohort(tmp_path / "itk", [patient])
    shutil.copytree(tmp_path / "itk", tmp_path / "se")
    simpleelastix(REGISTER_SIDE, tmp_path / "se", *TABLE_VARIANTS, cwd=tmp_path)
    for variant in TABLE_VARIANTS:
        register_variant(tmp_path / "itk", variant, progress=False)
    mine = alignment_table(tmp_path / "itk").set_index("variant")
    theirs = alignment_table(tmp_path / "se").set_index("variant")
    assert list(mine.index) == list(theirs.index) == ["unregistered", *TABLE_VARIANTS]
    for column, tolerance in TOLERANCE.items():
        gap = (mine[column] - theirs[column]).abs()
        assert (gap <= tolerance).all(), f"{column}: {gap.to_dict()}"
    pd.testing.assert_series_equal(mine["slices"], theirs["slices"])


def test_3d_registration_agrees_between_backends(simpleelastix, tmp_path):
    writer = CohortWriter(tmp_path / "itk", name="shift3d", kind="synthetic", params={})
    writer.write_patient(shifted_patient())
    writer.finish()
    shutil.copytree(tmp_path / "itk", tmp_path / "se")
    simpleelastix(REGISTER_SIDE, tmp_path / "se", "rigid-3d", cwd=tmp_path)
    register_variant(tmp_path / "itk", "rigid-3d", progress=False)
    mine = alignment_table(tmp_path / "itk").set_index("variant").loc["rigid-3d"]
    theirs = alignment_table(tmp_path / "se").set_index("variant").loc["rigid-3d"]
    for column, tolerance in TOLERANCE.items():
        assert abs(mine[column] - theirs[column]) <= tolerance, column
