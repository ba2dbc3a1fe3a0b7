"""Training with a frozen trunk prefix whose outputs are computed once per image and view, then cached.

On a CPU most of a training step is the pretrained trunk. When its first part is frozen (its weights do not
change and it runs in eval mode), its output for a given input never changes either; so each training image
is augmented ``views`` times once (view 0 is the evaluation view, view 1 its mirror image, the rest random
draws of the same training augmentation, seeded), passed through the frozen prefix once, and kept in memory.
Every step then draws one cached view per image and runs only the trainable rest: the rest of the trunk,
attention and the fusion head. Validation reads view 0.

What is frozen is named by ``freeze``:

* ``"trunk"``: the whole trunk (its ``forward_features``); the cache holds the trunk's map.
* ``"trunk.blocks.K"``: the stem and ``blocks[:K]`` of an EfficientNet/MobileNet-style timm trunk
  (``conv_stem``, ``bn1``, ``blocks``, ``conv_head``, ``bn2``); ``blocks[K:]`` and the last 1x1 conv train.

The trainable trunk part keeps its BatchNorm statistics (eval mode): small batches of a few dozen pairs would
otherwise replace the ImageNet statistics with noisy ones. The model that is saved is the whole model, so
``fgsbir eval`` and search run it on images as usual.

Differences from training on images, by design: the augmentations are a fixed set of ``views`` per image
(shared by all seeds of a run, so that a benchmark computes them once), not a fresh draw per epoch.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from .._common import tensor_fingerprint
from ..data.transforms import ImageTable, ImageTransform, sample_generator

__all__ = ["FrozenTrunk", "CachedPairDataset", "cached_views", "clear_feature_memo"]

# The cache's augmentations do not depend on the run seed, so that every seed of a benchmark shares them.
_VIEW_SEED = 20171022


class FrozenTrunk:
    """Splits a DSSA model into a frozen trunk prefix (``prefix``) and the trainable rest (``rest``).

    Args:
        model: a DSSA model with one shared trunk.
        freeze: ``"trunk"`` or ``"trunk.blocks.K"`` (see the module docstring).
    """

    def __init__(self, model: nn.Module, freeze: str) -> None:
        if not hasattr(model, "forward_map_with_attention") or not hasattr(model, "trunk"):
            raise ValueError(
                f"freeze={freeze!r} needs a DSSA model (a trunk and a head); {type(model).__name__} has neither."
            )
        if getattr(model, "photo_trunk", None) is not None:
            raise ValueError(f"freeze={freeze!r} needs one shared trunk; build the model with shared=True.")
        if getattr(model, "trunk_fmt", "NCHW") != "NCHW":
            raise ValueError(f"freeze={freeze!r} needs a convolutional trunk with an NCHW map.")
        self.model, self.freeze = model, freeze
        trunk = model.trunk
        if freeze == "trunk":
            self.split = None
            self.frozen_modules: list[nn.Module] = [trunk]
        elif freeze.startswith("trunk.blocks."):
            needed = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")
            if not all(hasattr(trunk, n) for n in needed):
                raise ValueError(
                    f"freeze={freeze!r} needs an EfficientNet-style trunk ({', '.join(needed)}); "
                    f"{type(trunk).__name__} is not one: use freeze='trunk'."
                )
            try:
                k = int(freeze.removeprefix("trunk.blocks."))
            except ValueError:
                raise ValueError(f"freeze={freeze!r}: K in trunk.blocks.K must be an integer.") from None
            if not 0 <= k <= len(trunk.blocks):
                raise ValueError(
                    f"freeze={freeze!r}: the trunk has {len(trunk.blocks)} blocks, so K must be 0..{len(trunk.blocks)}."
                )
            self.split = k
            self.frozen_modules = [trunk.conv_stem, trunk.bn1, *trunk.blocks[:k]]
        else:
            raise ValueError(f"freeze must be 'trunk' or 'trunk.blocks.K', got {freeze!r}.")
        for module in self.frozen_modules:
            module.requires_grad_(False)
            # channels_last runs the depthwise convolutions of an EfficientNet about twice as fast on a CPU.
            module.to(memory_format=torch.channels_last)

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> what the cache holds, in eval mode and without gradients."""
        trunk = self.model.trunk
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            if self.split is None:
                return self.model._to_map(trunk.forward_features(x), x).contiguous()
            x = trunk.bn1(trunk.conv_stem(x))
            for block in trunk.blocks[: self.split]:
                x = block(x)
            return x.contiguous()

    def trunk_map(self, z: torch.Tensor) -> torch.Tensor:
        """Cached prefix output -> the trunk's map [B, num_features, h, w]."""
        if self.split is None:
            return z
        trunk = self.model.trunk
        for block in trunk.blocks[self.split :]:
            z = block(z)
        return trunk.bn2(trunk.conv_head(z))

    def rest(self, z: torch.Tensor) -> torch.Tensor:
        """Cached prefix output -> embedding [B, head_hidden_size]."""
        return self.model.forward_map_with_attention(self.trunk_map(z))[0]

    def set_mode(self, training: bool) -> None:
        """``model.train(training)``, with the frozen prefix and every trunk BatchNorm kept in eval mode."""
        self.model.train(training)
        for module in self.frozen_modules:
            module.eval()
        for module in self.model.trunk.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    def fingerprint(self) -> str:
        """Identifies the prefix's function: its split and its weights (buffers included)."""
        state: dict[str, torch.Tensor] = {}
        for i, module in enumerate(self.frozen_modules):
            state.update({f"{i}.{k}": v for k, v in module.state_dict().items()})
        return f"{self.freeze}:{tensor_fingerprint(state)}"


class CachedPairDataset(torch.utils.data.Dataset):
    """Item ``(epoch, i)`` -> ``(cached sketch view, cached photo view, photo index)`` for sketch ``i``.

    The view of each is drawn from a generator seeded by (seed, epoch, i), as the image pipeline draws its
    augmentations, so a resumed run draws exactly the views an uninterrupted one would.
    """

    def __init__(
        self, sketches: torch.Tensor, photos: torch.Tensor, sketch_to_photo: torch.Tensor, seed: int = 0
    ) -> None:
        if len(sketch_to_photo) != len(sketches):
            raise ValueError(
                f"sketch_to_photo has {len(sketch_to_photo)} entries for {len(sketches)} sketches."
            )
        self.sketches, self.photos = sketches, photos
        self.sketch_to_photo = sketch_to_photo
        self.seed = seed

    def __len__(self) -> int:
        return len(self.sketches)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        epoch, i = key
        p = int(self.sketch_to_photo[i])
        g = sample_generator(self.seed, epoch, i)
        vs, vp = torch.randint(0, self.sketches.shape[1], (2,), generator=g).tolist()
        return self.sketches[i, vs].float(), self.photos[p, vp].float(), p


def _view(
    table: ImageTable, i: int, v: int, item_key: str, train_tf: ImageTransform, eval_tf: ImageTransform
):
    """View ``v`` of image ``i``: 0 the evaluation view, 1 its mirror image, then seeded training draws."""
    if v == 0:
        return eval_tf(table[i])
    if v == 1:
        return eval_tf(table[i]).flip(-1)
    index = int.from_bytes(hashlib.sha256(item_key.encode()).digest()[:6], "big")
    return train_tf(table[i], sample_generator(_VIEW_SEED, v, index))


# Prefix outputs by (prefix fingerprint, transform settings, image key): a benchmark trains many models on
# one dataset in one process, and the prefix is the same for all of them.
_MEMO: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_MEMO_LIMIT = 200_000  # cached views, all keys together, before the oldest are dropped


def clear_feature_memo() -> None:
    _MEMO.clear()


@torch.no_grad()
def cached_views(
    frozen: FrozenTrunk,
    table: ImageTable,
    keys: Sequence[str],
    views: int,
    train_tf: ImageTransform,
    eval_tf: ImageTransform,
    device: torch.device,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float16,
    memo_key: Any = None,
) -> torch.Tensor:
    """``[N, views, C, h, w]`` prefix outputs of every image of ``table`` (``keys[i]`` names image ``i``).

    Images already computed under the same ``memo_key`` (prefix, transforms, views) are taken from memory.
    Stored in ``dtype`` (float16 halves the memory; the values are rounded once).
    """
    frozen.set_mode(False)
    todo = [(i, v) for i in range(len(table)) for v in range(views) if (memo_key, keys[i], v) not in _MEMO]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        x = torch.stack([_view(table, i, v, keys[i], train_tf, eval_tf) for i, v in chunk]).to(device)
        z = frozen.prefix(x).to("cpu", dtype)
        for (i, v), zi in zip(chunk, z):
            _MEMO[(memo_key, keys[i], v)] = zi
    out = torch.stack(
        [torch.stack([_MEMO[(memo_key, keys[i], v)] for v in range(views)]) for i in range(len(table))]
    )
    while len(_MEMO) > max(_MEMO_LIMIT, out.shape[0] * views):
        _MEMO.popitem(last=False)
    return out
