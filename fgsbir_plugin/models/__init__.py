"""DSSA model family, registered with timm on import.

``import fgsbir_plugin`` (or this package) registers ``sketch_a_net``, ``dssa``, ``dssa_efficientnet_lite0``,
``dssa_resnet50`` and ``dssa_vit_small_patch16_224`` with timm.
"""

from .dssa import DSSA, CoarseFineFusion, SpatialAttention
from .efficientnet_lite_import import (
    OFFLINE_PACKAGES,
    convert_efficientnet_lite0_state_dict,
    convert_efficientnet_lite_state_dict,
    efficientnet_lite0_weights_path,
    efficientnet_lite_weights_path,
    load_efficientnet_lite0_imagenet,
    load_efficientnet_lite_imagenet,
)
from .sketch_a_net import SketchANet

__all__ = [
    "DSSA",
    "SpatialAttention",
    "CoarseFineFusion",
    "SketchANet",
    "OFFLINE_PACKAGES",
    "load_efficientnet_lite_imagenet",
    "convert_efficientnet_lite_state_dict",
    "efficientnet_lite_weights_path",
    "load_efficientnet_lite0_imagenet",
    "convert_efficientnet_lite0_state_dict",
    "efficientnet_lite0_weights_path",
]
