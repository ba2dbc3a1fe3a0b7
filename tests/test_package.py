import subprocess
import sys

import pytest
import timm
import torch

import fgsbir_cli as cli
import fgsbir_plugin


def test_import_registers_the_models_and_the_done_command_holds():
    assert {"dssa", "dssa_efficientnet_lite0", "dssa_resnet50", "dssa_vit_small_patch16_224"} <= set(
        timm.list_models("dssa*")
    )
    assert "sketch_a_net" in timm.list_models("sketch_a_net")
    with torch.no_grad():
        assert timm.create_model("dssa").eval()(torch.zeros(2, 1, 225, 225)).shape == (2, 512)


@pytest.mark.parametrize("name", sorted(fgsbir_plugin._LAZY))
def test_lazy_exports_resolve(name):
    assert getattr(fgsbir_plugin, name) is not None
    assert name in fgsbir_plugin.__all__


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fgsbir_plugin.nope  # noqa: B018


def test_every_area_registers_its_commands():
    parser = cli.build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)
    assert commands == {"train", "eval", "embed", "demo", "index", "search", "push", "push-dataset", "app"}


def test_python_dash_m_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "fgsbir_plugin", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "demo" in out and "push-dataset" in out
