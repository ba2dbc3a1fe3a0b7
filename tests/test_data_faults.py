"""Damaged, crafted or surprising input on the data side: each case stops with one sentence naming
the file and the fix, or is read correctly; none gives a traceback or a silently wrong dataset."""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import warnings

import numpy as np
import pytest
import timm
import torch
from PIL import Image, ImageFile
from scipy.io import loadmat, savemat
from test_data_readers import ids, make_pairs_folder, make_v1, make_v2, photo_image, sketch_image, zigzag

from fgsbir_plugin.data import LenientSkipWarning, SkipLog, load_fgsbir, load_fgsbir_pair
from fgsbir_plugin.data.export import export_imagefolder, load_imagefolder
from fgsbir_plugin.data.qmul_v1 import read_triplets
from fgsbir_plugin.data.safe_pickle import load_numpy_pickle
from fgsbir_plugin.embedding import embed_files, list_images

# --------------------------------------------------------------------------- QMUL-V1 axis order


def matlab_order(folder, cat, which):
    """Re-save the given (kind, split) arrays of a make_v1 folder as MATLAB stores them: (H, W, n)."""
    for kind, split in which:
        path = folder / f"{cat}_{kind}_db_{split}.mat"
        savemat(path, {"data": np.moveaxis(loadmat(path)["data"], 0, 2)})


ALL_FILES = [(k, s) for k in ("sketch", "edge") for s in ("train", "test")]


@pytest.mark.parametrize(
    "which",
    [ALL_FILES, [("edge", "train"), ("edge", "test")], [("sketch", "test")]],
    ids=["all", "edges", "one"],
)
def test_qmul_v1_matlab_order_is_transposed(tmp_path, which):
    folder = tmp_path / "shoes"
    arrays = make_v1(folder, annotation=False)  # train 4, test 3 images of 8 x 8
    matlab_order(folder, "shoes", which)
    sk, ph = load_fgsbir_pair(folder)
    assert (len(sk["train"]), len(sk["test"])) == (4, 3)
    np.testing.assert_array_equal(np.asarray(sk["test"][2]["sketch"]), arrays["sketch", "test"][2])
    np.testing.assert_array_equal(np.asarray(ph["train"][1]["photo"])[..., 0], arrays["edge", "train"][1])


def test_qmul_v1_axis_order_ambiguous_unless_annotated_or_stated(tmp_path):
    folder = tmp_path / "shoes"
    # equal train and test counts: (3, 8, 8) read in MATLAB order is 8 images of 3 x 8, which fits too
    arrays = make_v1(folder, n=(3, 3), annotation=False)
    with pytest.raises(
        ValueError, match=r"shoes_\w+_db_\w+\.mat holds 'data' of shape \(3, 8, 8\).*pass axes="
    ):
        load_fgsbir(folder)
    sk = load_fgsbir(folder, axes="nhw")
    np.testing.assert_array_equal(np.asarray(sk["train"][0]["sketch"]), arrays["sketch", "train"][0])
    # an annotation file listing 5 sketches per split fits neither reading, so it does not choose
    (folder / "shoes_annotation.json").write_text(
        json.dumps({s: {"triplets": [[[0, 1]]] * 5} for s in ("train", "test")})
    )
    with pytest.raises(ValueError, match=r"nor shoes_annotation\.json tell which; pass axes="):
        load_fgsbir(folder)
    # the annotation file lists 3 sketches per split, which singles out numpy order
    (folder / "shoes_annotation.json").write_text(
        json.dumps({s: {"triplets": [[[0, 1]]] * 3} for s in ("train", "test")})
    )
    assert ids(load_fgsbir(folder)["test"], "sketch_id")[-1] == "shoes_test_2_sketch"
    with pytest.raises(ValueError, match="axes must be one of"):
        load_fgsbir(folder, axes="whn")


def test_qmul_v1_files_that_fit_no_order(tmp_path):
    folder = tmp_path / "shoes"
    make_v1(folder, annotation=False)
    savemat(folder / "shoes_sketch_db_test.mat", {"data": np.zeros((3, 8, 9), np.uint8) + 7})
    with pytest.raises(
        ValueError, match=r"shoes_sketch_db_train\.mat holds sketch images of 8 x 8 pixels but"
    ):
        load_fgsbir(folder)


# --------------------------------------------------------------------------- stroke pickles


def test_protocol_2_stroke_pickle_loads(tmp_path):
    strokes = {"/train/a_1": zigzag(40), "/train/b_1": zigzag(7, 3.0), "/test/c_1": zigzag(12, -4.0)}
    root = tmp_path / "v2"
    make_v2(root, {}, ["a", "b", "c"])
    blob = pickle.dumps(strokes, protocol=2)
    assert "_codecs encode" in {arg for op, arg, _ in pickletools.genops(blob) if op.name == "GLOBAL"}
    (root / "ChairV2_Coordinate").write_bytes(blob)
    out = load_numpy_pickle(root / "ChairV2_Coordinate")
    for key, value in strokes.items():
        np.testing.assert_array_equal(out[key], value)
    assert len(load_fgsbir(root)["train"]) == 2


def test_codecs_encode_is_allowed_only_as_protocol_2_writes_it():
    good = pickle.dumps(b"\x00\xff", protocol=2)
    assert load_numpy_pickle(good) == b"\x00\xff"
    other_codec = good.replace(b"latin1", b"rot_13")
    with pytest.raises(ValueError, match=r"_codecs\.encode with \(str, 'rot_13'\)"):
        load_numpy_pickle(other_codec)
    # other callables of the same module stay refused
    with pytest.raises(ValueError, match=r"asks to load '_codecs\.decode'"):
        load_numpy_pickle(good.replace(b"_codecs\nencode", b"_codecs\ndecode"))


def test_empty_arrays_load_from_protocol_2_and_bytes_takes_no_argument():
    # an empty stroke array (a blank sketch) has an empty buffer, which protocols 0-2 write as bytes()
    for protocol in (0, 1, 2):
        blob = pickle.dumps({"/train/a_1": np.zeros((0, 3))}, protocol=protocol)
        out = load_numpy_pickle(blob)
        assert out["/train/a_1"].shape == (0, 3) and out["/train/a_1"].dtype == np.float64
    # bytes(n) would allocate n bytes: only the bare call is allowed
    big = pickle.dumps(b"", protocol=2).replace(b")R", b"J\x00\x00\x00\x40\x85R")
    assert any(op.name == "BININT" for op, _, _ in pickletools.genops(big))
    with pytest.raises(ValueError, match=r"calls bytes with 1 argument\(s\)"):
        load_numpy_pickle(big)


# --------------------------------------------------------------------------- reader options


def test_unknown_reader_keyword_names_it_and_the_accepted_ones(tmp_path):
    folder = tmp_path / "shoes"
    make_v1(folder)
    with pytest.raises(
        ValueError, match=r"qmul_v1 reader does not take canvas, colour; it takes axes, category"
    ):
        load_fgsbir("shoes_v1", folder, canvas=64, colour=True)


# --------------------------------------------------------------------------- JSON files


@pytest.mark.parametrize(
    "text",
    [
        b"{not json",
        b"\xff\xfe{}",
        b"[1, 2]",
        json.dumps({"train": {"triplets": 5}, "test": {"triplets": []}}).encode(),
        json.dumps({"train": {"triplets": [7]}, "test": {"triplets": []}}).encode(),
        json.dumps({"train": {"triplets": [[[0, True]]]}, "test": {"triplets": []}}).encode(),
    ],
    ids=["syntax", "encoding", "list", "count", "sketch-entry", "bool-index"],
)
def test_broken_annotation_file_is_named(tmp_path, text):
    folder = tmp_path / "shoes"
    make_v1(folder, n=(3, 3), annotation=False)
    (folder / "shoes_annotation.json").write_bytes(text)
    with pytest.raises(
        ValueError, match=r"shoes_annotation\.json (is not valid JSON|has no|.*triplets of sketch)"
    ):
        read_triplets(folder, category="shoes")
    # the reader consults the file to tell the axis order of equal-sized splits
    with pytest.raises(ValueError, match=r"shoes_annotation\.json"):
        load_fgsbir(folder)


def test_broken_imagefolder_metadata_is_named(tmp_path):
    sketches = load_fgsbir(make_pairs_folder(tmp_path / "pf"))
    folder = export_imagefolder(sketches, tmp_path / "exported")
    metadata = folder / "train" / "metadata.jsonl"
    good = metadata.read_text()
    for bad, message in (
        (good + '{"sketch_id": \n', "is not valid JSON"),
        (good + "[1]\n", "is not a JSON object"),
    ):
        metadata.write_text(bad)
        n = len(good.splitlines()) + 1
        with pytest.raises(
            ValueError, match=rf"train/metadata\.jsonl line {n} {message}.*export the folder again"
        ):
            load_imagefolder(folder)


def test_split_file_that_is_not_text_is_named(tmp_path):
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("a", "b"), per_photo=1)
    (root / "train.txt").write_bytes(b"a\n\xff\xfe\x00b\n")
    (root / "test.txt").write_text("b\n")
    with pytest.raises(ValueError, match=r"train\.txt is not UTF-8 text .*; save it as plain text"):
        load_fgsbir(root)
    (root / "train.txt").write_bytes(b"\xef\xbb\xbfa\n")  # a byte-order mark is not part of the first id
    assert ids(load_fgsbir(root)["train"], "photo_id") == ["a"]


# --------------------------------------------------------------------------- image files


def jpeg_bytes(size=48, seed=0) -> bytes:
    buf = io.BytesIO()
    photo_image(seed, size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def scan_start(data: bytes) -> int:
    return data.index(b"\xff\xda")


def png_bytes(seed=0) -> bytes:
    buf = io.BytesIO()
    photo_image(seed, 24).save(buf, "PNG")
    return buf.getvalue()


def with_photo(tmp_path, name: str, data: bytes):
    """A pairs folder whose photo ``b`` is the file ``name`` holding ``data``."""
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("a", "b"), per_photo=1)
    (root / "photos" / "b.png").unlink()
    (root / "photos" / name).write_bytes(data)
    return root


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1 :]


PNG = png_bytes()
JPEG = jpeg_bytes()
IDAT = PNG.index(b"IDAT")
DETECTED = {
    # PIL stops reading at the end of the pixel data and skips the pixel chunks' CRCs
    "png-without-IEND": ("b.png", PNG[:-12], r"ends before its IEND chunk"),
    "png-idat-crc": (
        "b.png",
        flip(PNG, IDAT + 4 + int.from_bytes(PNG[IDAT - 4 : IDAT], "big") + 1),
        "'IDAT' chunk",
    ),
    # random bytes inside JPEG scan data that break its structure (not all do: see below)
    "jpeg-broken-scan": (
        "b.jpg",
        JPEG[: scan_start(JPEG) + 40]
        + np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()
        + JPEG[scan_start(JPEG) + 340 :],
        "broken data stream",
    ),
    "jpeg-truncated": ("b.jpg", JPEG[: len(JPEG) * 2 // 3], "truncated"),
}


@pytest.mark.parametrize("case", list(DETECTED))
def test_damaged_image_stops_the_load(tmp_path, case):
    name, data, message = DETECTED[case]
    root = with_photo(tmp_path, name, data)
    with pytest.raises(
        ValueError, match=rf"image .*b\.(png|jpg) cannot be read \(.*{message}.*\); replace it"
    ):
        load_fgsbir(root)
    with pytest.warns(LenientSkipWarning, match="1 corrupt_image"):
        assert ids(load_fgsbir(root, lenient=True)["train"], "photo_id") + ids(
            load_fgsbir(root, lenient=True)["test"], "photo_id"
        ) == ["a"]


@pytest.mark.parametrize("case", ["png-without-IEND", "jpeg-truncated"])
def test_truncation_is_caught_when_pil_is_told_to_load_truncated_images(tmp_path, monkeypatch, case):
    # Code elsewhere in a process often sets this flag, which makes PIL pad a truncated file quietly.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    name, data, _ = DETECTED[case]
    with pytest.raises(ValueError, match=r"b\.(png|jpg) cannot be read \(it ends before its"):
        load_fgsbir(with_photo(tmp_path, name, data))


def test_jpeg_damage_that_decodes_is_not_detected(tmp_path):
    # JPEG scan data has no checksum: zeroed bytes decode to wrong pixels without any error (the
    # README says so); this test pins the limit so that a change to it is noticed.
    start = scan_start(JPEG) + 60
    root = with_photo(tmp_path, "b.jpg", JPEG[:start] + bytes(32) + JPEG[start + 32 :])
    assert len(load_fgsbir(root, config="photos", test_fraction=0.0)["train"]) == 2


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_float_image_is_refused(tmp_path, value):
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("a", "b"), per_photo=1)
    pixels = np.full((16, 16), 255.0, np.float32)
    pixels[4:8, :] = value
    (root / "sketches" / "b_1.png").unlink()
    Image.fromarray(pixels, mode="F").save(root / "sketches" / "b_1.tif")
    with pytest.raises(
        ValueError, match=r"image .*b_1\.tif holds NaN or infinite pixel values.*; save it with"
    ):
        load_fgsbir(root)
    pixels[4:8, :] = 0.0  # the same file with finite values loads, as a black band on white
    Image.fromarray(pixels, mode="F").save(root / "sketches" / "b_1.tif")
    sketch = next(r["sketch"] for r in load_fgsbir(root, test_fraction=0.0)["train"] if r["photo_id"] == "b")
    assert np.asarray(sketch)[5].max() == 0 and np.asarray(sketch)[0].min() == 255


def tiny_model():
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", num_classes=0, pretrained=False).eval()


@pytest.mark.parametrize("pixels", [24 * 24, 32 * 32], ids=["warning", "error"])
def test_oversized_image_is_one_sentence(tmp_path, monkeypatch, pixels):
    # PIL warns above MAX_IMAGE_PIXELS and raises above twice that; both are refused, and the
    # warning is not left on the console.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # the other images have 16 x 16 = 256
    side = int(pixels**0.5)
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("a", "b"), per_photo=1)
    photo_image(5, side).save(root / "photos" / "b.png")
    expected = rf"image .*b\.png is too large to decode safely \({pixels} pixels over PIL\.Image\.MAX_IMAGE_PIXELS = 300\); resize it to at most 300 pixels"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping the check fails the test
        with pytest.raises(ValueError, match=expected):
            load_fgsbir(root)
        with pytest.raises(ValueError, match=expected):
            # b.png alone: under this test's tiny limit, a model-sized crop of a.png would be over it too
            embed_files(tiny_model(), [root / "photos" / "b.png"], "photo")
    log = SkipLog()
    with pytest.warns(LenientSkipWarning):
        load_fgsbir(root, lenient=True, skip_log=log)
    assert log.counts["image_too_large"] == 1


def test_embedding_refuses_what_the_loader_refuses(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    photo_image(0, 24).save(folder / "ok.png")
    Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F").save(folder / "nan.tif")
    with pytest.raises(ValueError, match=r"image .*nan\.tif holds NaN or infinite pixel values"):
        embed_files(tiny_model(), list_images(folder), "photo", batch_size=4)
    (folder / "nan.tif").write_bytes(PNG[:-12])
    with pytest.raises(ValueError, match=r"image .*nan\.tif cannot be read"):
        embed_files(tiny_model(), list_images(folder), "photo", batch_size=4)


# --------------------------------------------------------------------------- symlinks


def test_symlinked_images_are_read_and_named_by_their_place_in_the_folder(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    photo_image(7).save(outside / "target_photo.png")
    sketch_image(3).save(outside / "target_sketch.png")
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("a", "b"), per_photo=1)
    (root / "photos" / "c.png").symlink_to(outside / "target_photo.png")
    (root / "sketches" / "c_1.png").symlink_to(outside / "target_sketch.png")
    sk, ph = load_fgsbir_pair(root, test_fraction=0.0)
    assert "c" in ids(ph["train"], "photo_id") and "c_1" in ids(sk["train"], "sketch_id")
    # index build and embed list the same folder the same way: by the link's place, not its target
    files = list_images(root / "photos")
    assert [p.relative_to(root / "photos").as_posix() for p in files] == ["a.png", "b.png", "c.png"]


def test_dangling_symlink_is_named_before_any_work(tmp_path):
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("a", "b"), per_photo=1)
    (root / "photos" / "c.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(
        ValueError, match=r"photos/c\.png is a symlink to .*gone\.png, which is not a file; fix or delete"
    ):
        list_images(root / "photos")
    # the readers list it too, so it is reported instead of silently missing
    with pytest.raises(ValueError, match=r"image .*photos/c\.png cannot be read \(FileNotFoundError"):
        load_fgsbir(root)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_image_is_named_before_any_work(tmp_path):
    root = make_pairs_folder(tmp_path / "pf", photo_ids=("a", "b"), per_photo=1)
    (root / "photos" / "b.png").chmod(0)
    with pytest.raises(ValueError, match=r"b\.png cannot be opened for reading; fix its permissions"):
        list_images(root / "photos")
