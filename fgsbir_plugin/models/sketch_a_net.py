"""Sketch-a-Net: the single-channel line-drawing CNN used as the trunk of DSSA.

Paper: Yu et al., "Sketch-a-Net: A Deep Neural Network that Beats Humans", IJCV 2017; used as the base
network of Song et al., "Deep Spatial-Semantic Attention for Fine-Grained Sketch-Based Image Retrieval",
ICCV 2017.

Trunk (225x225, 1 channel): conv1 64 15x15/3 valid -> maxpool 3/2 (35x35); conv2 128 5x5 valid ->
maxpool 3/2 (15x15); conv3-5 256 3x3 same -> maxpool 3/2 -> a 7x7x256 map. ReLU after every conv.

Head (TU-Berlin style classifier, ``global_pool='grid'``): the map is average-pooled to a fixed 7x7 grid
(the identity at 225x225 input, so the paper's fc6 is unchanged; other sizes still work), flattened,
fc6 512 (ReLU, dropout) -> fc7 512 (ReLU, dropout) -> ``head.fc`` num_classes (250 for TU-Berlin).
``global_pool=''`` makes ``forward`` return the unpooled map; with ``num_classes=0`` as well no head is built
at all, which is how DSSA uses Sketch-a-Net as its trunk.

Feature levels (``feature_info``) have the nominal strides 6, 12 and 24. The valid-padded convs shrink small
inputs below input / stride: from 129 px (``min_input_size``) every level keeps more than half of it, and
below 81 px (``MIN_INPUT_SIZE``) the last map is empty, which is an error.
"""

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import get_device_dtype
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model

# no public path to this one: tests/test_timm_contract.py fails loudly if a timm upgrade moves it
from timm.models._features import feature_take_indices

__all__ = ["SketchANet"]

# The smallest input side for which every Sketch-a-Net layer still has a non-empty output (a 1x1 final map).
MIN_INPUT_SIZE = 81


@torch.fx.wrap
def _check_input_size(x: torch.Tensor, min_size: int) -> None:
    """Raise a clear error for inputs smaller than ``min_size`` (a leaf for torch.fx, scriptable)."""
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        # Three valid-padded stages and three poolings shrink the map to nothing below this size.
        raise ValueError(
            f"Sketch-a-Net needs inputs of at least {min_size}x{min_size} pixels, got "
            f"{x.shape[-2]}x{x.shape[-1]}; resize the images (225 is the paper's size)."
        )


def _check_global_pool(global_pool: str) -> None:
    if global_pool not in ("grid", ""):
        raise ValueError(f"global_pool must be 'grid' or '' (no head), got {global_pool!r}.")


class ConvStage(nn.Sequential):
    """Convs with a ReLU after each, then a 3x3/2 max-pool: [B, in_chs, H, W] -> [B, out_chs[-1], H', W']."""

    def __init__(
        self,
        in_chs: int,
        out_chs: list[int],
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        device=None,
        dtype=None,
    ):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        for i, chs in enumerate(out_chs):
            self.add_module(
                f"conv{i + 1}",
                nn.Conv2d(in_chs, chs, kernel_size, stride=stride if i == 0 else 1, padding=padding, **dd),
            )
            self.add_module(f"act{i + 1}", nn.ReLU(inplace=False))
            in_chs = chs
        self.add_module("pool", nn.MaxPool2d(3, 2))


class SketchANetHead(nn.Module):
    """Grid pool -> flatten -> fc6 (ReLU, dropout) -> fc7 (ReLU, dropout) -> fc: [B, C, H, W] -> [B, num_classes].

    ``pre_logits=True`` returns the fc7 activations [B, hidden_dim].
    """

    def __init__(
        self,
        in_chs: int,
        num_classes: int,
        grid: tuple[int, int] = (7, 7),
        hidden_dim: int = 512,
        drop_rate: float = 0.5,
        device=None,
        dtype=None,
    ):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        self.grid = grid
        self.fc6 = nn.Linear(in_chs * grid[0] * grid[1], hidden_dim, **dd)
        self.fc7 = nn.Linear(hidden_dim, hidden_dim, **dd)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # adaptive pooling to the paper's 7x7 grid keeps fc6 valid for any input size
        x = F.adaptive_avg_pool2d(x, self.grid).flatten(1)
        x = self.drop(F.relu(self.fc6(x)))
        x = self.drop(F.relu(self.fc7(x)))
        return x if pre_logits else self.fc(x)


class NoHead(nn.Module):
    """The head of a trunk-only model (``global_pool=''``, ``num_classes=0``): returns the map unchanged."""

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x


class SketchANet(nn.Module):
    """Sketch-a-Net as a timm model.

    Args:
        num_classes: classifier outputs (250 for TU-Berlin); 0 keeps fc6/fc7 and returns fc7 features.
        in_chans: input channels (1 for line drawings).
        global_pool: ``'grid'`` (7x7 grid pool + fc6/fc7 head) or ``''`` (forward returns the map; fc6/fc7 and
            the classifier are built only when ``num_classes > 0``).
        drop_rate: dropout after fc6 and fc7 (0.5 as in the paper).
        head_grid: the grid fc6 sees, (7, 7) as in the paper.
        hidden_dim: width of fc6 and fc7 (512).
        device, dtype: where and in which precision the parameters are created (timm's factory arguments).
    """

    def __init__(
        self,
        num_classes: int = 250,
        in_chans: int = 1,
        global_pool: str = "grid",
        drop_rate: float = 0.5,
        head_grid: tuple[int, int] = (7, 7),
        hidden_dim: int = 512,
        device=None,
        dtype=None,
    ):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        _check_global_pool(global_pool)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.smallest_input_side = MIN_INPUT_SIZE
        self.drop_rate = drop_rate
        self.head_grid = tuple(head_grid)
        self.hidden_dim = hidden_dim
        self.grad_checkpointing = False
        self.stages = nn.Sequential(
            ConvStage(in_chans, [64], kernel_size=15, stride=3, padding=0, **dd),
            ConvStage(64, [128], kernel_size=5, padding=0, **dd),
            ConvStage(128, [256, 256, 256], kernel_size=3, padding=1, **dd),
        )
        # nominal strides: conv1 /3 then three /2 max-pools
        self.feature_info = [
            dict(num_chs=64, reduction=6, module="stages.0"),
            dict(num_chs=128, reduction=12, module="stages.1"),
            dict(num_chs=256, reduction=24, module="stages.2"),
        ]
        self.num_features = 256
        self.global_pool = global_pool
        self._build_head(num_classes, **dd)

    def _build_head(self, num_classes: int, device=None, dtype=None) -> None:
        if self.global_pool or num_classes > 0:
            self.head = SketchANetHead(
                self.num_features,
                num_classes,
                self.head_grid,
                self.hidden_dim,
                self.drop_rate,
                device=device,
                dtype=dtype,
            )
        else:
            # a trunk: no fc6/fc7 (they would be parameters that never see a gradient)
            self.head = NoHead()
        self.head_hidden_size = self.hidden_dim if self.global_pool else self.num_features

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stages\.0", blocks=[(r"^stages\.(\d+)", None), (r"^head", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc if isinstance(self.head, SketchANetHead) else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New classifier; a trained fc6/fc7 is kept while the model still pools or classifies."""
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        if global_pool is not None:
            _check_global_pool(global_pool)
            self.global_pool = global_pool
        if isinstance(self.head, SketchANetHead) and (self.global_pool or num_classes > 0):
            self.head.fc = nn.Linear(self.hidden_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
            self.head_hidden_size = self.hidden_dim if self.global_pool else self.num_features
        else:
            self._build_head(num_classes, **dd)
        self.head.train(self.training)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs [B, 64|128|256, h, w] selected by ``indices`` (timm semantics), plus the final map."""
        if output_fmt != "NCHW":
            raise ValueError(f"SketchANet only produces NCHW features, got output_fmt={output_fmt!r}.")
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        if torch.jit.is_scripting() or not stop_early:
            stages = self.stages
        else:
            stages = self.stages[: max_index + 1]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, H, W] -> [B, 256, h, w] (7x7 at 225x225)."""
        _check_input_size(x, self.smallest_input_side)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "":
            return x
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_sketch_a_net(variant: str, pretrained: bool = False, **kwargs: Any) -> SketchANet:
    return build_model_with_cfg(
        SketchANet,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2)),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 250,
        "input_size": (1, 225, 225),
        "min_input_size": (1, 129, 129),
        "pool_size": (7, 7),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        # line drawings in [0, 1], white background: map to [-1, 1]
        "mean": (0.5,),
        "std": (0.5,),
        "first_conv": "stages.0.conv1",
        "classifier": "head.fc",
        "paper_ids": "arXiv:1501.07873",
        "paper_name": "Sketch-a-Net: A Deep Neural Network that Beats Humans",
        "license": "mit",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        # no released weights: train with `num_classes=250` on TU-Berlin, then load with checkpoint_path=
        "sketch_a_net.untrained": _cfg(),
    }
)


@register_model
def sketch_a_net(pretrained: bool = False, **kwargs: Any) -> SketchANet:
    """Sketch-a-Net, 225x225 single-channel input, 250-class TU-Berlin-style classifier head."""
    model_args = dict(head_grid=(7, 7), hidden_dim=512)
    return _create_sketch_a_net("sketch_a_net", pretrained=pretrained, **dict(model_args, **kwargs))
