"""Model registry: built-in rows, overrides, plugins (entry point and --model-module), CLI list."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

import models
from benchmark.cli import main
from models import registry

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "tests" / "plugin_example"
DOC = REPO / "docs" / "adding-a-detector.md"

PLUGIN = "example_fcos"
PLUGIN_MODULE = "phasebench_example.detector"

SSD_ROWS = {
    "ssd": ("I", "SSD [23]"),
    "gssd": ("I", "GSSD [15]"),
    "gssd_portal": ("I", "GSSD [15] (Portal Only)"),
    "gssd_pp": ("I", "GSSD++ (ours)"),
    "gssd_pp_no_phase_offsets": ("III", "GSSD++ w/o Phase-wise Offsets"),
    "gssd_pp_no_dc": ("III", "GSSD++ w/o DC Module"),
    "gssd_pp_no_sa_base": ("III", "GSSD++ w/o SA Modules@Base"),
    "gssd_pp_no_sa_fusion": ("III", "GSSD++ w/o SA Modules@Fusion"),
    "gssd_pp_no_interphase": ("III", "GSSD++ w/o Interphase Attention"),
}


def _forget_plugin() -> None:
    registry._REGISTRY.pop(PLUGIN, None)
    for mod in [m for m in sys.modules if m.startswith("phasebench_example")]:
        del sys.modules[mod]


@pytest.fixture
def plugin_path(monkeypatch):
    """The example package importable (as if installed), nothing of it loaded yet."""
    _forget_plugin()
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    yield
    _forget_plugin()


def test_builtin_rows_registered():
    names = models.available()
    for name, (table, row) in SSD_ROWS.items():
        assert name in names
        info = models.info(name)
        assert (info.table, info.paper_row) == (table, row)
        assert info.module == "models.ssd" and info.description


def test_build_passes_overrides():
    net = models.build("gssd", input_size=96, width=0.125)
    assert net.input_size == 96 and len(net.priors) == 902
    assert net.trunk.channels["conv4_3"] == 64
    with pytest.raises(ValueError, match="'gssd' takes no override 'no_such_option'"):
        models.build("gssd", no_such_option=1)


@pytest.mark.parametrize("name", ["gssd", "pixellink_gconv", "retinanet_gconv", "mscr"])
def test_every_family_refuses_an_architecture_override_alike(name):
    """The paper row fixes the architecture: ``groups=2`` is refused the same way by all."""
    with pytest.raises(ValueError, match=rf"model '{name}' takes no override 'groups' .*"
                       r"it takes: input_size, width"):
        models.build(name, groups=2)


def test_every_builder_names_its_overrides_input_size_and_width_first():
    for name in models.list_models():
        assert models.settings(name)[:2] == ["input_size", "width"], name


def test_list_models_by_table_and_pattern():
    table_one = {"ssd", "gssd", "gssd_portal", "gssd_pp", "retinanet_improved", "retinanet_gconv",
                 "retinanet_gconv_mask", "pixellink", "pixellink_gconv", "pixellink_pp", "mscr"}
    assert set(models.list_models(table="I")) == table_one
    ablations = models.list_models(table="III")
    assert len(ablations) == 10 and not set(ablations) & table_one
    assert models.list_models(table="III", pattern="gssd*") == [
        "gssd_pp_no_dc", "gssd_pp_no_interphase", "gssd_pp_no_phase_offsets",
        "gssd_pp_no_sa_base", "gssd_pp_no_sa_fusion",
    ]
    assert models.list_models(pattern="pixellink_pp") == ["pixellink_pp"]
    assert models.list_models(pattern="nothing*") == []


def test_unknown_model_names_the_choices():
    with pytest.raises(KeyError, match="unknown model 'nope'.*gssd_pp"):
        models.build("nope")


def test_name_clash_is_refused():
    with pytest.raises(ValueError, match="already registered by models.ssd"):
        models.register_model("gssd")(lambda **kw: None)


def test_plugin_found_through_entry_point(plugin_path, tmp_path, monkeypatch):
    dist = tmp_path / "phasebench_example_detector-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: phasebench-example-detector\nVersion: 0.1.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[phasebench.models]\n{PLUGIN} = {PLUGIN_MODULE}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    assert PLUGIN in models.available()
    assert models.info(PLUGIN).module == PLUGIN_MODULE
    assert models.info(PLUGIN).table == ""


def test_broken_entry_point_is_named(tmp_path, monkeypatch):
    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[phasebench.models]\nbad = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    for _ in range(2):  # not swallowed on the second look-up either
        with pytest.raises(ImportError, match="model plugin 'bad'"):
            models.available()


def test_plugin_through_model_module_and_models_list(plugin_path, capsys):
    assert PLUGIN not in models.available()
    assert main(["models", "list", "--model-module", PLUGIN_MODULE]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["name", "params", "input", "supervision", "table"]
    rows = {line.split()[0]: line for line in lines[2:] if line.strip()}
    assert set(SSD_ROWS) | {PLUGIN} <= set(rows)
    assert re.match(r"gssd_pp\s+\d+\.\d\dM\s+300\s+boxes\s+I\s+GSSD\+\+ \(ours\)", rows["gssd_pp"])
    assert re.fullmatch(rf"{PLUGIN}\s+0\.\d\dM\s+128\s+boxes\s+-\s+-", rows[PLUGIN])
    below = lines[lines.index(rows[PLUGIN]) + 1]
    assert below.startswith("    example")  # the description, wrapped under its row
    assert max(len(line) for line in lines) <= 100
    assert "width 1.0" in out and "input size" in out


def test_models_list_json_param_counts(capsys):
    import json

    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    real = sum(p.numel() for p in models.build("gssd_pp_no_dc").parameters())
    assert rows["gssd_pp_no_dc"]["params"] == real  # meta-device count equals the real one
    assert rows["gssd_pp"]["params"] > rows["gssd_pp_no_dc"]["params"] > rows["gssd"]["params"]


def test_bad_model_module_is_a_clear_error(capsys):
    assert main(["models", "list", "--model-module", "no_such_module_xyz"]) == 2
    assert "--model-module 'no_such_module_xyz' cannot be imported" in capsys.readouterr().err


def test_example_detector_trains_and_detects(plugin_path):
    from phasebench_example.detector import ExampleFCOS

    torch.manual_seed(0)
    net = models.build(PLUGIN, input_size=64, width=0.5)
    assert isinstance(net, ExampleFCOS)
    images = torch.rand(2, 12, 64, 64)
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 30.0, 34.0]]), "labels": torch.ones(1).long()},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0).long()},
    ]
    opt = torch.optim.SGD(net.param_groups(0.01), lr=0.01)
    losses = net(images, targets)
    assert set(losses) == {"loss_cls", "loss_box"} and all(
        torch.isfinite(v) for v in losses.values()
    )
    sum(losses.values()).backward()
    opt.step()
    out = net.eval()(images)
    assert len(out) == 2
    for det in out:
        assert det["boxes"].shape[1] == 4 and len(det["boxes"]) == len(det["scores"]) <= 100
        assert (det["scores"][:-1] >= det["scores"][1:]).all()


def test_guide_shows_the_tested_example():
    """docs/adding-a-detector.md carries the example verbatim, so the guide cannot rot."""
    text = DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    source = (PLUGIN_DIR / "phasebench_example" / "detector.py").read_text()
    assert source in blocks
    assert (PLUGIN_DIR / "pyproject.toml").read_text().split("[build-system]")[1] in text


def test_plugin_is_not_inside_the_models_package():
    assert Path(models.__file__).parent not in PLUGIN_DIR.parents
