"""fgsbir push-dataset: Parquet with embedded images + a dataset card, written in dry-run mode and read
back with datasets.load_dataset; the upload path against a stand-in HfApi. No network."""

from __future__ import annotations

import io

import huggingface_hub
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Dataset, DatasetDict, load_dataset
from PIL import Image

from fgsbir_cli import main
from fgsbir_plugin.data.export import load_parquet
from fgsbir_plugin.data.schema import PHOTO_FEATURES, SKETCH_FEATURES
from fgsbir_plugin.hub import build_dataset_folder, push_dataset, push_to_hub
from fgsbir_plugin.hub import dataset as hub_dataset

TOKEN = "hf_TESTsecretTOKEN0123456789abcdef"
REPO = "my-lab/tiny-fgsbir"


def _image(seed: int, size: int = 8) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def tiny_dataset(tmp_path=None):
    """Two splits; photos p0..p2 (train) and p3..p4 (test), two sketches per photo.

    With ``tmp_path`` the images are PNG files on disk that the Image column points at, as a
    reader over a folder of files produces; otherwise they are in memory.
    """

    def img(seed):
        if tmp_path is None:
            return _image(seed)
        path = tmp_path / "files" / f"{seed}.png"
        path.parent.mkdir(exist_ok=True)
        _image(seed).save(path)
        return str(path)

    sketches, photos = {}, {}
    for split, ids in (("train", range(3)), ("test", range(3, 5))):
        photos[split] = Dataset.from_dict(
            {
                "photo": [img(100 + i) for i in ids],
                "photo_id": [f"p{i}" for i in ids],
                "category": ["shoe"] * len(ids),
            },
            features=PHOTO_FEATURES,
        )
        rows = [(i, k) for i in ids for k in range(2)]
        sketches[split] = Dataset.from_dict(
            {
                "sketch": [img(10 * i + k) for i, k in rows],
                "sketch_id": [f"s{i}_{k}" for i, k in rows],
                "photo_id": [f"p{i}" for i, _ in rows],
                "category": ["shoe"] * len(rows),
            },
            features=SKETCH_FEATURES,
        )
    return {"sketches": DatasetDict(sketches), "photos": DatasetDict(photos)}


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _assert_same_rows(original: DatasetDict, loaded: DatasetDict, image_col: str):
    assert sorted(loaded) == sorted(original)
    for split in original:
        a, b = original[split], loaded[split]
        assert len(a) == len(b)
        for col in a.column_names:
            if col != image_col:
                assert b[col] == a[col]
        for x, y in zip(a[image_col], b[image_col]):
            assert np.array_equal(_pixels(x), _pixels(y))


@pytest.mark.parametrize("on_disk", [False, True])
def test_dry_run_folder_loads_back_with_datasets(tmp_path, on_disk):
    dicts = tiny_dataset(tmp_path if on_disk else None)
    out = build_dataset_folder(dicts, tmp_path / "out", repo_id=REPO, name="tiny")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "photos/test-00000-of-00001.parquet",
        "photos/train-00000-of-00001.parquet",
        "sketches/test-00000-of-00001.parquet",
        "sketches/train-00000-of-00001.parquet",
    ]
    if on_disk:  # the Parquet files must not depend on the image files they were made from
        for p in (tmp_path / "files").iterdir():
            p.unlink()
    table = pq.read_table(out / "sketches" / "train-00000-of-00001.parquet")
    cells = table.column("sketch").to_pylist()
    assert all(c["bytes"] for c in cells)
    assert Image.open(io.BytesIO(cells[0]["bytes"])).size == (8, 8)
    reference = tiny_dataset()  # the same pixels, held in memory
    for config, image_col in (("sketches", "sketch"), ("photos", "photo")):
        loaded = load_dataset(str(out), config, cache_dir=str(tmp_path / "cache"))
        assert loaded["train"].features == dicts[config]["train"].features
        _assert_same_rows(reference[config], loaded, image_col)


def test_dataset_card_declares_configs_and_rights(tmp_path):
    out = build_dataset_folder(
        tiny_dataset(), tmp_path / "out", repo_id=REPO, name="tiny", license="cc-by-nc-4.0"
    )
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert meta["license"] == "cc-by-nc-4.0"
    assert meta["configs"] == [
        {
            "config_name": "sketches",
            "default": True,
            "data_files": [
                {"split": "train", "path": "sketches/train-*.parquet"},
                {"split": "test", "path": "sketches/test-*.parquet"},
            ],
        },
        {
            "config_name": "photos",
            "data_files": [
                {"split": "train", "path": "photos/train-*.parquet"},
                {"split": "test", "path": "photos/test-*.parquet"},
            ],
        },
    ]
    assert "Publishing\n> them is only lawful for someone who holds the rights to do so" in card
    assert "| configuration | train | test |" in card
    assert "| `sketches` | 6 | 4 |" in card and "| `photos` | 3 | 2 |" in card
    assert f'load_dataset("{REPO}", "sketches")' in card
    sketches, photos = load_parquet(out)  # the card's other recipe
    assert sketches["test"]["sketch_id"] == ["s3_0", "s3_1", "s4_0", "s4_1"]
    assert photos["train"]["photo_id"] == ["p0", "p1", "p2"]
    assert "$" not in card.replace("$$", "")


def test_wrong_schema_or_splits_are_refused(tmp_path):
    dicts = tiny_dataset()
    bad = dict(
        dicts, photos=DatasetDict({s: d.rename_column("photo", "image") for s, d in dicts["photos"].items()})
    )
    with pytest.raises(ValueError, match="match neither the sketch nor the photo schema"):
        build_dataset_folder(bad, tmp_path / "a", repo_id=REPO, name="tiny")
    missing = dict(dicts, photos=DatasetDict({"train": dicts["photos"]["train"]}))
    with pytest.raises(ValueError, match="splits .* differ"):
        build_dataset_folder(missing, tmp_path / "b", repo_id=REPO, name="tiny")
    with pytest.raises(ValueError, match="exactly the configurations"):
        build_dataset_folder({"sketches": dicts["sketches"]}, tmp_path / "c", repo_id=REPO, name="tiny")
    assert not any(tmp_path.iterdir())


@pytest.fixture
def read_calls(monkeypatch):
    """`fgsbir push-dataset` reads the tiny dataset whatever --data names; the reader's arguments land here."""
    seen = {}

    def fake_load(name, data_dir, **kwargs):
        seen.update(name=name, data_dir=data_dir, kwargs=kwargs)
        return tiny_dataset()

    monkeypatch.setattr(hub_dataset, "_load_converted", fake_load)
    return seen


def test_cli_push_dataset_dry_run(tmp_path, read_calls, capsys):
    out = tmp_path / "out"
    argv = [
        "push-dataset",
        "--data",
        "shoev2",
        "--data-dir",
        str(tmp_path),
        "--repo-id",
        REPO,
        "--dry-run",
        str(out),
    ]
    assert main(argv) == 0
    assert read_calls["name"] == "shoev2" and str(read_calls["data_dir"]) == str(tmp_path)
    assert f"wrote the dataset folder for {REPO} to {out} (nothing uploaded)" in capsys.readouterr().out
    assert (out / "README.md").is_file() and (out / "sketches" / "train-00000-of-00001.parquet").is_file()


def test_cli_push_dataset_uploads_a_dataset_repo_without_showing_the_token(
    tmp_path, read_calls, fake_hub, capsys, monkeypatch
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["push-dataset", "--data", "shoev2", "--repo-id", REPO]) == 0
    api = fake_hub.api
    assert api.calls[0][0] == "create_repo" and api.calls[0][2]["repo_type"] == "dataset"
    upload = api.calls[-1][2]
    assert upload["repo_type"] == "dataset" and upload["repo_id"] == REPO
    assert upload["delete_patterns"] == ["sketches/*.parquet", "photos/*.parquet"]
    assert "README.md" in api.uploaded and "photos/test-00000-of-00001.parquet" in api.uploaded
    out = capsys.readouterr()
    assert f"pushed shoev2 to {REPO}: https://huggingface.co/datasets/{REPO}/commit/abc" in out.out
    assert TOKEN not in out.out + out.err


def test_push_dataset_without_a_token_is_one_sentence(tmp_path, read_calls, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["push-dataset", "--data", "shoev2", "--repo-id", REPO]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fgsbir push-dataset: error: no Hugging Face token found") and err.count("\n") == 1


def test_push_dataset_library_call_with_explicit_dicts(tmp_path):
    out = push_dataset("tiny", REPO, dicts=tiny_dataset(), dry_run=tmp_path / "out")
    assert out == str(tmp_path / "out")


def test_push_to_hub_uploads_what_load_dataset_reads_back(tmp_path, fake_hub):
    dicts = tiny_dataset()
    api = fake_hub.new_api(private=True)
    url = push_to_hub(dicts["sketches"], dicts["photos"], REPO, private=True, token=TOKEN, api=api)
    assert url == f"https://huggingface.co/datasets/{REPO}/commit/abc"
    (c_name, (c_repo,), c_kw), *_, (u_name, _, u_kw) = api.calls
    assert (c_name, c_repo, c_kw["repo_type"], c_kw["private"]) == ("create_repo", REPO, "dataset", True)
    assert (u_name, u_kw["repo_id"], u_kw["repo_type"]) == ("upload_folder", REPO, "dataset")
    assert f"# {REPO}" in (api.folder / "README.md").read_text()
    for config, image_col in (("sketches", "sketch"), ("photos", "photo")):
        loaded = load_dataset(str(api.folder), config, cache_dir=str(tmp_path / "cache"))
        _assert_same_rows(dicts[config], loaded, image_col)
    with pytest.raises(ValueError, match="owner/name"):
        push_to_hub(dicts["sketches"], dicts["photos"], "a/b/c", token=TOKEN, api=api)
