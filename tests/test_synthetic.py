"""The synthetic dataset: deterministic, in the shared schema, split by photo, and not trivial."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fgsbir_plugin.data import synthetic
from fgsbir_plugin.data.schema import PHOTO_FEATURES, SKETCH_FEATURES

SMALL = dict(num_photos=10, sketches_per_photo=3, image_size=32, test_fraction=0.3)


@pytest.fixture(scope="module")
def small():
    return synthetic.read(**SMALL)


@pytest.fixture(scope="module")
def default():
    return synthetic.read()


def _raw_bytes(dd, column):
    # decode=False: compare the stored PNG bytes, not decoded pixels
    return {
        split: [
            x["bytes"]
            for x in dd[split].cast_column(column, type(dd[split].features[column])(decode=False))[column]
        ]
        for split in dd
    }


def test_same_arguments_give_the_same_bytes(small):
    again = synthetic.read(**SMALL)
    assert _raw_bytes(small[0], "sketch") == _raw_bytes(again[0], "sketch")
    assert _raw_bytes(small[1], "photo") == _raw_bytes(again[1], "photo")
    # the sketches of one photo differ in their noise
    assert len(set(_raw_bytes(small[0], "sketch")["train"][:3])) == 3
    other = synthetic.read(**SMALL, seed=1)
    assert _raw_bytes(small[1], "photo")["train"][0] != _raw_bytes(other[1], "photo")["train"][0]


def test_an_instance_does_not_depend_on_the_number_of_photos(small):
    bigger = synthetic.read(**{**SMALL, "num_photos": 12})
    assert _raw_bytes(bigger[1], "photo")["train"][:7] == _raw_bytes(small[1], "photo")["train"]
    assert _raw_bytes(bigger[0], "sketch")["train"][:21] == _raw_bytes(small[0], "sketch")["train"]


def test_schema_modes_and_sizes(small):
    sketches, photos = small
    assert set(sketches) == set(photos) == {"train", "test"}
    for split in ("train", "test"):
        assert sketches[split].features == SKETCH_FEATURES
        assert photos[split].features == PHOTO_FEATURES
        for row in sketches[split]:
            img = row["sketch"]
            assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (32, 32)
            px = np.asarray(img)
            # black strokes on white: mostly white, with some ink
            assert np.median(px) == 255 and px.min() < 64
            assert row["category"] == "synthetic"
        for row in photos[split]:
            img = row["photo"]
            assert img.mode == "RGB" and img.size == (32, 32)
            assert np.asarray(img).std() > 10  # a real picture, not a blank
    assert synthetic.read(**SMALL, category="chairs")[1]["test"][0]["category"] == "chairs"


def test_split_sizes_and_photo_disjoint_splits(small):
    sketches, photos = small
    assert photos["train"].num_rows == 7 and photos["test"].num_rows == 3
    assert sketches["train"].num_rows == 21 and sketches["test"].num_rows == 9
    train_ids, test_ids = set(photos["train"]["photo_id"]), set(photos["test"]["photo_id"])
    assert not train_ids & test_ids
    assert len(train_ids) == 7 and len(test_ids) == 3  # ids unique within a split
    for split, ids in (("train", train_ids), ("test", test_ids)):
        sketch_photo = list(sketches[split]["photo_id"])
        assert set(sketch_photo) == ids  # every photo has a sketch, every sketch a photo in its split
        assert all(sketch_photo.count(pid) == 3 for pid in ids)
        assert len(set(sketches[split]["sketch_id"])) == sketches[split].num_rows


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(num_photos=1), ValueError),
        (dict(num_photos=2.5), TypeError),
        (dict(sketches_per_photo=0), ValueError),
        (dict(image_size=8), ValueError),
        (dict(test_fraction=0.0), ValueError),
        (dict(test_fraction=1.0), ValueError),
        (dict(num_photos=3, test_fraction=0.1), ValueError),  # empty test split
        (dict(seed=-1), ValueError),
        (dict(category=""), ValueError),
    ],
)
def test_bad_arguments_are_refused_with_a_sentence(kwargs, error):
    with pytest.raises(error, match=r"\w+ .*\."):
        synthetic.read(**{**SMALL, **kwargs})


# ---------------------------------------------------------------------- difficulty


def _acc_at_1(dist: np.ndarray, target: np.ndarray) -> float:
    own = dist[np.arange(len(target)), target]
    return float(np.mean((dist <= own[:, None]).sum(1) == 1))  # ties count against


def _cosine_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(1, keepdims=True)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - a @ b.T


def _edges(gray: np.ndarray) -> np.ndarray:
    gx, gy = np.zeros_like(gray), np.zeros_like(gray)
    gx[:, :, 1:-1] = gray[:, :, 2:] - gray[:, :, :-2]
    gy[:, 1:-1, :] = gray[:, 2:, :] - gray[:, :-2, :]
    return np.hypot(gx, gy)


@pytest.fixture(scope="module")
def default_arrays(default):
    """All default instances as one gallery: sketches [Ns, S, S], grey photos [Np, S, S], target [Ns]."""
    sketches, photos = default
    sk = np.concatenate(
        [
            np.stack([np.asarray(x, np.float64) / 255 for x in sketches[s]["sketch"]])
            for s in ("train", "test")
        ]
    )
    ph = np.concatenate(
        [
            np.stack([np.asarray(x, np.float64).mean(-1) / 255 for x in photos[s]["photo"]])
            for s in ("train", "test")
        ]
    )
    ids = list(photos["train"]["photo_id"]) + list(photos["test"]["photo_id"])
    target = np.array(
        [ids.index(p) for p in list(sketches["train"]["photo_id"]) + list(sketches["test"]["photo_id"])]
    )
    return sk, ph, target


def test_trivial_cues_are_near_chance(default_arrays):
    sk, ph, target = default_arrays
    chance = 1.0 / len(ph)
    by_mean = _acc_at_1(np.abs(sk.mean((1, 2))[:, None] - ph.mean((1, 2))[None]), target)
    hist = lambda a: np.stack([np.histogram(x, bins=16, range=(0, 1))[0] for x in a]).astype(np.float64)  # noqa: E731
    by_hist = _acc_at_1(_cosine_dist(hist(sk), hist(ph)), target)
    print(f"image mean acc@1 {by_mean:.3f}, histogram {by_hist:.3f}, chance {chance:.3f}")
    assert by_mean < 3 * chance and by_hist < 3 * chance


def test_raw_pixels_fail_but_a_noise_free_drawing_succeeds(default_arrays):
    sk, ph, target = default_arrays
    edges = _edges(ph)
    raw = _acc_at_1(_cosine_dist(1.0 - sk, edges), target)
    # the oracle knows each instance's parameters: it draws it without any sketch noise
    n = len(ph)
    clean = np.stack(
        [
            np.asarray(synthetic.clean_sketch(0, i, synthetic.DEFAULT_IMAGE_SIZE), np.float64) / 255
            for i in range(n)
        ]
    )
    oracle = _acc_at_1(_cosine_dist(1.0 - clean, edges), np.arange(n))
    print(f"raw pixels acc@1 {raw:.3f}, oracle {oracle:.3f}, chance {1 / n:.3f}")
    assert raw < 0.15, f"raw pixel nearest neighbour finds {raw:.0%} of the photos: the sketches are too easy"
    assert oracle > 0.8, f"a noise-free drawing finds only {oracle:.0%} of the photos: instances look alike"
