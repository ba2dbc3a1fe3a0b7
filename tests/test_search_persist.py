"""GalleryIndex save/load: round trip, corrupted and truncated files, metadata mismatches."""

from __future__ import annotations

import datetime
import hashlib

import numpy as np
import pytest
import torch

faiss = pytest.importorskip("faiss")

from fgsbir_plugin.search import GalleryIndex, index_file  # noqa: E402


class TinyModel(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = torch.nn.Linear(3, 6)
        self.pretrained_cfg = {"architecture": "tiny_test_model"}


@pytest.fixture
def holef_index():
    rng = np.random.default_rng(0)
    d = 6
    W = rng.standard_normal((d, d))
    index = GalleryIndex(d, "holef", W=W, model=TinyModel(0))
    index.add(rng.standard_normal((50, d)), [f"photos/{i:03d}.jpg" for i in range(50)])
    index.remove(["photos/007.jpg"])
    return index, W, rng.standard_normal((8, d))


def test_round_trip_gives_identical_results(tmp_path, holef_index):
    index, W, queries = holef_index
    path = index.save(tmp_path / "g.index", extra={"photos_root": "/data/photos"})
    loaded = GalleryIndex.load(path, expect={"dim": 6, "metric": "holef", "W": W, "model": TinyModel(0)})
    assert len(loaded) == 49 and loaded.ids == index.ids and loaded.extra == {"photos_root": "/data/photos"}
    np.testing.assert_array_equal(loaded.W, W)
    d0, i0 = index.search(queries, 5)
    d1, i1 = loaded.search(queries, 5)
    np.testing.assert_array_equal(d0, d1)
    np.testing.assert_array_equal(i0, i1)
    loaded.add(np.zeros((1, 6)), ["new.jpg"])  # labels continue after the saved ones
    assert "new.jpg" in loaded and "photos/049.jpg" in loaded
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


@pytest.mark.parametrize("spec", ["HNSW16", "IVF4,Flat"])
def test_round_trip_keeps_search_params_and_scaling(tmp_path, spec):
    rng = np.random.default_rng(1)
    d = 8
    x = rng.standard_normal((300, d))
    params = {"efSearch": 33} if spec.startswith("HNSW") else {"nprobe": 3}
    index = GalleryIndex(d, "holef", W=np.eye(d) + 0.1 * rng.standard_normal((d, d)), spec=spec, **params)
    index.train(x)
    index.add(x)
    loaded = GalleryIndex.load(index.save(tmp_path / "a.index"))
    assert loaded.search_params == index.search_params and loaded.mips == "l2"
    np.testing.assert_array_equal(loaded.search(x[:5], 4)[1], index.search(x[:5], 4)[1])
    np.testing.assert_allclose(loaded.search(x[:5], 4)[0], index.search(x[:5], 4)[0])


def test_truncated_and_corrupted_files_are_detected(tmp_path, holef_index):
    index = holef_index[0]
    path = index.save(tmp_path / "g.index")
    data = path.read_bytes()
    bad = tmp_path / "bad.index"
    bad.write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        GalleryIndex.load(bad)
    bad.write_bytes(data[:30])
    with pytest.raises(ValueError, match="truncated|not a gallery index"):
        GalleryIndex.load(bad)
    body = 48 + int.from_bytes(data[8:16], "little")  # magic + length + sha256 + header
    for offset, what in [(len(data) - 10, "W section"), (body + 100, "faiss section"), (60, "header")]:
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match=f"corrupted.*{what.split()[0]}"):
            GalleryIndex.load(bad)
    bad.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(ValueError, match="not a gallery index file"):
        GalleryIndex.load(bad)
    bad.write_bytes(data + b"x")
    with pytest.raises(ValueError, match="trailing bytes"):
        GalleryIndex.load(bad)
    with pytest.raises(FileNotFoundError, match="no gallery index"):
        GalleryIndex.load(tmp_path / "missing.index")


def test_mismatches_are_clear_errors(tmp_path, holef_index):
    index, W, _ = holef_index
    path = index.save(tmp_path / "g.index")
    with pytest.raises(ValueError, match="built with dim 6, but 512 was expected"):
        GalleryIndex.load(path, expect={"dim": 512})
    with pytest.raises(ValueError, match="metric 'holef', but 'cosine'"):
        GalleryIndex.load(path, expect={"metric": "cosine"})
    other = W.copy()
    other[0, 1] += 1e-9
    with pytest.raises(ValueError, match="different HOLEF matrix W"):
        GalleryIndex.load(path, expect={"W": other})
    GalleryIndex.load(path, expect={"W": torch.from_numpy(W)})  # same values, other container: fine
    with pytest.raises(ValueError, match="other weights of model 'tiny_test_model'"):
        GalleryIndex.load(path, expect={"model": TinyModel(1)})
    with pytest.raises(ValueError, match="built with model 'tiny_test_model', not 'resnet18'"):
        GalleryIndex.load(path, expect={"model_name": "resnet18"})
    with pytest.raises(TypeError, match="unknown expect keys"):
        GalleryIndex.load(path, expect={"dims": 6})
    cos = GalleryIndex(6, "cosine")
    cos.add(np.ones((1, 6)))
    with pytest.raises(ValueError, match="has no W to compare"):
        GalleryIndex.load(cos.save(tmp_path / "c.index"), expect={"W": W})


class FixedModel(torch.nn.Module):
    """A model whose weights are written out, so its fingerprint never depends on an RNG."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)
        with torch.no_grad():
            self.proj.weight.copy_(torch.arange(12.0).reshape(4, 3) / 10)
            self.proj.bias.copy_(torch.tensor([0.5, -0.5, 0.25, 0.0]))
        self.pretrained_cfg = {"architecture": "tiny_fixed"}


class FixedClock(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


# sha256 of the files written for the fixed indexes below. Index files on disk hold exactly these
# bytes, so a writer that changes them makes those files unreadable or different: change the
# format only together with index_file.FORMAT_VERSION and a reader for the version before it.
WRITTEN_SHA256 = {
    "holef_ip": "f422597d80cc841018e044c42b429a110d0aa7cefc176cbc0d5f278a05bb10bd",
    "holef_l2": "b812109eba72e3f1bed03b2d235a173cb6935f57240fe4dca7b0f6d0f00b4fec",
    "cosine": "f756e3a1d8ac1d547930de3cb0b47dc8fdc8a0e5c2f34b372c88b773eb050605",
}


def test_written_bytes_are_those_of_the_file_format(tmp_path, monkeypatch):
    # the creation time and the faiss version are the only fields that vary between writers
    monkeypatch.setattr(index_file, "datetime", FixedClock)
    monkeypatch.setattr(faiss, "__version__", "0.0.0-test")
    d = 4
    p = (np.arange(24, dtype=np.float64).reshape(6, d) - 11) / 7
    W = np.eye(d) + 0.1 * (np.arange(16).reshape(d, d) % 5 - 2)
    holef_ip = GalleryIndex(d, "holef", W=W, model=FixedModel())
    holef_ip.add(p, [f"photos/{i}.png" for i in range(6)])
    holef_ip.remove(["photos/3.png"])
    holef_l2 = GalleryIndex(d, "holef", W=W, mips="l2")
    holef_l2.add(p)
    cosine = GalleryIndex(d, "cosine")
    cosine.add(p, np.array([5, 7, 9, 11, 13, 15]))
    written = {
        "holef_ip": holef_ip.save(tmp_path / "a.index", extra={"photos_root": "/data/photos"}),
        "holef_l2": holef_l2.save(tmp_path / "b.index"),
        "cosine": cosine.save(tmp_path / "c.index"),
    }
    assert {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in written.items()} == (
        WRITTEN_SHA256
    )


def test_load_checks_the_header_as_the_constructor_checks_arguments(tmp_path, holef_index):
    header, sections = index_file.read_index_file(holef_index[0].save(tmp_path / "g.index"))
    bad = tmp_path / "bad.index"
    stripped = {k: v for k, v in header.items() if k not in ("format_version", "kind", "created", "sections")}
    # checksums intact, settings wrong: the constructor refuses them as it refuses a caller's
    index_file.write_index_file(bad, {**stripped, "metric": "dot"}, list(sections.items()))
    with pytest.raises(ValueError, match="metric must be one of"):
        GalleryIndex.load(bad)
    index_file.write_index_file(bad, {**stripped, "index_dim": 99}, list(sections.items()))
    with pytest.raises(ValueError, match="corrupted: its faiss index does not match its header"):
        GalleryIndex.load(bad)
    index_file.write_index_file(bad, {**stripped, "size": 3}, list(sections.items()))
    with pytest.raises(ValueError, match="header says 3 photos, the index holds 49"):
        GalleryIndex.load(bad)
