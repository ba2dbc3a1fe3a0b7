"""Training on cached outputs of a frozen trunk prefix (``--freeze``): same function, saved as a whole model."""

import pytest
import timm
import torch
from _train_fixtures import tiny_config
from safetensors.torch import load_file

import fgsbir_plugin  # noqa: F401
from fgsbir_plugin.model_io import load_model
from fgsbir_plugin.train import frozen as frozen_mod
from fgsbir_plugin.train.config import TrainConfig
from fgsbir_plugin.train.engine import train
from fgsbir_plugin.train.frozen import FrozenTrunk

SMALL = dict(attention_chs=8, coarse_chs=8, hidden_dim=16, coarse_dim=8, fine_dim=8)


def _cfg(out, **kw):
    """tiny_config with a small DSSA-Lite0 whose trunk up to blocks.5 is frozen and its views cached."""
    base = dict(
        model="dssa_efficientnet_lite0",
        model_kwargs=dict(SMALL, renormalize=True),
        image_size=64,
        save_every=0,
        freeze="trunk.blocks.5",
        cache_views=3,
        seed=0,
    )
    return tiny_config(out, **{**base, **kw})


@pytest.mark.parametrize("freeze", ["trunk", "trunk.blocks.5", "trunk.blocks.0"])
def test_prefix_then_rest_is_the_model(freeze):
    torch.manual_seed(0)
    model = timm.create_model("dssa_efficientnet_lite0", **SMALL).eval()
    x = torch.randn(3, 3, 64, 64)
    frozen = FrozenTrunk(model, freeze)
    frozen.set_mode(False)
    with torch.no_grad():
        torch.testing.assert_close(frozen.rest(frozen.prefix(x)), model(x), rtol=1e-5, atol=1e-6)


def test_freeze_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="EfficientNet-style trunk"):
        FrozenTrunk(timm.create_model("dssa"), "trunk.blocks.2")
    with pytest.raises(ValueError, match="shared=True"):
        FrozenTrunk(timm.create_model("dssa_efficientnet_lite0", shared=False, **SMALL), "trunk")
    with pytest.raises(ValueError, match="K must be 0..7"):
        FrozenTrunk(timm.create_model("dssa_efficientnet_lite0", **SMALL), "trunk.blocks.9")
    with pytest.raises(ValueError, match="freeze = 'head' is invalid"):
        TrainConfig(data="x", out="y", freeze="head").validate()


def test_frozen_training_keeps_the_prefix_and_saves_a_whole_model(tmp_path, tiny):
    torch.manual_seed(0)
    start = timm.create_model("dssa_efficientnet_lite0", **SMALL, renormalize=True).state_dict()
    summary = train(_cfg(tmp_path / "run"), datasets=tiny)
    assert summary["done"] and summary["best"] is not None
    saved = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert set(saved) == set(start)
    for name, value in start.items():
        prefix = name.startswith(("trunk.conv_stem", "trunk.bn1", *(f"trunk.blocks.{k}." for k in range(5))))
        bn_stat = "running_" in name or "num_batches" in name
        if prefix or (name.startswith("trunk.") and bn_stat):
            assert torch.equal(saved[name], value), f"{name} changed"
    assert not torch.equal(saved["trunk.conv_head.weight"], start["trunk.conv_head.weight"])  # trained
    assert not torch.equal(saved["head.fc6.weight"], start["head.fc6.weight"])
    model = load_model(tmp_path / "run" / "model")
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 16)


def test_cached_views_are_computed_once_per_image(tmp_path, tiny, monkeypatch):
    frozen_mod.clear_feature_memo()
    calls = []
    real = FrozenTrunk.prefix
    monkeypatch.setattr(FrozenTrunk, "prefix", lambda self, x: calls.append(len(x)) or real(self, x))
    train(_cfg(tmp_path / "a", epochs=1), datasets=tiny)
    first = sum(calls)
    sk, ph = tiny
    n_train = len(sk["train"]) + len(ph["train"])
    assert first == 3 * n_train + len(sk["validation"]) + len(ph["validation"])
    # Another cell with the same prefix weights (the same seed builds the same random trunk here).
    train(_cfg(tmp_path / "b", epochs=1, lr=5e-4, loss="holef"), datasets=tiny)
    assert sum(calls) == first


def test_frozen_resume_is_bit_identical(tmp_path, tiny):
    train(_cfg(tmp_path / "a"), datasets=tiny)
    train(_cfg(tmp_path / "b", stop_after_steps=4), datasets=tiny)
    train(_cfg(tmp_path / "b", resume=True), datasets=tiny)
    a = load_file(str(tmp_path / "a" / "state" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "state" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_eval_every_validates_on_step_counts(tmp_path, tiny):
    import json

    summary = train(_cfg(tmp_path / "e", epochs=3, eval_every=4), datasets=tiny)
    records = [json.loads(line) for line in (tmp_path / "e" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["event"] == "epoch"]
    total = summary["total_steps"]
    assert steps == sorted({*range(4, total + 1, 4), total}) and summary["done"]
    # Stopped and resumed mid-way, it ends where an uninterrupted run ends.
    train(_cfg(tmp_path / "r", epochs=3, eval_every=4, stop_after_steps=5), datasets=tiny)
    resumed = train(_cfg(tmp_path / "r", epochs=3, eval_every=4, resume=True), datasets=tiny)
    assert resumed["best"] == summary["best"] and resumed["best_step"] == summary["best_step"]
    a = load_file(str(tmp_path / "e" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "r" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saved_model_loads_without_the_offline_weights_or_the_overlay(tmp_path, tiny):
    cfg = _cfg(tmp_path / "o", epochs=1)
    cfg.model_kwargs = dict(cfg.model_kwargs, pretrained_cfg_overlay={"crop_pct": 0.875})
    train(cfg, datasets=tiny)
    model = load_model(tmp_path / "o" / "model")
    assert model.pretrained_cfg["crop_pct"] == 0.875
