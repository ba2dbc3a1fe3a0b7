"""Crafted gallery index files whose checksums are valid but whose header is not what the writer
makes: each is refused with one sentence naming the file, by ``load`` and ``read_header`` alike."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest

pytest.importorskip("faiss")

from fgsbir_plugin.search import GalleryIndex, index_file  # noqa: E402


def write_raw(path, header_bytes: bytes, sections: list[bytes]):
    """The file layout with a correct header checksum around any header bytes."""
    path.write_bytes(
        index_file.MAGIC
        + struct.pack("<Q", len(header_bytes))
        + hashlib.sha256(header_bytes).digest()
        + header_bytes
        + b"".join(sections)
    )
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(header, [faiss bytes, W bytes]) of a small HOLEF index with string ids."""
    index = GalleryIndex(4, "holef", W=np.eye(4) + 0.1)
    index.add(np.random.default_rng(0).normal(size=(5, 4)), [f"p{i}.png" for i in range(5)])
    header, sections = index_file.read_index_file(index.save(tmp_path_factory.mktemp("ix") / "g.index"))
    return header, [sections["faiss"], sections["W"]]


def without(header, key):
    return {k: v for k, v in header.items() if k != key}


CASES = {
    "no-sections": (lambda h: without(h, "sections"), "'sections' is not a list"),
    "sections-not-list": (lambda h: {**h, "sections": {"faiss": 1}}, "'sections' is not a list"),
    "section-without-sha": (
        lambda h: {**h, "sections": [without(s, "sha256") for s in h["sections"]]},
        "'sections' is not a list",
    ),
    "no-W-section": (
        lambda h: {**h, "sections": h["sections"][:1]},
        r"sections \['faiss'\], not \['W', 'faiss'\]",
    ),
    "W-wrong-size": (
        lambda h: {**h, "sections": [h["sections"][0], {**h["sections"][1], "nbytes": 8}]},
        "W section of 8 bytes",
    ),
    "dim-text": (lambda h: {**h, "dim": "4"}, "'dim' is not a positive integer"),
    "no-metric": (lambda h: without(h, "metric"), "no 'metric'"),
    "search-params-list": (lambda h: {**h, "search_params": [1]}, "'search_params' is not an object"),
    "names-short": (lambda h: {**h, "names": h["names"][:2]}, "'labels' and 'names'"),
    "extra-list": (lambda h: {**h, "extra": ["photos"]}, "'extra' is not an object"),
    "alpha-nan": (lambda h: {**h, "holef_alpha": float("nan")}, "'holef_alpha' is not a finite number"),
    "foreign-kind": (lambda h: {**h, "kind": "something.else"}, "'kind' is not"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_header_with_valid_checksum(tmp_path, saved, case):
    header, sections = saved
    change, message = CASES[case]
    crafted = change(header)
    if case == "W-wrong-size":
        sections = [sections[0], sections[1][:8]]
    path = write_raw(tmp_path / "crafted.index", json.dumps(crafted).encode(), sections)
    for read in (GalleryIndex.load, GalleryIndex.read_header):
        with pytest.raises(ValueError, match=rf"crafted\.index has a malformed header \(.*{message}"):
            read(path)


@pytest.mark.parametrize("header_bytes", [b"[1, 2, 3]", b"\xff\xfe not utf-8", b'{"format_version": 1,'])
def test_header_that_is_not_a_json_object(tmp_path, saved, header_bytes):
    path = write_raw(tmp_path / "crafted.index", header_bytes, saved[1])
    with pytest.raises(ValueError, match=r"crafted\.index has a header that is not a JSON object"):
        GalleryIndex.load(path)


def test_well_formed_header_still_loads(tmp_path, saved):
    header, sections = saved
    path = write_raw(tmp_path / "same.index", json.dumps(header).encode(), sections)
    assert GalleryIndex.load(path).ids == [f"p{i}.png" for i in range(5)]
