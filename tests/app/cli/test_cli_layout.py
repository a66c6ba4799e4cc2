"""The command line's layout: one module per command, torch-free `--help`, choices that match the library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import app.cli
from app.cli import COMMANDS, build_parser
from inference.core import choices

ROOT = Path(__file__).resolve().parents[3]

# Runs `lunglens ARGV` in a fresh interpreter and prints which heavy modules it imported.
_PROBE = """
import json, sys
from app.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in ("torch", "numpy", "PySide6", "vtk") if m in sys.modules)))
"""


def _heavy_imports(*argv: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=True)
    assert "usage: lunglens" in done.stdout
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["train", "decovnet", "--help"], ["train", "lung-unet", "--help"],
                                  ["screen", "--help"], ["predict", "--help"], ["worklist", "--help"],
                                  ["report", "--help"], ["pacs", "get", "--help"]])
def test_help_imports_no_torch(argv):
    assert _heavy_imports(*argv) == []


def test_choices_module_imports_no_torch_or_numpy():
    probe = "import sys, inference.core.choices; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_every_command_module_registers_and_runs():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    names = list(sub.choices)
    assert names == ["info", "tags", "convert", "view", "models", "predict", "segment-lesions", "screen", "worklist",
                     "report", "pacs", "train", "mask", "export-training", "demo"]
    for module in COMMANDS:
        assert callable(module.register) and callable(module.run), module.__name__


def test_python_m_app_cli_works():
    done = subprocess.run([sys.executable, "-m", "app.cli", "--version"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("lunglens ")


def test_model_names_the_cli_offers_are_registered():
    from inference.models import get_model, list_models

    registered = {spec.name for spec in list_models()}
    assert get_model(choices.DEFAULT_SLICE_MODEL).input_kind == "slice"
    assert set(choices.TRAINABLE_MODELS) <= registered


def test_train_has_one_subcommand_per_trainable_model():
    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    models = next(a for a in train._actions if a.dest == "model")
    assert tuple(models.choices) == choices.TRAINABLE_MODELS
    args = build_parser().parse_args(["train", "decovnet", "--data", "d", "--out", "o"])
    assert (args.model, args.epochs, args.size, args.z_spacing) == ("decovnet", 100, [224, 336], 2.0)
    with pytest.raises(SystemExit) as info:
        app.cli.main(["train"])
    assert info.value.code == 2


def test_training_defaults_match_the_recipes():
    from inference.training.recipes.dcn import DCNTrainConfig
    from inference.training.recipes.decovnet import VolumeTrainConfig
    from inference.training.recipes.light_squeezenet import TrainConfig as SliceTrainConfig
    from inference.training.recipes.lung_unet import TrainConfig as LungTrainConfig
    from inference.training.recipes.mask_net import MaskNetTrainConfig

    for shown, config in ((choices.LIGHT_SQUEEZENET_TRAIN, SliceTrainConfig()),
                          (choices.DECOVNET_TRAIN, VolumeTrainConfig()), (choices.LUNG_UNET_TRAIN, LungTrainConfig()),
                          (choices.DCN_TRAIN, DCNTrainConfig()), (choices.MASK_NET_TRAIN, MaskNetTrainConfig())):
        assert {k: getattr(config, k) for k in shown} == shown, type(config).__name__


def test_backends_match_the_library():
    """(precisions, heat maps, lung methods and normalizations: tests/inference compare `app.cli`'s with theirs)"""
    from inference.inferers.onnx import BACKENDS

    assert choices.BACKENDS == tuple(BACKENDS)


def test_slab_projections_offered_are_the_viewers():
    from app.cli.options import SLAB_PROJECTIONS
    from viewer.state.slicing import PROJECTIONS

    assert SLAB_PROJECTIONS == PROJECTIONS
