"""fgsbir push --space: the dry-run folder runs as a Space (its app.py builds the page and searches the
copied gallery), the card's front matter, the upload as a Space repo through the Hub stand-in of
conftest.py, and the argument errors. Nothing here touches the network."""

from __future__ import annotations

import json
import runpy

import pytest
import yaml
from _app_fixtures import png_bytes, tiny_dssa, write_gallery

from fgsbir_cli import main
from fgsbir_plugin.app import PageLogic, SearchService
from fgsbir_plugin.hub.space import APP_PY, build_space_folder, default_requirement, push_space

pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'fgsbir-plugin[app]'")

REPO = "my-lab/sketch-search"
TOKEN = "hf_TESTsecretTOKEN0123456789abcdef"


@pytest.fixture
def run_and_gallery(tmp_path):
    """A run folder (model/ + run_config.json) and a gallery index built with its model."""
    index, examples = write_gallery(tmp_path / "g", tiny_dssa())
    run = tmp_path / "g" / "run"
    (run / "run_config.json").write_text(
        json.dumps({"model": "dssa", "loss": "holef", "dataset": "synthetic"})
    )
    return run, index, examples


def test_dry_run_writes_a_space_that_runs(run_and_gallery, tmp_path, monkeypatch):
    run, index, examples = run_and_gallery
    out = tmp_path / "space"
    assert push_space(run, REPO, index=index, dry_run=out) == str(out)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "app.py", "gallery.index", "model", "photos", "requirements.txt"]
    assert sorted(p.name for p in (out / "model").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert len(list((out / "photos").iterdir())) == 20
    assert (out / "requirements.txt").read_text() == default_requirement() + "\n"
    assert (out / "app.py").read_text() == APP_PY
    # the copied gallery records its own folders, so the Space needs nothing outside itself
    header = SearchService.from_files(out / "gallery.index", out / "model", device="cpu").index.extra
    assert header == {"photos_root": "photos", "checkpoint": "model"}
    # app.py, as the Space runs it, builds a page whose search gives what the original gallery gives
    module = runpy.run_path(str(out / "app.py"), run_name="space_app")
    assert type(module["demo"]).__name__ == "Blocks"
    original = SearchService.from_files(index, device="cpu")
    copied = SearchService.from_files(
        out / "gallery.index", out / "model", device="cpu", photos_root=out / "photos"
    )
    sketch = examples[0][0]
    assert copied.search(sketch, 5).ids == original.search(sketch, 5).ids
    assert (
        copied.photo_path(copied.index.ids[0]).read_bytes()
        == original.photo_path(copied.index.ids[0]).read_bytes()
    )


def test_space_card_front_matter(run_and_gallery, tmp_path):
    run, index, _ = run_and_gallery
    out = build_space_folder(run, tmp_path / "space", repo_id=REPO, index=index, license="mit")
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["license"] == "mit"
    assert meta["title"] == "sketch-search" and meta["sdk_version"]
    assert 'client = Client("my-lab/sketch-search")' in card and "20 photos" in card and "holef" in card


def test_requirement_can_point_elsewhere(run_and_gallery, tmp_path):
    run, index, _ = run_and_gallery
    spec = "fgsbir-plugin[app] @ git+https://github.com/me/fgsbir-plugin@v0.1.0"
    out = build_space_folder(run, tmp_path / "space", repo_id=REPO, index=index, requirement=spec)
    assert (out / "requirements.txt").read_text() == spec + "\n"


def test_index_of_another_model_is_refused(run_and_gallery, tmp_path):
    run, _, _ = run_and_gallery
    other, _ = write_gallery(tmp_path / "other", tiny_dssa(seed=1))
    with pytest.raises(ValueError, match="model"):
        build_space_folder(run, tmp_path / "space", repo_id=REPO, index=other)
    assert not (tmp_path / "space").exists()


def test_missing_photos_are_named(run_and_gallery, tmp_path):
    run, index, _ = run_and_gallery
    (index.parent / "photos" / "p3.png").unlink()
    with pytest.raises(ValueError, match=r"1 of the 20 photos .* \(first: 'p3.png'\); pass --photos"):
        build_space_folder(run, tmp_path / "space", repo_id=REPO, index=index)
    assert not (tmp_path / "space").exists()


def test_push_uploads_a_gradio_space(run_and_gallery, tmp_path, fake_hub, monkeypatch, capsys):
    run, index, _ = run_and_gallery
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    argv = ["push", "--checkpoint", str(run), "--repo-id", REPO, "--space", "--index", str(index)]
    assert main(argv) == 0
    calls = {name: kw for name, _, kw in fake_hub.api.calls}
    args = {name: a for name, a, _ in fake_hub.api.calls}
    assert calls["create_repo"]["repo_type"] == "space" and calls["create_repo"]["space_sdk"] == "gradio"
    assert calls["file_exists"]["repo_type"] == "space" and args["file_exists"] == (REPO, "app.py")
    assert (
        calls["upload_folder"]["repo_type"] == "space"
        and "photos/**" in calls["upload_folder"]["delete_patterns"]
    )
    assert {"app.py", "requirements.txt", "gallery.index", "model/model.safetensors"} <= set(
        fake_hub.api.uploaded
    )
    out = capsys.readouterr()
    assert f"to the Space {REPO}" in out.out and TOKEN not in out.out + out.err
    fake_hub.options = {"exists": True}
    assert main(argv) == 2
    assert f"{REPO} already holds a published space; pass --overwrite" in capsys.readouterr().err


def test_space_arguments_go_together(run_and_gallery, tmp_path, capsys):
    run, index, _ = run_and_gallery
    base = ["push", "--checkpoint", str(run), "--repo-id", REPO, "--dry-run", str(tmp_path / "x")]
    assert main([*base, "--space"]) == 2
    assert "--space needs --index GALLERY.index" in capsys.readouterr().err
    assert main([*base, "--index", str(index)]) == 2
    assert "--index go with --space" in capsys.readouterr().err
    assert main([*base, "--space", "--index", str(index)]) == 0
    assert "wrote the Space folder" in capsys.readouterr().out


def test_space_page_searches_an_upload(run_and_gallery, tmp_path):
    run, index, examples = run_and_gallery
    out = build_space_folder(run, tmp_path / "space", repo_id=REPO, index=index)
    service = SearchService.from_files(
        out / "gallery.index", out / "model", device="cpu", photos_root=out / "photos"
    )
    answer = PageLogic(service).api_search(png_bytes(examples[1][0]), 3)
    assert answer["metric"] == "holef" and [r["rank"] for r in answer["results"]] == [1, 2, 3]
