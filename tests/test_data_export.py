"""Parquet, Hub-folder and imagefolder exports give back the same ids and the same pixels."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from datasets import DatasetDict, load_dataset
from PIL import Image

from fgsbir_plugin.data import (
    PHOTO_FEATURES,
    SKETCH_FEATURES,
    export_imagefolder,
    load_fgsbir_pair,
    load_imagefolder,
    load_parquet,
    save_parquet,
)


def make_folder(root):
    """Pairs folder with a JPEG photo (kept by path) and PNG files, 4 photos x 2 sketches."""
    (root / "photos").mkdir(parents=True)
    (root / "sketches").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        img = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), "RGB")
        img.save(root / "photos" / (f"p{i}.jpg" if i == 0 else f"p{i}.png"))
        for k in (1, 2):
            Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8), "L").save(
                root / "sketches" / f"p{i}_{k}.png"
            )
    return root


@pytest.fixture()
def pair(tmp_path):
    return load_fgsbir_pair(make_folder(tmp_path / "src"), test_fraction=0.25, validation_size=0.34)


def rows_by_id(dd: DatasetDict, image_col: str, id_col: str):
    out = {}
    for split, ds in dd.items():
        for row in ds:
            img = row[image_col]
            out[(split, row[id_col])] = (
                img.mode,
                np.asarray(img).copy(),
                {k: v for k, v in row.items() if k != image_col},
            )
    return out


def assert_same(a: DatasetDict, b: DatasetDict, image_col: str, id_col: str, same_order: bool = True):
    assert list(a) == list(b) if same_order else set(a) == set(b)
    if same_order:
        for split in a:
            assert list(a[split][id_col]) == list(b[split][id_col])
    ra, rb = rows_by_id(a, image_col, id_col), rows_by_id(b, image_col, id_col)
    assert ra.keys() == rb.keys() and len(ra) == sum(len(d) for d in a.values())
    for key in ra:
        assert ra[key][0] == rb[key][0]
        np.testing.assert_array_equal(ra[key][1], rb[key][1])
        assert ra[key][2] == rb[key][2]


def test_parquet_round_trip(pair, tmp_path):
    sketches, photos = pair
    assert list(sketches) == ["train", "validation", "test"]
    folder = save_parquet(sketches, photos, tmp_path / "out")
    # moving the source away proves the image bytes were embedded, not referenced by path
    shutil.move(tmp_path / "src", tmp_path / "gone")
    s2, p2 = load_parquet(folder)
    assert all(d.features == SKETCH_FEATURES for d in s2.values())
    assert all(d.features == PHOTO_FEATURES for d in p2.values())
    shutil.move(tmp_path / "gone", tmp_path / "src")
    assert_same(sketches, s2, "sketch", "sketch_id")
    assert_same(photos, p2, "photo", "photo_id")
    # a plain datasets user reads the same folder through its dataset card
    s3 = load_dataset(str(folder), "sketches", cache_dir=str(tmp_path / "cache"))
    assert_same(sketches, s3, "sketch", "sketch_id")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        save_parquet(sketches, photos, folder)
    with pytest.raises(ValueError, match="sketches DatasetDict first"):
        save_parquet(photos, sketches, tmp_path / "other")


def test_imagefolder_round_trip(pair, tmp_path):
    sketches, photos = pair
    for dd, col, key in ((sketches, "sketch", "sketch_id"), (photos, "photo", "photo_id")):
        folder = export_imagefolder(dd, tmp_path / f"if_{col}")
        assert (folder / "train" / "metadata.jsonl").is_file()
        plain = load_dataset("imagefolder", data_dir=str(folder), cache_dir=str(tmp_path / "cache"))
        assert set(plain["train"].column_names) == set(dd["train"].column_names)
        assert_same(dd, plain, col, key, same_order=False)
        typed = load_imagefolder(folder, cache_dir=str(tmp_path / "cache"))
        assert all(d.features == dd["train"].features for d in typed.values())
        assert_same(dd, typed, col, key, same_order=False)
    # the JPEG photo's bytes are copied unchanged, not re-encoded
    jpgs = list((tmp_path / "if_photo").rglob("*.jpg"))
    assert len(jpgs) == 1 and jpgs[0].read_bytes() == (tmp_path / "src" / "photos" / "p0.jpg").read_bytes()


def test_parquet_pages_carry_checksums_that_load_parquet_checks(pair, tmp_path):
    import pyarrow.parquet as pq

    folder = save_parquet(*pair, tmp_path / "out")
    path = folder / "sketches" / "train-00000-of-00001.parquet"
    good = path.read_bytes()
    at = good.index(b"IDAT") + 8  # inside the first sketch's compressed pixels, stored as they are
    damaged = bytearray(good)
    damaged[at : at + 4] = bytes(b ^ 0xFF for b in damaged[at : at + 4])
    path.write_bytes(bytes(damaged))
    pq.read_table(path)  # without its checksums the damage reads silently
    with pytest.raises(
        ValueError, match=r"train-00000-of-00001\.parquet is damaged \(.*CRC.*\); export it again"
    ):
        load_parquet(folder)
    # A file written without page checksums (by another tool, or before they were written) is read unchecked.
    path.write_bytes(good)
    pq.write_table(pq.read_table(path), path)
    s2, _ = load_parquet(folder)
    assert_same(pair[0], s2, "sketch", "sketch_id")
