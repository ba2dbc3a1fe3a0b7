"""GalleryIndex save/load: round trip, corrupted and truncated files, metadata mismatches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")

from fgsbir_plugin.search import GalleryIndex  # noqa: E402


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
