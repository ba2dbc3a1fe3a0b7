import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image, ImageDraw

from fgsbir_plugin.data.schema import SKETCH_FEATURES
from fgsbir_plugin.data.transforms import (
    ImageTable,
    ImageTransform,
    decode_image,
    load_size_for,
    sample_generator,
    ten_crop_views,
)


def _sketch(seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("L", (size, size + 8), 255)
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        draw.line([tuple(rng.integers(0, size, 2)) for _ in range(2)], fill=0, width=2)
    return img


def test_decode_converts_channels_and_size():
    sketch = _sketch(0)
    out3 = decode_image(sketch, 36, 3)
    assert out3.shape == (3, 36, 36) and out3.dtype == torch.uint8
    assert torch.equal(out3[0], out3[1]) and torch.equal(out3[1], out3[2])  # grey replicated
    photo = Image.fromarray(np.full((20, 30, 3), (255, 0, 0), dtype=np.uint8))
    out1 = decode_image(photo, 16, 1)
    assert out1.shape == (1, 16, 16)
    assert int(out1[0, 8, 8]) == 76  # ITU-R 601 luminance of pure red (PIL "L")


def test_decode_rgba_background_is_white():
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert int(decode_image(img, 10, 1).min()) == 255


def test_load_size_and_validation():
    assert load_size_for(224, 0.875) == 256
    with pytest.raises(ValueError, match="crop_pct"):
        load_size_for(224, 0.0)
    with pytest.raises(ValueError, match="in_chans"):
        decode_image(_sketch(0), 10, 2)


def test_eval_transform_is_centre_crop_normalised():
    img = torch.arange(5 * 5, dtype=torch.uint8).view(1, 5, 5)
    tf = ImageTransform(3, mean=(0.5,), std=(0.5,), in_chans=1)
    out = tf(img)
    expected = (img[:, 1:4, 1:4].float() / 255 - 0.5) / 0.5
    assert torch.equal(out, expected)


def test_train_transform_is_reproducible_per_generator():
    img = decode_image(_sketch(1), 40, 3)
    tf = ImageTransform(
        32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), in_chans=3, train=True, stroke_jitter=0.5
    )
    a = tf(img, sample_generator(0, 1, 7))
    b = tf(img, sample_generator(0, 1, 7))
    assert torch.equal(a, b)
    outs = {tf(img, sample_generator(0, e, 7)).sum().item() for e in range(8)}
    assert len(outs) > 1  # different epochs draw different crops/flips
    with pytest.raises(ValueError, match="Generator"):
        tf(img)


def test_stroke_jitter_thickens_ink():
    img = torch.full((1, 9, 9), 255, dtype=torch.uint8)
    img[0, 4, 4] = 0
    tf = ImageTransform(9, mean=(0.0,), std=(1.0,), in_chans=1, train=True, hflip=0.0, stroke_jitter=1.0)
    out = tf(img, sample_generator(0, 0, 0))
    assert int((out == 0).sum()) == 9


def test_rgb_stats_on_one_channel():
    tf = ImageTransform(4, mean=(0.2, 0.4, 0.6), std=(0.5, 0.5, 0.5), in_chans=1)
    out = tf(torch.zeros(1, 4, 4, dtype=torch.uint8))
    assert torch.allclose(out, torch.full_like(out, -0.8))


def test_ten_crop_views():
    img = torch.arange(16, dtype=torch.uint8).view(1, 4, 4)
    views = ten_crop_views(img, 3)
    assert views.shape == (10, 1, 3, 3)
    assert torch.equal(views[0], img[:, :3, :3])
    assert torch.equal(views[3], img[:, 1:, 1:])
    assert torch.equal(views[4], img[:, 0:3, 0:3])  # centre of 4 -> offset (4-3)//2 = 0
    assert torch.equal(views[5], img[:, :3, :3].flip(-1))


def test_image_table_cache_matches_lazy():
    ds = Dataset.from_dict(
        {
            "sketch": [_sketch(i) for i in range(3)],
            "sketch_id": list("abc"),
            "photo_id": list("xyz"),
            "category": ["c"] * 3,
        },
        features=SKETCH_FEATURES,
    )
    cached = ImageTable(ds, "sketch", 24, 3, cache=True)
    lazy = ImageTable(ds, "sketch", 24, 3, cache=False)
    assert cached.cached and not lazy.cached
    assert cached.tensor.shape == (3, 3, 24, 24)
    for i in range(3):
        assert torch.equal(cached[i], lazy[i])
    assert ImageTable(ds, "sketch", 24, 3, cache=None, cache_limit_mb=0.0).cached is False
