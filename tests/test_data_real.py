"""The readers on the real datasets in $FGSBIR_DATA / ../shared/data (skipped, visibly, without them)."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import DatasetDict, load_dataset
from scipy.io import loadmat
from scipy.ndimage import distance_transform_edt
from skimage.draw import line as sk_line

from fgsbir_plugin.data import (
    annotated_triplets,
    carve_validation,
    export_imagefolder,
    load_fgsbir_pair,
    load_parquet,
    save_parquet,
    split_strokes,
)
from fgsbir_plugin.data.qmul_v2 import read_strokes

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def chairv2(data_dir):
    return load_fgsbir_pair("chairv2", data_dir)


def test_chairv2_counts_and_pairing(chairv2):
    sketches, photos = chairv2
    assert {k: len(v) for k, v in sketches.items()} == {"train": 952, "test": 323}
    assert {k: len(v) for k, v in photos.items()} == {"train": 300, "test": 100}
    for split in ("train", "test"):
        gallery = photos[split]["photo_id"]
        assert len(set(gallery)) == len(gallery)
        counts = {pid: 0 for pid in gallery}
        for pid in sketches[split]["photo_id"]:
            counts[pid] += 1
        assert min(counts.values()) >= 3
    assert not set(photos["train"]["photo_id"]) & set(photos["test"]["photo_id"])
    row = sketches["test"][0]
    assert row["sketch"].mode == "L" and row["sketch"].size == (256, 256)
    assert photos["test"][0]["photo"].mode == "RGB"


def test_chairv2_sketch_matches_reference_rasterisation(chairv2, data_dir):
    sketches, _ = chairv2
    strokes = read_strokes(data_dir, "chairv2")
    for i in (0, 100, 322):
        row = sketches["test"][i]
        points = strokes[f"/test/{row['sketch_id']}"]
        ref = np.zeros((256, 256), bool)
        for stroke in split_strokes(points):
            for (x0, y0), (x1, y1) in zip(stroke[:-1], stroke[1:]):
                rr, cc = sk_line(round(y0), round(x0), round(y1), round(x1))
                ref[rr, cc] = True
        pixels = np.asarray(row["sketch"])
        assert ref.sum() > 100
        assert (pixels[ref] < 100).all()  # on a stroke: dark
        assert (pixels[distance_transform_edt(~ref) > 3.5] == 255).all()  # away from every stroke: white


def test_chairv2_validation_carve(chairv2):
    sketches, photos = carve_validation(*chairv2, 0.1, seed=3)
    assert {k: len(v) for k, v in photos.items()} == {"train": 270, "validation": 30, "test": 100}
    assert len(sketches["train"]) + len(sketches["validation"]) == 952
    assert set(sketches["validation"]["photo_id"]) == set(photos["validation"]["photo_id"])


@pytest.mark.parametrize(
    "name, cat, counts", [("shoes_v1", "shoes", (304, 115)), ("chairs_v1", "chairs", (200, 97))]
)
def test_qmul_v1_counts_and_pixels(data_dir, name, cat, counts):
    sketches, photos = load_fgsbir_pair(name, data_dir)
    assert (len(sketches["train"]), len(sketches["test"])) == counts
    assert (len(photos["train"]), len(photos["test"])) == counts
    sk = loadmat(data_dir / "qmul_v1" / cat / f"{cat}_sketch_db_test.mat")["data"]
    ed = loadmat(data_dir / "qmul_v1" / cat / f"{cat}_edge_db_test.mat")["data"]
    i = counts[1] - 1
    assert sketches["test"][i]["photo_id"] == photos["test"][i]["photo_id"] == f"{cat}_test_{i}"
    np.testing.assert_array_equal(np.asarray(sketches["test"][i]["sketch"]), sk[i])
    np.testing.assert_array_equal(np.asarray(photos["test"][i]["photo"])[..., 1], ed[i])
    triplets = annotated_triplets(name, data_dir)
    assert len(triplets["train"]) > counts[0] and set(triplets["test"]["sketch_id"]) <= set(
        sketches["test"]["sketch_id"]
    )


def _subset(dd: DatasetDict, n: int) -> DatasetDict:
    return DatasetDict({k: v.select(range(min(n, len(v)))) for k, v in dd.items()})


def _snapshot(dd: DatasetDict, col: str, key: str) -> dict:
    return {
        (s, r[key]): (r[col].mode, np.asarray(r[col]).tobytes(), r["category"])
        for s, d in dd.items()
        for r in d
    }


@pytest.mark.parametrize("name", ["chairv2", "shoes_v1"])
def test_real_round_trips(data_dir, chairv2, tmp_path, name):
    sketches, photos = chairv2 if name == "chairv2" else load_fgsbir_pair(name, data_dir)
    sketches, photos = _subset(sketches, 6), _subset(photos, 6)
    s2, p2 = load_parquet(save_parquet(sketches, photos, tmp_path / "pq"))
    assert _snapshot(s2, "sketch", "sketch_id") == _snapshot(sketches, "sketch", "sketch_id")
    assert _snapshot(p2, "photo", "photo_id") == _snapshot(photos, "photo", "photo_id")
    for dd, col, key in ((sketches, "sketch", "sketch_id"), (photos, "photo", "photo_id")):
        folder = export_imagefolder(dd, tmp_path / f"if_{col}")
        back = load_dataset("imagefolder", data_dir=str(folder), cache_dir=str(tmp_path / "cache"))
        assert _snapshot(back, col, key) == _snapshot(dd, col, key)
