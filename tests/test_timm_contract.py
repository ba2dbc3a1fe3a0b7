"""timm citizenship of every registered variant, after timm's own tests/test_models.py, at small sizes.

The attributes mean what they mean in timm: ``num_features`` is the channel count of ``forward_features``,
``head_hidden_size`` the width of the pooled embedding that ``forward`` returns without a classifier.
"""

from __future__ import annotations

import inspect
import json
import math

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import fgsbir_plugin  # noqa: F401  (registers the models)
from fgsbir_plugin.embedding import embedding_dim
from fgsbir_plugin.model_io import load_model, save_model

ALL = ["sketch_a_net", "dssa", "dssa_efficientnet_lite0", "dssa_resnet50", "dssa_vit_small_patch16_224"]
DSSA = ALL[1:]
# tiny inputs for the expensive checks; the paper's trunk needs >= 97 px for a 1x1 final map
TINY = {
    "sketch_a_net": (1, 129, 129),
    "dssa": (1, 129, 161),
    "dssa_efficientnet_lite0": (3, 64, 96),
    "dssa_resnet50": (3, 64, 96),
    "dssa_vit_small_patch16_224": (3, 64, 96),
}


def _create(name, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs).eval()


def test_registered():
    assert timm.list_models("dssa*") == sorted(DSSA)
    assert timm.list_models("sketch_a_net") == ["sketch_a_net"]
    for name in ALL:
        assert timm.list_models(name, pretrained=True) == []  # untrained: no weights advertised
        assert timm.is_model(name)


@pytest.mark.parametrize("name", ALL)
def test_default_cfgs(name):
    """timm's test_model_default_cfgs, at the default input size (what the cfg's pool_size refers to)."""
    model = _create(name)
    cfg = model.pretrained_cfg
    for key in ("input_size", "mean", "std", "interpolation", "crop_pct", "pool_size", "first_conv"):
        assert cfg.get(key) is not None, key
    assert cfg["tag"] == "untrained"
    data_cfg = timm.data.resolve_model_data_config(model)
    assert data_cfg["input_size"] == cfg["input_size"] and len(data_cfg["mean"]) == cfg["input_size"][0]
    state_dict = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state_dict
    if cfg["num_classes"]:
        assert cfg["classifier"] + ".weight" in state_dict

    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert tuple(feats.shape[-2:]) == cfg["pool_size"]
        assert feats.shape[1] == model.num_features
        assert pre.shape == (1, model.head_hidden_size) == (1, embedding_dim(model))

        model.reset_classifier(0)
        assert model.num_classes == 0
        out = model(x)
        assert out.shape == pre.shape

        model.reset_classifier(0, "")
        out = model(x)
        assert out.ndim == 4 and tuple(out.shape[-2:]) == cfg["pool_size"]

    model = _create(name, num_classes=0, global_pool="")
    with torch.no_grad():
        out = model(x)
    assert out.ndim == 4 and tuple(out.shape[-2:]) == cfg["pool_size"]


@pytest.mark.parametrize("name", ALL)
def test_classifier_reset_and_get(name):
    model = _create(name, num_classes=5)
    assert model.get_classifier().weight.shape == (5, model.head_hidden_size)
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(torch.randn(2, *TINY[name])).shape == (2, 7)
    assert model.get_classifier().out_features == 7


@pytest.mark.parametrize("name", ALL)
def test_features_only(name):
    """timm's test_model_forward_features: channels and reductions of feature_info match the outputs."""
    model = _create(name, features_only=True)
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3
    input_size = TINY[name]
    with torch.no_grad():
        outputs = model(torch.randn(1, *input_size))
    assert len(outputs) == len(channels)
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[1] == c
        assert (
            o.shape[2] <= math.ceil(input_size[1] / r) + 1 and o.shape[3] <= math.ceil(input_size[2] / r) + 1
        )
        assert torch.isfinite(o).all()


@pytest.mark.parametrize("name", ALL)
def test_forward_intermediates(name):
    """timm's test_model_forward_intermediates, including the grad-checkpointing pass."""
    model = _create(name)
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    x = torch.randn(1, *TINY[name])
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        assert [t.shape[1] for t in intermediates] == info.channels()
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        model.set_grad_checkpointing()
        final2, _ = model.forward_intermediates(x)
    torch.testing.assert_close(final2, final, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_grad_checkpointing_same_gradients(name):
    x = torch.randn(2, *TINY[name])
    grads = []
    for enable in (False, True):
        model = _create(name, num_classes=3)
        model.set_grad_checkpointing(enable)
        model(x).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "name", [n if n in ("dssa", "sketch_a_net") else pytest.param(n, marks=pytest.mark.slow) for n in ALL]
)
def test_torchscript_trace_and_compile(name):
    """torch.jit.script and .trace give the eager output; torch.compile captures one graph (no breaks)."""
    model = _create(name)
    x = torch.randn(1, *TINY[name])
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.jit.trace(model, (x,))(x), ref, rtol=1e-5, atol=1e-6)
    if name in ("dssa", "sketch_a_net"):
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), ref, rtol=1e-5, atol=1e-6)


def test_torchscript_keeps_modality_argument():
    model = _create("dssa", shared=False)
    scripted = torch.jit.script(model)
    x = torch.randn(1, 1, 129, 129)
    with torch.no_grad():
        for modality in ("sketch", "photo"):
            torch.testing.assert_close(
                scripted(x, modality), model(x, modality=modality), rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize("name", ["dssa", "dssa_vit_small_patch16_224"])
def test_fx_symbolic_trace(name):
    """The modality check and the ViT's token grid are torch.fx leaves: a plain trace keeps ``modality`` an input."""
    model = _create(name)
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(1, *TINY[name])
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(graph(x), ref, rtol=0, atol=0)
        torch.testing.assert_close(graph(x, "photo"), ref, rtol=0, atol=0)
        torch.testing.assert_close(torch.jit.script(graph)(x), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="modality must be 'sketch', 'photo' or None"):
        graph(x, "drawing")


def test_fx_symbolic_trace_separate_trunks_per_modality():
    model = _create("dssa", shared=False)
    x = torch.randn(1, 1, 129, 129)
    for modality in ("sketch", "photo"):
        graph = torch.fx.symbolic_trace(model, concrete_args={"modality": modality})
        with torch.no_grad():
            torch.testing.assert_close(graph(x, modality), model(x, modality=modality), rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_factory_device_and_dtype(name):
    """timm's factory arguments: every tensor is created on ``device`` in ``dtype``, new classifiers too."""
    model = timm.create_model(name, device="meta", dtype=torch.float64, num_classes=3)
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    model.reset_classifier(4)
    assert {(p.device.type, p.dtype) for p in model.get_classifier().parameters()} == {
        ("meta", torch.float64)
    }
    if name != "sketch_a_net":
        holef = timm.create_model(name, device="meta", dtype=torch.float64, holef=True)
        assert holef.distance.weight.device.type == "meta" and holef.distance.weight.dtype == torch.float64


@pytest.mark.parametrize("name", ["sketch_a_net", "dssa"])
def test_min_input_size_keeps_every_level_within_its_reduction(name):
    """timm's rule for feature levels, o in (size / (2 r), ceil(size / r) + 1], from ``min_input_size`` up."""
    model = _create(name, features_only=True)
    assert model.pretrained_cfg["min_input_size"] == (1, 129, 129)
    assert model.feature_info.reduction() == [6, 12, 24]  # nominal strides: conv1 /3, three /2 max-pools
    for size in (129, 161, 225):
        with torch.no_grad():
            outputs = model(torch.randn(1, 1, size, size))
        for r, o in zip(model.feature_info.reduction(), outputs):
            assert size / (2 * r) < o.shape[-1] <= math.ceil(size / r) + 1, (size, r, o.shape)


def test_timm_private_attributes_we_rely_on():
    """Fails when a timm upgrade removes or changes a private timm name that this package uses."""
    from timm.models import _features, _hub

    # sketch_a_net.py: forward_intermediates / prune_intermediate_layers select levels with it
    assert _features.feature_take_indices(3, [0, 2]) == ([0, 2], 2)
    # model_io.save_model writes config.json with it, passing the model_args it records
    assert "model_args" in inspect.signature(_hub.save_config_for_hf).parameters
    # DSSA intercepts the create_model() kwargs that timm records in `_model_args` (config.json's model_args)
    # to drop pretrained_backbone, which a saved model must not need to reload
    model = timm.create_model("dssa", fusion=False, pretrained_backbone=False)
    assert model._model_args == {"fusion": False}
    assert timm.models.get_model_args(model)["fusion"] is False
    assert "pretrained_backbone" not in timm.models.get_model_args(model)


# config.json as written before ``num_features`` meant the trunk's channel count: it recorded the embedding
# size there (timm writes ``num_features`` for information only) and had no ``min_input_size``.
_OLD_CONFIG = {
    "architecture": "dssa",
    "num_classes": 0,
    "num_features": 512,
    "global_pool": "fusion",
    "model_args": {
        "holef": True,
        "attention_chs": 8,
        "coarse_grid": [2, 2],
        "hidden_dim": 16,
        "in_chans": 1,
        "num_classes": 0,
        "global_pool": "fusion",
    },
    "pretrained_cfg": {
        "tag": "untrained",
        "custom_load": False,
        "input_size": [1, 225, 225],
        "fixed_input_size": False,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": [0.5],
        "std": [0.5],
        "num_classes": 0,
        "pool_size": [7, 7],
        "first_conv": "trunk.stages.0.conv1",
        "classifier": "classifier",
        "license": "mit",
        "paper_name": "Deep Spatial-Semantic Attention for Fine-Grained Sketch-Based Image Retrieval",
        "paper_ids": "ICCV 2017",
    },
}


def test_model_folder_with_the_old_attribute_layout_loads(tmp_path):
    args = _OLD_CONFIG["model_args"]
    model = _create("dssa", holef=True, attention_chs=8, coarse_grid=(2, 2), hidden_dim=16)
    save_model(model, tmp_path / "m", model_args=args)
    (tmp_path / "m" / "config.json").write_text(json.dumps(_OLD_CONFIG))
    (tmp_path / "m" / "checksums.json").unlink()  # folders of that layout were written without one
    loaded = load_model(tmp_path / "m")
    assert loaded.num_features == 256 and loaded.head_hidden_size == embedding_dim(loaded) == 512
    assert loaded.distance.weight.shape == (512, 512)
    x = torch.randn(2, 1, 129, 129)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# -- weights round trips -------------------------------------------------------------------------------------


def _embed(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize(
    "name,model_args",
    [("dssa", {}), ("dssa", {"shared": False, "renormalize": True}), ("dssa_efficientnet_lite0", {})],
)
def test_local_dir_round_trip_bit_identical(tmp_path, name, model_args):
    model = _create(name, **model_args)
    # move the batch-norm statistics off their defaults so that buffers are checked too
    model.train()
    with torch.no_grad():
        model(
            torch.randn(4, *TINY[name]),
            **({"modality": "sketch"} if model_args.get("shared") is False else {}),
        )
    x = torch.randn(2, *TINY[name])
    kw = {"modality": "sketch"} if model_args.get("shared") is False else {}
    with torch.no_grad():
        ref = model.eval()(x, **kw)
    save_model(model, tmp_path / "model", model_args=model_args)
    loaded = load_model(tmp_path / "model")
    assert loaded.pretrained_cfg["architecture"] == name
    with torch.no_grad():
        assert torch.equal(loaded(x, **kw), ref)
    again = timm.create_model(f"local-dir:{tmp_path / 'model'}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(again(x, **kw), ref)


def test_local_dir_records_the_backbone_keyword(tmp_path):
    """create_model kwargs travel in config.json without passing model_args to save_model."""
    model = _create("dssa", backbone="resnet18", fusion=False, coarse_grid=(3, 5))
    x = torch.randn(2, 3, 64, 96)
    ref = _embed(model, x)
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.backbone == "resnet18" and loaded.num_features == 512 and loaded.head_hidden_size == 256
    assert loaded.pretrained_cfg["input_size"] == (3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), ref)


def test_safetensors_file_checkpoint_path_and_overlay(tmp_path):
    model = _create("dssa")
    x = torch.randn(2, 1, 129, 129)
    ref = _embed(model, x)
    path = tmp_path / "dssa.safetensors"
    save_file(model.state_dict(), str(path))

    fresh = _create("dssa")
    fresh.load_state_dict(load_file(str(path)))
    assert torch.equal(_embed(fresh, x), ref)

    from_checkpoint = timm.create_model("dssa", checkpoint_path=str(path))
    assert torch.equal(_embed(from_checkpoint, x), ref)

    from_overlay = timm.create_model("dssa", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.equal(_embed(from_overlay, x), ref)
    torch.manual_seed(1)
    assert not torch.equal(_embed(timm.create_model("dssa"), x), ref)  # i.e. the loads above did something


def test_pretrained_overlay_adapts_classifier(tmp_path):
    """A 250-class Sketch-a-Net checkpoint loads into a 10-class model (timm drops the mismatched classifier)."""
    source = _create("sketch_a_net")
    path = tmp_path / "san.safetensors"
    save_file(source.state_dict(), str(path))
    model = timm.create_model(
        "sketch_a_net", pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path))
    )
    assert model.get_classifier().out_features == 10
    assert torch.equal(model.stages[0].conv1.weight, source.stages[0].conv1.weight)


@pytest.mark.parametrize("name", ALL)
def test_pretrained_without_weights_is_an_error(name):
    """`.untrained` tags advertise no weights: pretrained=True must fail, never fall back to random init."""
    with pytest.raises(RuntimeError, match="No pretrained weights exist"):
        timm.create_model(name, pretrained=True)


def test_a_model_folder_keeps_its_data_config_with_another_backbone(tmp_path):
    model = _create("dssa", backbone="test_resnet", attention_chs=8, hidden_dim=16)
    cfg = dict(model.pretrained_cfg)
    cfg.update(input_size=(3, 96, 96), mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    model.pretrained_cfg = cfg
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    for key in ("input_size", "mean", "std"):
        assert tuple(loaded.pretrained_cfg[key]) == tuple(cfg[key]), key
    assert tuple(timm.create_model("dssa", backbone="test_resnet").pretrained_cfg["input_size"]) != (
        3,
        96,
        96,
    )
