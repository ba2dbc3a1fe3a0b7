"""`fgsbir index build` and `fgsbir search` end to end with a tiny timm model and generated PNGs."""

from __future__ import annotations

import argparse
import re
import shutil

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

pytest.importorskip("faiss")

from fgsbir_cli.search import register  # noqa: E402
from fgsbir_plugin.embedding import embed_files, embedding_dim  # noqa: E402
from fgsbir_plugin.holef import HOLEFDistance  # noqa: E402
from fgsbir_plugin.model_io import load_model, save_model  # noqa: E402
from fgsbir_plugin.run_folder import RunFolder  # noqa: E402
from fgsbir_plugin.search import GalleryIndex  # noqa: E402


def run(argv: list[str]) -> int:
    """Parse ``argv`` as the ``fgsbir`` command line (the search commands only) and run it."""
    parser = argparse.ArgumentParser(prog="fgsbir")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def results(out: str) -> list[list[str]]:
    """The ``rank, distance, photo`` rows `fgsbir search` printed."""
    return [line.split("\t") for line in out.splitlines() if not line.startswith(("#", "wrote"))]


def make_run(folder, seed: int, holef: bool = False):
    """A run folder with a tiny timm trunk in model/ and, with ``holef``, a HOLEF W saved beside it."""
    torch.manual_seed(seed)
    model = timm.create_model("test_efficientnet", num_classes=0, pretrained=False).eval()
    save_model(model, RunFolder(folder).model_dir)
    if holef:
        d = embedding_dim(model)
        distance = HOLEFDistance.from_weight_matrix(torch.eye(d) + 0.05 * torch.randn(d, d))
        save_file(distance.state_dict(), str(RunFolder(folder).holef_path))
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_cli")
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        arr = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
        folder = photos / "sub" if i % 2 else photos
        Image.fromarray(arr).save(folder / f"photo_{i}.png")
    (photos / "notes.txt").write_text("not an image")
    return root, make_run(root / "run", seed=0), photos


@pytest.fixture(scope="module")
def cosine_index(workspace):
    """An index built from ``run`` with the flag spelling and an explicit --checkpoint."""
    root, run_dir, photos = workspace
    out = root / "gallery.index"
    argv = ["index", "build", "--checkpoint", str(run_dir), "--photos", str(photos), "--out", str(out)]
    assert run([*argv, "--batch-size", "4", "--device", "cpu"]) == 0
    return out


def test_build_then_search_finds_the_photo_itself(workspace, cosine_index, capsys):
    root, run_dir, photos = workspace
    header = GalleryIndex.read_header(cosine_index)
    assert (
        header["metric"] == "cosine" and header["size"] == 6 and header["model_name"] == "test_efficientnet"
    )
    assert header["extra"]["checkpoint"] == str(run_dir.resolve())
    index = GalleryIndex.load(cosine_index)
    assert sorted(index.ids) == sorted(
        ["photo_0.png", "photo_2.png", "photo_4.png", "sub/photo_1.png", "sub/photo_3.png", "sub/photo_5.png"]
    )
    capsys.readouterr()
    sheet = root / "sheet.png"
    query = photos / "sub" / "photo_3.png"
    argv = ["search", "--index", str(cosine_index), "--checkpoint", str(run_dir / "model")]
    assert (
        run([*argv, "--sketch", str(query), "-k", "3", "--contact-sheet", str(sheet), "--device", "cpu"]) == 0
    )
    rows = results(capsys.readouterr().out)
    assert len(rows) == 3
    rank, dist, path = rows[0]
    assert rank == "1" and path == str(query.resolve()) and abs(float(dist)) < 1e-5
    assert [float(row[1]) for row in rows] == sorted(float(row[1]) for row in rows)
    with Image.open(sheet) as im:
        assert im.size[0] == 4 * (160 + 8) + 8


def test_search_finds_the_model_from_the_index(workspace, cosine_index, capsys):
    _, run_dir, photos = workspace
    query = photos / "photo_4.png"
    capsys.readouterr()
    assert run(["search", str(cosine_index), str(query), "-k", "2", "--device", "cpu"]) == 0
    positional = capsys.readouterr().out
    assert run(["search", str(cosine_index), str(query), "-k", "2", "--checkpoint", str(run_dir)]) == 0
    assert capsys.readouterr().out == positional
    assert results(positional)[0][2] == str(query.resolve())


def test_holef_run_uses_its_own_W_and_rejects_other_weights(workspace, capsys):
    root, _, photos = workspace
    holef_run = make_run(root / "holef_run", seed=1, holef=True)
    other_run = make_run(root / "other_run", seed=2, holef=True)
    out = root / "holef.index"
    assert (
        run(["index", "build", "--checkpoint", str(holef_run), "--photos", str(photos), "--out", str(out)])
        == 0
    )
    index = GalleryIndex.load(out)
    W = load_file(str(RunFolder(holef_run).holef_path))["weight"].double().numpy()
    assert index.metric == "holef"  # --metric auto finds the HOLEF W saved beside model/
    np.testing.assert_array_equal(index.W, W)
    query = photos / "photo_2.png"
    capsys.readouterr()
    assert run(["search", str(out), str(query), "-k", "6", "--device", "cpu"]) == 0
    rows = results(capsys.readouterr().out)
    # the printed distances are the HOLEF energies of the model's own embeddings, in rank order
    trunk = load_model(RunFolder(holef_run).model_dir)
    files = sorted(photos.rglob("*.png"))
    p = embed_files(trunk, files, "photo").numpy().astype(np.float64)
    s = embed_files(trunk, [query], "sketch").numpy().astype(np.float64)
    D = (s * s) @ W.sum(1) + (p * p) @ W.sum(0) - 2 * (s @ W @ p.T)[0]
    expected = {str(f.resolve()): d for f, d in zip(files, D)}
    assert [path for _, _, path in rows] == [str(files[i].resolve()) for i in np.argsort(D)]
    for _, dist, path in rows:
        assert float(dist) == pytest.approx(expected[path], rel=1e-4, abs=1e-4 * np.abs(D).max())
    with pytest.raises(ValueError, match="other weights"):
        run(["search", str(out), str(query), "--checkpoint", str(other_run)])


def test_moved_model_folder_is_a_clear_error_and_checkpoint_overrides(workspace, capsys):
    root, run_dir, photos = workspace
    moving = root / "moving_run"
    shutil.copytree(run_dir, moving)
    out = root / "moving.index"
    assert (
        run(["index", "build", "--checkpoint", str(moving), "--photos", str(photos), "--out", str(out)]) == 0
    )
    moved = shutil.move(moving, root / "moved_run")
    query = photos / "photo_0.png"
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"built from {moving}, which is no longer there; pass --checkpoint"),
    ):
        run(["search", str(out), str(query)])
    capsys.readouterr()
    assert run(["search", str(out), str(query), "-k", "1", "--checkpoint", str(moved)]) == 0
    assert results(capsys.readouterr().out)[0][2] == str(query.resolve())


def test_index_without_a_recorded_model_needs_checkpoint(workspace, tmp_path):
    _, _, photos = workspace
    out = tmp_path / "api.index"
    index = GalleryIndex(4)
    index.add(np.eye(4))
    index.save(out)
    with pytest.raises(
        ValueError, match="does not record the run or model folder it was built from; pass --checkpoint"
    ):
        run(["search", str(out), str(photos / "photo_0.png")])


def test_rebuild_takes_model_photos_and_settings_from_the_index(workspace, tmp_path):
    root, run_dir, photos = workspace
    out = tmp_path / "hnsw.index"
    argv = ["index", "build", "--checkpoint", str(run_dir), "--photos", str(photos), "--out", str(out)]
    assert run([*argv, "--spec", "HNSW8", "--ef-search", "40"]) == 0
    first = GalleryIndex.read_header(out)
    (photos / "sub" / "photo_1.png").rename(tmp_path / "removed.png")
    try:
        assert run(["index", "build", "--out", str(out)]) == 0
    finally:
        (tmp_path / "removed.png").rename(photos / "sub" / "photo_1.png")
    rebuilt = GalleryIndex.read_header(out)
    assert rebuilt["size"] == 5 and rebuilt["spec"] == "HNSW8" and rebuilt["metric"] == "cosine"
    assert rebuilt["search_params"] == first["search_params"] == {"efSearch": 40, "efConstruction": 200}
    assert rebuilt["extra"] == first["extra"] and rebuilt["model_fingerprint"] == first["model_fingerprint"]
    with pytest.raises(ValueError, match="there is no index at .* to take them from"):
        run(["index", "build", "--out", str(tmp_path / "new.index")])


def test_cli_user_errors(workspace, cosine_index):
    root, run_dir, photos = workspace
    build = ["index", "build", "--out", str(root / "x.index")]
    with pytest.raises(ValueError, match="needs a model with a learned HOLEF distance"):
        run([*build, "--checkpoint", str(run_dir), "--photos", str(photos), "--metric", "holef"])
    with pytest.raises(FileNotFoundError, match="image folder"):
        run([*build, "--checkpoint", str(run_dir), "--photos", str(root / "nope")])
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        run([*build, "--checkpoint", str(root / "nope"), "--photos", str(photos)])
    assert not (root / "x.index").exists()
    sketch = str(photos / "photo_0.png")
    with pytest.raises(ValueError, match="search needs the sketch"):
        run(["search", str(cosine_index)])
    with pytest.raises(ValueError, match="give the index once"):
        run(["search", str(cosine_index), sketch, "--index", str(root / "other.index")])
    with pytest.raises(FileNotFoundError, match="sketch .* does not exist"):
        run(["search", str(cosine_index), str(root / "nope.png")])
    with pytest.raises(ValueError, match="-k must be positive"):
        run(["search", str(cosine_index), sketch, "-k", "0"])
    with pytest.raises(IsADirectoryError, match="is a folder; pass one sketch image file"):
        run(["search", str(cosine_index), str(photos)])
    with pytest.raises(ValueError, match="must end in .png"):
        run(["search", str(cosine_index), sketch, "--contact-sheet", str(root / "sheet.jpg")])
    assert not (root / "sheet.jpg").exists()


def test_the_contact_sheet_names_each_photo_and_cuts_a_long_name_from_its_start(tmp_path, monkeypatch):
    from PIL import ImageDraw

    from fgsbir_cli.search import write_contact_sheet

    drawn = []
    real_text = ImageDraw.ImageDraw.text

    def text(self, xy, string, *args, **kwargs):
        drawn.append((string, self.textlength(string)))
        return real_text(self, xy, string, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
    long_name = "a_very_long_product_photo_file_name_from_a_shop_catalogue_0042.png"
    paths = []
    for name in ("sketch.png", "short.png", long_name):
        Image.new("RGB", (40, 30), "gray").save(tmp_path / name)
        paths.append(tmp_path / name)
    out = write_contact_sheet(paths[0], [(paths[1], 0.25), (paths[2], 0.5)], tmp_path / "sheet.png")
    strings = [s for s, _ in drawn]
    assert strings[:4] == ["sketch", "sketch.png", "#1 0.25", "short.png"]
    assert strings[4] == "#2 0.5" and strings[5].startswith("...") and long_name.endswith(strings[5][3:])
    assert len(strings[5]) < len(long_name) and drawn[5][1] <= 160
    with Image.open(out) as im:
        assert im.size == (3 * (160 + 8) + 8, 160 + 2 * 14 + 20)


def test_a_spec_faiss_refuses_fails_before_any_photo_is_embedded(workspace, tmp_path, monkeypatch):
    import fgsbir_plugin.embedding as embedding

    def no_embedding(*args, **kwargs):
        raise AssertionError("the photos were embedded before the spec was checked")

    monkeypatch.setattr(embedding, "embed_files", no_embedding)
    _, run_dir, photos = workspace
    argv = [
        "index",
        "build",
        "--checkpoint",
        str(run_dir),
        "--photos",
        str(photos),
        "--out",
        str(tmp_path / "x"),
    ]
    with pytest.raises(
        ValueError,
        match=r"faiss cannot build index spec 'Bogus' for \d+-d embeddings: could not parse index string Bogus;",
    ):
        run([*argv, "--spec", "Bogus"])
    assert not (tmp_path / "x").exists()


def test_a_symlinked_photo_is_indexed_by_its_place_in_the_folder(workspace, tmp_path, capsys):
    _, run_dir, photos = workspace
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(outside / "target.png")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "link.png").symlink_to(outside / "target.png")
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(linked / "plain.png")
    out = tmp_path / "linked.index"
    argv = ["index", "build", "--checkpoint", str(run_dir), "--photos", str(linked), "--out", str(out)]
    assert run([*argv, "--device", "cpu"]) == 0
    assert sorted(GalleryIndex.load(out).ids) == ["link.png", "plain.png"]
    capsys.readouterr()
    assert run(["search", str(out), str(outside / "target.png"), "-k", "1", "--device", "cpu"]) == 0
    rank, dist, path = results(capsys.readouterr().out)[0]
    assert path == str(linked.resolve() / "link.png") and abs(float(dist)) < 1e-5
