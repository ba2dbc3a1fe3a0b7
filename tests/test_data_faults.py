"""Damaged, crafted or surprising input on the data side: each case stops with one sentence naming
the file and the fix, or is read correctly; none gives a traceback or a silently wrong dataset."""

from __future__ import annotations

import json
import pickle
import pickletools

import numpy as np
import pytest
from scipy.io import loadmat, savemat
from test_data_readers import ids, make_v1, make_v2, zigzag

from fgsbir_plugin.data import load_fgsbir, load_fgsbir_pair
from fgsbir_plugin.data.qmul_v1 import read_triplets
from fgsbir_plugin.data.safe_pickle import load_numpy_pickle

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
