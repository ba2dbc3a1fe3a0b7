"""Readers on small generated fixtures: pairing, splits, modes, validation carve, dispatch."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fgsbir_plugin.data import (
    PHOTO_FEATURES,
    SKETCH_FEATURES,
    LenientSkipWarning,
    SkipLog,
    load_fgsbir,
    load_fgsbir_pair,
    pairs_folder,
)
from fgsbir_plugin.data.load import annotated_triplets, carve_validation
from fgsbir_plugin.data.qmul_v1 import read_triplets


def photo_image(i: int, size: int = 16, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").convert(mode)


def sketch_image(i: int, size: int = 16) -> Image.Image:
    arr = np.full((size, size), 255, np.uint8)
    arr[i % size, :] = 0
    return Image.fromarray(arr, "L")


def make_pairs_folder(root, photo_ids=("p0", "p1", "p2", "p3", "shoe_x-2"), per_photo=2):
    (root / "photos").mkdir(parents=True)
    (root / "sketches").mkdir()
    for i, pid in enumerate(photo_ids):
        photo_image(i).save(root / "photos" / f"{pid}.png")
        for k in range(per_photo):
            sep = "_" if k % 2 == 0 else "-"
            sketch_image(i * 10 + k).save(root / "sketches" / f"{pid}{sep}{k + 1}.png")
    return root


def make_v2(root, strokes: dict, photo_ids, name="ChairV2"):
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}_Coordinate").write_bytes(pickle.dumps(strokes, protocol=3))
    (root / "photo").mkdir()
    for i, pid in enumerate(photo_ids):
        photo_image(i).save(root / "photo" / f"{pid}.png")
    return root


def zigzag(n=5, offset=0.0):
    pts = np.zeros((n, 3))
    pts[:, 0] = np.linspace(20, 200, n) + offset
    pts[:, 1] = np.where(np.arange(n) % 2, 60, 180) + offset
    pts[-1, 2] = 1
    return pts


V2_STROKES = {
    "/train/a_1": zigzag(),
    "/train/a_2": zigzag(offset=5),
    "/train/b-x_1": zigzag(7),
    "/test/c_1": zigzag(offset=-10),
    "/test/c_A9Z": zigzag(4),
}


def make_v1(root, cat="shoes", n=(4, 3), annotation=True):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "test"), n):
        for kind in ("sketch", "edge"):
            data = rng.integers(0, 256, (count, 8, 8), dtype=np.uint8)
            arrays[kind, split] = data
            savemat(root / f"{cat}_{kind}_db_{split}.mat", {"data": data})
    if annotation:
        ann = {
            s: {
                "images": [f"{i}.jpg" for i in range(c)],
                "sketches": [f"{i}.png" for i in range(c)],
                "triplets": [[[i, (i + 1) % c]] for i in range(c)],
            }
            for s, c in zip(("train", "test"), n)
        }
        (root / f"{cat}_annotation.json").write_text(json.dumps(ann))
    return arrays


def ids(ds, col):
    return list(ds[col])


# --------------------------------------------------------------------------- pairs folder


def test_pairs_folder_pairs_modes_and_seeded_split(tmp_path):
    root = make_pairs_folder(tmp_path / "pf")
    sketches, photos = load_fgsbir_pair(root, test_fraction=0.4, seed=1)
    assert list(sketches) == ["train", "test"] and list(photos) == ["train", "test"]
    for split in sketches:
        assert sketches[split].features == SKETCH_FEATURES
        assert photos[split].features == PHOTO_FEATURES
        # every sketch's photo is in the same split's gallery, each photo once, each with a sketch
        gallery = ids(photos[split], "photo_id")
        assert len(gallery) == len(set(gallery))
        assert set(ids(sketches[split], "photo_id")) == set(gallery)
    assert len(photos["test"]) == 2 and len(photos["train"]) == 3  # round(0.4 * 5)
    assert sum(len(d) for d in sketches.values()) == 10
    all_rows = [r for d in sketches.values() for r in d]
    pairs = {r["sketch_id"]: r["photo_id"] for r in all_rows}
    assert pairs["shoe_x-2_1"] == "shoe_x-2" and pairs["shoe_x-2-2"] == "shoe_x-2" and pairs["p3-2"] == "p3"
    row = all_rows[0]
    assert row["sketch"].mode == "L"
    assert photos["train"][0]["photo"].mode == "RGB"
    # pixels survive: the sketch of p0, k=1 is row 0 of the generated image set
    r = next(r for r in all_rows if r["sketch_id"] == "p0_1")
    np.testing.assert_array_equal(np.asarray(r["sketch"]), np.asarray(sketch_image(0)))
    again, _ = load_fgsbir_pair(root, test_fraction=0.4, seed=1)
    assert ids(again["test"], "sketch_id") == ids(sketches["test"], "sketch_id")
    other = {
        tuple(sorted(ids(load_fgsbir(root, config="photos", test_fraction=0.4, seed=s)["test"], "photo_id")))
        for s in range(6)
    }
    assert len(other) > 1  # the seed matters


def test_pairs_folder_split_files(tmp_path):
    root = make_pairs_folder(tmp_path / "pf")
    (root / "train.txt").write_text("# train photos\np0\np1\n\np2\nshoe_x-2\n")
    (root / "test.txt").write_text("p3\n")
    photos = load_fgsbir(root, config="photos")
    assert ids(photos["test"], "photo_id") == ["p3"]
    assert ids(photos["train"], "photo_id") == ["p0", "p1", "p2", "shoe_x-2"]


def test_split_file_problems(tmp_path):
    root = make_pairs_folder(tmp_path / "pf")
    (root / "train.txt").write_text("p0\np1\np2\n")
    with pytest.raises(FileNotFoundError, match="test.txt does not"):
        load_fgsbir(root)
    (root / "test.txt").write_text("p3\np1\n")
    with pytest.raises(ValueError, match="test.txt line 2 lists photo 'p1'.*already lists"):
        load_fgsbir(root)
    (root / "test.txt").write_text("p3\n")
    with pytest.raises(ValueError, match=r"shoe_x-2\.png is in neither .*train\.txt nor .*test\.txt"):
        load_fgsbir(root)
    with pytest.warns(UserWarning, match="1 photo_not_in_split_file"):
        sk = load_fgsbir(root, lenient=True)
    assert "shoe_x-2" not in set(ids(sk["train"], "photo_id")) | set(ids(sk["test"], "photo_id"))
    (root / "test.txt").write_text("p3\nghost\n")
    with pytest.raises(FileNotFoundError, match="'ghost'"):
        load_fgsbir(root, lenient=True)


def test_image_modes_are_normalised(tmp_path):
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("g", "p", "t"), per_photo=1)
    photo_image(0, mode="L").save(root / "photos" / "g.png")
    photo_image(1, mode="P").save(root / "photos" / "p.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[4, :, 3] = 255  # one opaque black row on a transparent sheet
    Image.fromarray(rgba, "RGBA").save(root / "sketches" / "t_1.png")
    sk, ph = load_fgsbir_pair(root, test_fraction=0.0)
    assert all(r["photo"].mode == "RGB" for r in ph["train"])
    g = next(r for r in ph["train"] if r["photo_id"] == "g")["photo"]
    np.testing.assert_array_equal(np.asarray(g)[..., 0], np.asarray(photo_image(0, mode="L")))
    t = np.asarray(next(r for r in sk["train"] if r["sketch_id"] == "t_1")["sketch"])
    assert (t[4] == 0).all() and (np.delete(t, 4, axis=0) == 255).all()  # transparent -> white paper


# --------------------------------------------------------------------------- validation carve


def test_validation_carved_by_photo_seeded(tmp_path):
    root = make_pairs_folder(tmp_path / "pf", photo_ids=[f"q{i}" for i in range(10)], per_photo=3)
    base_s, base_p = load_fgsbir_pair(root, test_fraction=0.2)
    s, p = load_fgsbir_pair(root, test_fraction=0.2, validation_size=0.25, seed=0)
    assert list(s) == ["train", "validation", "test"] and list(p) == list(s)
    assert len(p["validation"]) == 2  # round(0.25 * 8)
    val = set(ids(p["validation"], "photo_id"))
    assert set(ids(s["validation"], "photo_id")) == val and len(s["validation"]) == 6
    assert not val & set(ids(p["train"], "photo_id")) and not val & set(ids(s["train"], "photo_id"))
    assert ids(s["test"], "sketch_id") == ids(base_s["test"], "sketch_id")
    assert sorted(ids(s["train"], "sketch_id") + ids(s["validation"], "sketch_id")) == sorted(
        ids(base_s["train"], "sketch_id")
    )
    s2, _ = load_fgsbir_pair(root, test_fraction=0.2, validation_size=0.25, seed=0)
    assert ids(s2["validation"], "sketch_id") == ids(s["validation"], "sketch_id")
    vals = {
        tuple(carve_validation(base_s, base_p, 0.25, seed)[1]["validation"]["photo_id"]) for seed in range(8)
    }
    assert len(vals) > 1
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        carve_validation(base_s, base_p, 1.0)
    with pytest.raises(TypeError, match="fraction"):
        carve_validation(base_s, base_p, "0.1")


# --------------------------------------------------------------------------- QMUL-V2


def test_qmul_v2_reader(tmp_path):
    root = make_v2(tmp_path / "data" / "chairv2", V2_STROKES, ["a", "b-x", "c"])
    for data_dir in (root, tmp_path / "data"):
        sk, ph = load_fgsbir_pair("chairv2", data_dir, canvas=64, line_width=2.0)
        assert ids(sk["train"], "sketch_id") == ["a_1", "a_2", "b-x_1"]
        assert ids(sk["train"], "photo_id") == ["a", "a", "b-x"]
        assert ids(sk["test"], "photo_id") == ["c", "c"] and ids(ph["test"], "photo_id") == ["c"]
        assert set(sk["train"]["category"]) == {"chair"}
        img = sk["test"][0]["sketch"]
        assert img.mode == "L" and img.size == (64, 64)
    # a folder path with one *_Coordinate file is detected as QMUL-V2
    sk2 = load_fgsbir(root, canvas=64, line_width=2.0)
    np.testing.assert_array_equal(np.asarray(sk2["test"][1]["sketch"]), np.asarray(sk["test"][1]["sketch"]))
    partial = load_fgsbir(root, fraction=0.5)["train"][0]["sketch"]
    full = load_fgsbir(root)["train"][0]["sketch"]
    assert (np.asarray(partial) < 128).sum() < (np.asarray(full) < 128).sum()


@pytest.mark.parametrize(
    "key, value, reason, match",
    [
        (
            "/train/a_3",
            np.zeros((0, 3)),
            "bad_strokes",
            r"key '/train/a_3' has no points \(an empty sketch\)",
        ),
        ("/train/a_3", np.zeros((5, 2)), "bad_strokes", r"key '/train/a_3' has shape \(5, 2\), not \(N, 3\)"),
        ("/train/a_3", np.full((2, 3), np.nan), "bad_strokes", "NaN"),
        ("/train/a_3", [1, 2, 3], "bad_strokes", "holds a list, not a numpy array"),
        ("/val/a_3", zigzag(), "unpaired_file", "not of the form '/<train|test>/<photo_id>_<k>'"),
        ("/train/nounderscore", zigzag(), "unpaired_file", "not of the form"),
        ("/test/a_1", zigzag(), "duplicate_sketch_id", "sketch id 'a_1' is used twice"),
        ("/test/a_3", zigzag(), "split_conflict", r"is in test but its photo 'a' belongs to train"),
        ("/train/zz_1", zigzag(), "sketch_without_photo", r"depicts photo 'zz'.*photo[/\\]zz\.png"),
    ],
)
def test_qmul_v2_bad_entries(tmp_path, key, value, reason, match):
    strokes = dict(V2_STROKES)
    strokes[key] = value
    root = make_v2(tmp_path / "v2", strokes, ["a", "b-x", "c"])
    with pytest.raises((ValueError, FileNotFoundError), match=match) as info:
        load_fgsbir("chairv2", root)
    assert "V2_Coordinate" in str(info.value) and "lenient=True" in str(info.value)
    log = SkipLog()
    with pytest.warns(UserWarning, match="skipped 1 item"):
        sk = load_fgsbir("chairv2", root, lenient=True, skip_log=log)
    assert dict(log.counts) == {reason: 1}
    assert sum(len(d) for d in sk.values()) == len(V2_STROKES)


def test_qmul_v2_photo_problems(tmp_path):
    root = make_v2(tmp_path / "v2", V2_STROKES, ["a", "b-x", "c", "lonely"])
    with pytest.raises(
        ValueError, match=r"photo .*lonely\.png has no sketch; add a sketch of it or remove the photo"
    ):
        load_fgsbir("chairv2", root)
    with pytest.warns(UserWarning, match="1 photo_without_sketch"):
        assert len(load_fgsbir("chairv2", root, lenient=True, config="photos")["train"]) == 2
    (root / "photo" / "lonely.png").unlink()
    (root / "photo" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(
        ValueError, match=r"image .*c\.png cannot be read .*replace it with a valid image or delete it"
    ):
        load_fgsbir("chairv2", root)
    with pytest.warns(UserWarning, match="1 corrupt_image.*2 sketch_without_photo"):
        sk = load_fgsbir("chairv2", root, lenient=True)
    assert len(sk["test"]) == 0 and len(sk["train"]) == 3
    (root / "photo").rename(root / "photos_elsewhere")
    with pytest.raises(FileNotFoundError, match=r"photo folder .*photo is missing"):
        load_fgsbir("chairv2", root)


def test_truncated_photo_is_caught(tmp_path):
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("a", "b"), per_photo=1)
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    big.save(root / "photos" / "b.jpg", quality=90)
    (root / "photos" / "b.png").unlink()
    data = (root / "photos" / "b.jpg").read_bytes()
    (root / "photos" / "b.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"b\.jpg cannot be read"):
        load_fgsbir(root)


def test_missing_folders_and_unknown_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a known dataset name"):
        load_fgsbir(tmp_path / "nothing")
    (tmp_path / "pf" / "photos").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="does not look like a known layout"):
        load_fgsbir(tmp_path / "pf")
    with pytest.raises(FileNotFoundError, match=r"sketch folder .*sketches is missing"):
        pairs_folder.read(tmp_path / "pf")
    with pytest.raises(FileNotFoundError, match="no ChairV2_Coordinate found"):
        load_fgsbir("chairv2", tmp_path)
    with pytest.raises(FileNotFoundError, match="no shoes_sketch_db_train.mat found"):
        load_fgsbir("shoes_v1", tmp_path)
    with pytest.raises(ValueError, match="config must be"):
        load_fgsbir("chairv2", tmp_path, config="both")
    with pytest.raises(ValueError, match="does not take"):
        load_fgsbir(make_pairs_folder(tmp_path / "ok"), canvas=64)


def test_pairs_folder_duplicates_and_bad_names(tmp_path):
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("a", "b"), per_photo=1)
    photo_image(9).save(root / "photos" / "a.jpg")
    with pytest.raises(ValueError, match=r"photo id 'a' is used twice \(.*a\.jpg and .*a\.png\)"):
        load_fgsbir(root)
    with pytest.warns(UserWarning, match="1 duplicate_photo_id"):
        load_fgsbir(root, lenient=True)
    (root / "photos" / "a.jpg").unlink()
    sketch_image(3).save(root / "sketches" / "nosep.png")
    with pytest.raises(ValueError, match=r"nosep\.png is not named <photo_id>_<k>"):
        load_fgsbir(root)
    (root / "sketches" / "nosep.png").unlink()
    sketch_image(4).save(root / "sketches" / "a_1.jpg")
    with pytest.raises(ValueError, match="sketch id 'a_1' is used twice"):
        load_fgsbir(root)


# --------------------------------------------------------------------------- QMUL-V1


def test_qmul_v1_reader_and_triplets(tmp_path):
    arrays = make_v1(tmp_path / "qmul_v1" / "shoes")
    for data_dir in (tmp_path, tmp_path / "qmul_v1", tmp_path / "qmul_v1" / "shoes"):
        sk, ph = load_fgsbir_pair("shoes_v1", data_dir)
        assert len(sk["train"]) == 4 and len(ph["test"]) == 3
    assert ids(sk["test"], "photo_id") == ["shoes_test_0", "shoes_test_1", "shoes_test_2"]
    assert ids(sk["test"], "sketch_id")[2] == "shoes_test_2_sketch"
    assert ids(ph["test"], "photo_id") == ids(sk["test"], "photo_id")
    row, photo = sk["test"][2], ph["test"][2]
    assert row["sketch"].mode == "L" and photo["photo"].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(row["sketch"]), arrays["sketch", "test"][2])
    np.testing.assert_array_equal(
        np.asarray(photo["photo"]), np.repeat(arrays["edge", "test"][2][..., None], 3, -1)
    )
    by_path, _ = load_fgsbir_pair(tmp_path / "qmul_v1" / "shoes")  # a category folder is detected
    assert list(by_path["test"]["sketch_id"]) == list(sk["test"]["sketch_id"])
    trip = annotated_triplets("shoes_v1", tmp_path)
    assert trip["train"][3] == {
        "sketch_id": "shoes_train_3_sketch",
        "positive_photo_id": "shoes_train_3",
        "negative_photo_id": "shoes_train_0",
    }
    assert len(trip["test"]) == 3


def test_qmul_v1_problems(tmp_path):
    folder = tmp_path / "chairs"
    make_v1(folder, cat="chairs", annotation=False)
    assert read_triplets(folder, category="chairs") is None
    savemat(folder / "chairs_edge_db_test.mat", {"data": np.zeros((2, 8, 8), np.uint8)})
    with pytest.raises(
        ValueError, match=r"holds 3 sketches but .*chairs_edge_db_test\.mat holds 2 edge maps"
    ):
        load_fgsbir("chairs_v1", folder)
    savemat(folder / "chairs_edge_db_test.mat", {"data": np.zeros((3, 64), np.uint8)})
    with pytest.raises(ValueError, match=r"chairs_edge_db_test\.mat holds 'data' of shape \(3, 64\)"):
        load_fgsbir("chairs_v1", folder)
    (folder / "chairs_edge_db_test.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"chairs_edge_db_test\.mat is missing"):
        load_fgsbir("chairs_v1", folder)
    make_v1(tmp_path / "again" / "chairs", cat="chairs", annotation=False)
    blank = np.full((3, 8, 8), 255, np.uint8)
    savemat(tmp_path / "again" / "chairs" / "chairs_sketch_db_test.mat", {"data": blank})
    with pytest.raises(ValueError, match=r"sketch .*chairs_sketch_db_test\.mat \[0\] is blank"):
        load_fgsbir("chairs_v1", tmp_path / "again")
    with pytest.warns(UserWarning, match="3 bad_strokes.*3 photo_without_sketch"):
        sk = load_fgsbir("chairs_v1", tmp_path / "again", lenient=True)
    assert len(sk["test"]) == 0


# --------------------------------------------------------------------------- Sketchy


def make_sketchy(root, variant=None):
    base_p = root / "photo" / (variant or "")
    base_s = root / "sketch" / (variant or "")
    n = 0
    for cat, pids in (("cat", ["n01_1", "n01_2"]), ("dog", ["n02_7", "n02_8", "n02_9"])):
        (base_p / cat).mkdir(parents=True)
        (base_s / cat).mkdir(parents=True)
        for pid in pids:
            photo_image(n).convert("RGB").save(base_p / cat / f"{pid}.jpg")
            for k in (1, 2):
                sketch_image(n + k).convert("RGB").save(base_s / cat / f"{pid}-{k}.png")
            n += 1
    return root


@pytest.mark.parametrize("variant", [None, "tx_000000000000"])
def test_sketchy_reader(tmp_path, variant):
    root = make_sketchy(tmp_path / "sketchy", variant)
    (root / "testset.txt").write_text("cat/n01_2.jpg\ndog/n02_9.jpg\n")
    sk, ph = load_fgsbir_pair("sketchy", root)
    assert ids(ph["test"], "photo_id") == ["n01_2", "n02_9"]
    assert ids(sk["test"], "sketch_id") == ["n01_2-1", "n01_2-2", "n02_9-1", "n02_9-2"]
    assert ids(sk["test"], "category") == ["cat", "cat", "dog", "dog"]
    assert ids(ph["train"], "category") == ["cat", "dog", "dog"]
    assert sk["train"][0]["sketch"].mode == "L" and ph["train"][0]["photo"].mode == "RGB"
    assert ids(load_fgsbir(root)["train"], "sketch_id") == ids(sk["train"], "sketch_id")  # detected by layout


def test_sketchy_sketch_in_wrong_category(tmp_path):
    root = make_sketchy(tmp_path / "sketchy")
    sketch_image(0).save(root / "sketch" / "dog" / "n01_1-3.png")
    with pytest.raises(ValueError, match=r"n01_1-3\.png is in category 'dog' but photo 'n01_1' is in 'cat'"):
        load_fgsbir("sketchy", root)


# --------------------------------------------------------------------------- synthetic dispatch


def test_synthetic_dispatch():
    sk, ph = load_fgsbir_pair(
        "synthetic", num_photos=6, sketches_per_photo=2, image_size=32, test_fraction=0.5
    )
    assert sk["train"].features == SKETCH_FEATURES and ph["test"].features == PHOTO_FEATURES
    assert set(sk["test"]["photo_id"]) == set(ph["test"]["photo_id"])
    with pytest.raises(ValueError, match="leave data_dir=None"):
        load_fgsbir("synthetic", "/tmp")


def test_hidden_files_ignored_and_paths_absolute(tmp_path, monkeypatch):
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("a", "b"), per_photo=1)
    (root / "photos" / "._a.png").write_bytes(b"macOS resource fork, not an image")
    monkeypatch.chdir(tmp_path)
    _, photos = load_fgsbir_pair("pf", test_fraction=0.5)  # a relative folder path
    monkeypatch.chdir(root / "sketches")
    assert sorted(ids(photos["train"], "photo_id") + ids(photos["test"], "photo_id")) == ["a", "b"]
    assert photos["train"][0]["photo"].mode == "RGB"  # decodes after the cwd moved


def test_direct_reader_call_warns_its_skips(tmp_path):
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("a", "b"), per_photo=1)
    sketch_image(1).save(root / "sketches" / "ghost_1.png")
    with pytest.warns(
        LenientSkipWarning, match=r"skipped 1 item\(s\): 1 sketch_without_photo \(e\.g\. .*ghost_1\.png\)"
    ):
        sk, _ = pairs_folder.read(root, lenient=True)
    assert "ghost" not in ids(sk["train"], "photo_id") + ids(sk["test"], "photo_id")
