"""fgsbir push: the dry-run folder, loading it back through timm (local-dir: and hf-hub:), the card,
and the upload path against a stand-in for the Hub API. Nothing here touches the network."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
import timm
import torch
import yaml
from datasets import Dataset, DatasetDict
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from PIL import Image, ImageDraw
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from fgsbir_cli import main
from fgsbir_plugin.data.schema import PHOTO_FEATURES, SKETCH_FEATURES
from fgsbir_plugin.holef import HOLEFDistance, holef_distance_matrix
from fgsbir_plugin.hub import PublishError, build_model_folder, push_model, read_run_folder, render_model_card
from fgsbir_plugin.model_io import load_model, save_model
from fgsbir_plugin.train.config import TrainConfig
from fgsbir_plugin.train.engine import train
from fgsbir_plugin.train.evaluate import run_eval

TOKEN = "hf_TESTsecretTOKEN0123456789abcdef"
REPO = "my-lab/tiny-sbir"
EVAL = {
    "metrics": {
        "acc@1": 37.25,
        "acc@5": 71.5,
        "acc@10": 88.125,
        "mAP": 48.1337,
        "mean_rank": 6.42,
        "median_rank": 3.0,
    },
    "dataset": "chairv2",
    "split": "test",
    "num_queries": 323,
    "num_gallery": 100,
    "checkpoint": "/home/someone/runs/x/model",
    "device": "CPU: 2-core sandbox",
    "date": "2026-11-25T17:00:00Z",
    "commit": "0123456789abcdef0123456789abcdef01234567",
    "command": "fgsbir eval --checkpoint runs/x --data chairv2 --split test",
    "model_name": "fgsbir_hubtest_tiny",
}
RUN_CONFIG = {
    "model": "fgsbir_hubtest_tiny",
    "dataset": "chairv2",
    "loss": "triplet",
    "epochs": 3,
    "seed": 7,
    "data_dir": "/home/someone/private/data",
}


# --- a tiny timm model, registered for these tests only ------------------------------------------


class TinyEmbedder(nn.Module):
    """image [B, C, 16, 16] -> embedding [B, head_hidden_size]; ``holef=True`` adds ``self.distance``.

    ``num_features`` is the conv trunk's channel count; ``embed_dim`` (default: the same) the width of
    the projected embedding, declared as timm's ``head_hidden_size`` when it differs.
    """

    def __init__(
        self,
        num_features: int = 8,
        in_chans: int = 3,
        num_classes: int = 0,
        holef: bool = False,
        global_pool: str = "avg",
        embed_dim: int | None = None,
    ):
        super().__init__()
        self.in_chans, self.num_classes, self.num_features = in_chans, num_classes, num_features
        self.global_pool = global_pool
        width = embed_dim or num_features
        if embed_dim is not None:
            self.head_hidden_size = embed_dim
        self.conv = nn.Conv2d(in_chans, num_features, 3, padding=1)
        self.proj = nn.Linear(num_features, width)
        if holef:
            self.distance = HOLEFDistance(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.relu(self.conv(x)).mean((2, 3)))


default_cfgs = generate_default_cfgs(
    {
        "fgsbir_hubtest_tiny.untrained": {
            "url": "",
            "num_classes": 0,
            "input_size": (3, 16, 16),
            "mean": (0.5, 0.5, 0.5),
            "std": (0.25, 0.25, 0.25),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "first_conv": "conv",
        }
    }
)


@register_model
def fgsbir_hubtest_tiny(pretrained=False, **kwargs):
    return build_model_with_cfg(TinyEmbedder, "fgsbir_hubtest_tiny", pretrained, **kwargs)


def make_run(root, *, holef=False, name="run", run_config=None):
    torch.manual_seed(0)
    model = timm.create_model("fgsbir_hubtest_tiny", holef=holef).eval()
    if holef:
        with torch.no_grad():  # a W far from any default, so a lost W cannot pass unnoticed
            for p in model.distance.parameters():
                p.copy_(torch.randn_like(p))
    run = root / name
    save_model(model, run / "model")
    (run / "run_config.json").write_text(json.dumps(run_config or RUN_CONFIG))
    (run / "eval_test.json").write_text(json.dumps(EVAL))
    return run, model


@pytest.fixture
def no_login(tmp_path, monkeypatch):
    """No token anywhere: neither HF_TOKEN nor a stored login is visible."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)


def _inputs(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randn(n + 1, 3, 16, 16, generator=g)


# --- the folder and loading it back -------------------------------------------------------------


@pytest.mark.parametrize("holef", [False, True])
def test_dry_run_writes_the_timm_folder(tmp_path, holef):
    run, model = make_run(tmp_path, holef=holef)
    out = tmp_path / "out"
    assert push_model(run, REPO, dry_run=out) == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "fgsbir_hubtest_tiny"
    assert config["model_args"]["holef"] is holef
    assert config["pretrained_cfg"]["input_size"] == [3, 16, 16]
    assert config["num_features"] == 8
    assert not list(tmp_path.glob(".out.*")), "the temporary build folder was left behind"


@pytest.mark.parametrize("holef", [False, True])
def test_local_dir_load_gives_bit_identical_embeddings(tmp_path, holef):
    run, model = make_run(tmp_path, holef=holef)
    out = build_model_folder(run, tmp_path / "out", repo_id=REPO)
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    s, p = _inputs()
    with torch.no_grad():
        assert torch.equal(model(s), loaded(s))
        assert torch.equal(model(p), loaded(p))
    if holef:
        original = {k: v for k, v in model.state_dict().items() if k.startswith("distance.")}
        restored = {k: v for k, v in loaded.state_dict().items() if k.startswith("distance.")}
        assert original and original.keys() == restored.keys()
        assert all(torch.equal(original[k], restored[k]) for k in original)


def test_local_dir_load_gives_identical_holef_distances(tmp_path):
    run, model = make_run(tmp_path, holef=True)
    out = build_model_folder(run, tmp_path / "out", repo_id=REPO)
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    s, p = _inputs()
    with torch.no_grad():
        d0 = holef_distance_matrix(model(s), model(p), model.distance.weight_matrix())
        d1 = holef_distance_matrix(loaded(s), loaded(p), loaded.distance.weight_matrix())
        assert torch.equal(
            model.distance.compute_mat(model(s), model(p)), loaded.distance.compute_mat(loaded(s), loaded(p))
        )
    assert d0.shape == (4, 5)
    assert torch.equal(d0, d1)


def test_real_dssa_model_round_trips(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("dssa").eval()
    run = tmp_path / "run"
    save_model(model, run / "model")
    (run / "run_config.json").write_text(json.dumps({**RUN_CONFIG, "model": "dssa"}))
    out = build_model_folder(run, tmp_path / "out", repo_id=REPO)
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.rand(2, *model.pretrained_cfg["input_size"])
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert 'modality="sketch"' in (out / "README.md").read_text()


def _populate_hub_cache(cache, repo_id, folder, commit="0" * 40):
    """Lay ``folder`` out as huggingface_hub's cache of ``repo_id`` at ``main`` (what a download leaves)."""
    repo_cache = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo_cache / "snapshots" / commit)


@pytest.mark.parametrize("holef", [False, True])
def test_hf_hub_load_from_an_offline_cache_gives_identical_embeddings(tmp_path, monkeypatch, holef):
    run, model = make_run(tmp_path, holef=holef)
    out = push_model(run, REPO, dry_run=tmp_path / "out")
    cache = tmp_path / "hub-cache"
    _populate_hub_cache(cache, REPO, out)
    # Offline: any attempt to reach the Hub raises instead of downloading.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    loaded = timm.create_model(f"hf-hub:{REPO}", pretrained=True).eval()
    assert loaded.pretrained_cfg["hf_hub_id"] == REPO
    s, p = _inputs()
    with torch.no_grad():
        assert torch.equal(model(s), loaded(s))
        assert torch.equal(model(p), loaded(p))
    if holef:
        assert torch.equal(model.distance.weight_matrix(), loaded.distance.weight_matrix())
    # The stand-in is really what served the files: an unknown repo fails offline.
    with pytest.raises(LocalEntryNotFoundError):
        timm.create_model("hf-hub:my-lab/not-in-the-cache", pretrained=True)


# --- the model card ------------------------------------------------------------------------------


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_card_renders_the_run_metrics_and_config(tmp_path):
    run, _ = make_run(tmp_path)
    card = (
        build_model_folder(run, tmp_path / "out", repo_id=REPO, license="cc-by-nc-4.0") / "README.md"
    ).read_text()
    meta = _front_matter(card)
    assert meta["library_name"] == "timm"
    assert meta["pipeline_tag"] == "image-feature-extraction"
    assert meta["license"] == "cc-by-nc-4.0"
    assert "sketch-based-image-retrieval" in meta["tags"]
    results = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == "tiny-sbir"
    assert results[0]["dataset"] == {"name": "chairv2", "type": "chairv2", "split": "test"}
    assert {m["type"]: m["value"] for m in results[0]["metrics"]} == EVAL["metrics"]
    # the evaluation table row, with the record's device, date and (short) commit
    row = (
        "| test | chairv2 | 1 | 323 | 100 | 37.25 | 71.50 | 88.12 | 48.13 | 6.42 | 3.00 | CPU: 2-core sandbox "
        "| 2026-11-25T17:00:00Z | `0123456789ab` |"
    )
    assert row in card
    assert EVAL["command"] in card
    assert f'timm.create_model("hf-hub:{REPO}", pretrained=True)' in card
    assert "import fgsbir_plugin  # must come first: it registers the DSSA architectures with timm" in card
    assert "| `loss` | `triplet` |" in card and "| `epochs` | `3` |" in card
    assert "/home/someone" not in card  # local paths stay local
    assert "{Deep Spatial-Semantic Attention for Fine-Grained Sketch-Based Image Retrieval}" in card
    assert "Song, Jifei and Yu, Qian and Song, Yi-Zhe and Xiang, Tao and Hospedales, Timothy M." in card
    assert "HOLEF distance and gallery search" not in card
    assert "$" not in card.replace("$$", "")  # every placeholder was filled


def test_card_of_a_holef_model_says_how_to_search_with_w(tmp_path):
    run, _ = make_run(tmp_path, holef=True)
    card = (build_model_folder(run, tmp_path / "out", repo_id=REPO) / "README.md").read_text()
    assert "holef" in _front_matter(card)["tags"]
    assert "### HOLEF distance and gallery search" in card
    assert "W = model.distance.weight_matrix().detach()  # [8, 8]" in card
    assert 'GalleryIndex(8, metric="holef", W=W)' in card


def test_card_states_the_embedding_width_not_the_trunk_channels(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("fgsbir_hubtest_tiny", holef=True, embed_dim=5).eval()  # 8 trunk channels
    run = tmp_path / "run"
    save_model(model, run / "model")
    (run / "run_config.json").write_text(json.dumps(RUN_CONFIG))
    out = build_model_folder(run, tmp_path / "out", repo_id=REPO)
    card = (out / "README.md").read_text()
    assert json.loads((out / "config.json").read_text())["num_features"] == 8
    assert "one embedding space (5 dimensions)" in card
    assert "s = model(sketch)  # [1, 5]" in card and "W [5, 5]" in card
    assert 'GalleryIndex(5, metric="holef", W=W)' in card
    assert "[1, 8]" not in card and "[8, 8]" not in card


def test_card_without_evaluation_says_so():
    card = render_model_card(
        repo_id=REPO,
        hf_config={
            "architecture": "dssa",
            "num_features": 512,
            "pretrained_cfg": {"input_size": [1, 225, 225]},
        },
        run_config={"dataset": "shoev2"},
        evals=[],
    )
    assert "No evaluation was recorded for this run" in card
    assert "model-index" not in _front_matter(card)
    assert '.convert("L")' in card and 'model(sketch, modality="sketch")' in card


def test_card_names_the_dataset_and_warns_when_its_gallery_is_edge_maps():
    def card_for(dataset):
        hf_config = {
            "architecture": "dssa",
            "num_features": 512,
            "pretrained_cfg": {"input_size": [3, 224, 224]},
        }
        return render_model_card(repo_id=REPO, hf_config=hf_config, run_config={"data": dataset}, evals=[])

    v1 = card_for("chairs_v1")
    assert "trained on QMUL-Chair-V1 (`chairs_v1`)" in v1
    assert "The gallery of QMUL-Chair-V1 is photo *edge maps*" in v1.replace("\n", " ")
    v2 = card_for("chairv2")
    assert "QMUL-Chair-V2 (`chairv2`)" in v2 and "edge maps" not in v2
    assert "a local dataset folder" in card_for("/data/my_pairs") and "edge maps" not in card_for("/data/x")


def test_card_commands_show_no_local_paths():
    hf_config = {"architecture": "dssa", "num_features": 512, "pretrained_cfg": {"input_size": [3, 224, 224]}}
    command = "fgsbir eval --checkpoint /home/me/runs/x --data chairs_v1 --data-dir=/srv/data --split test"
    card = render_model_card(
        repo_id=REPO, hf_config=hf_config, run_config={}, evals=[{**EVAL, "command": command}]
    )
    assert "/home/me" not in card and "/srv/data" not in card
    assert (
        "fgsbir eval --checkpoint <local path> --data chairs_v1 --data-dir=<local path> --split test" in card
    )


# --- run folder and repo id validation ----------------------------------------------------------


def test_bad_run_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        read_run_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks config.json, model.safetensors"):
        read_run_folder(tmp_path / "empty")
    run, _ = make_run(tmp_path)
    assert read_run_folder(run / "model").path == run  # the model/ subfolder is accepted too
    (run / "eval_test.json").write_text("{not json")
    with pytest.raises(ValueError, match="eval_test.json is not valid JSON"):
        read_run_folder(run)
    (run / "run_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no run_config.json"):
        read_run_folder(run)


@pytest.mark.parametrize("repo_id", ["tiny-sbir", "a/b/c", "/name", "org/bad--name", "org/na me", "org/-x"])
def test_bad_repo_ids_are_rejected_before_anything_runs(tmp_path, repo_id, capsys):
    run, _ = make_run(tmp_path)
    with pytest.raises(ValueError, match="repo id"):
        push_model(run, repo_id, dry_run=tmp_path / "out")
    assert (
        main(["push", "--checkpoint", str(run), "--repo-id", repo_id, "--dry-run", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("fgsbir push: error: repo id") and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_dry_run_refuses_a_non_empty_folder(tmp_path, capsys):
    run, _ = make_run(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["push", "--checkpoint", str(run), "--repo-id", REPO, "--dry-run", str(out)]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# --- pushing through a stand-in HfApi -----------------------------------------------------------


@pytest.fixture
def fake_api(fake_hub, monkeypatch):
    """The Hub stand-in of conftest.py, with this file's token in HF_TOKEN."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return fake_hub


def test_push_uploads_the_dry_run_folder_and_never_shows_the_token(tmp_path, fake_api, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    run, _ = make_run(tmp_path, run_config={**RUN_CONFIG, "note": f"oops {TOKEN}"})
    argv = [
        "push",
        "--checkpoint",
        str(run),
        "--repo-id",
        REPO,
        "--revision",
        "v1",
        "--commit-message",
        "first",
    ]
    assert main(argv) == 0
    api = fake_api.api
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "create_branch", "file_exists", "upload_folder"]
    upload = api.calls[-1][2]
    assert upload["repo_id"] == REPO and upload["repo_type"] == "model"
    assert upload["revision"] == "v1" and upload["commit_message"] == "first"
    assert api.calls[0][2]["private"] is False and api.calls[0][2]["exist_ok"] is True
    # the uploaded folder is exactly the dry-run folder
    dry = push_model(run, REPO, dry_run=tmp_path / "dry")
    expected = {p.name: p.read_bytes() for p in (tmp_path / "dry").iterdir()}
    assert dry and api.uploaded == expected
    out = capsys.readouterr()
    assert f"pushed {run} to {REPO}: https://huggingface.co/{REPO}/commit/abc" in out.out
    readme = api.uploaded["README.md"].decode()
    assert "oops ***" in readme
    for text in (
        out.out,
        out.err,
        caplog.text,
        readme,
        *(f.decode("latin-1") for f in api.uploaded.values()),
    ):
        assert TOKEN not in text


def test_push_refuses_to_overwrite_unless_asked(tmp_path, fake_api, capsys):
    run, _ = make_run(tmp_path)
    fake_api.options = {"exists": True}
    assert main(["push", "--checkpoint", str(run), "--repo-id", REPO]) == 2
    err = capsys.readouterr().err
    assert f"{REPO} already holds a published model; pass --overwrite" in err
    assert "upload_folder" not in [c[0] for c in fake_api.api.calls]
    assert main(["push", "--checkpoint", str(run), "--repo-id", REPO, "--overwrite"]) == 0
    assert fake_api.api.calls[-1][0] == "upload_folder"


def test_push_private_to_an_existing_public_repo_is_refused(tmp_path, fake_api, capsys):
    run, _ = make_run(tmp_path)
    fake_api.options = {"private": False}
    assert main(["push", "--checkpoint", str(run), "--repo-id", REPO, "--private"]) == 2
    assert "already exists and is public" in capsys.readouterr().err
    assert "upload_folder" not in [c[0] for c in fake_api.api.calls]


def test_push_without_a_token_says_how_to_log_in(tmp_path, no_login, capsys, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda **kw: pytest.fail("no API call without a token"))
    run, _ = make_run(tmp_path)
    assert main(["push", "--checkpoint", str(run), "--repo-id", REPO]) == 2
    err = capsys.readouterr().err
    assert err == (
        "fgsbir push: error: no Hugging Face token found: set HF_TOKEN to a token with write access or run "
        "`hf auth login`, or use --dry-run DIR to write the folder without uploading.\n"
    )
    # a dry run needs no token
    assert main(["push", "--checkpoint", str(run), "--repo-id", REPO, "--dry-run", str(tmp_path / "o")]) == 0


def _http_error(cls, status, server_message=None):
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return cls(
        f"{status} error", response=httpx2.Response(status, request=request), server_message=server_message
    )


@pytest.mark.parametrize(
    ("method", "error", "expected"),
    [
        (
            "create_repo",
            _http_error(HfHubHTTPError, 401),
            "the Hub rejected your token while creating the repo (401",
        ),
        (
            "create_repo",
            _http_error(HfHubHTTPError, 403),
            f"your token may not write to {REPO} (403 Forbidden)",
        ),
        (
            "create_repo",
            _http_error(HfHubHTTPError, 409),
            f"the name {REPO} clashes with an existing model repo",
        ),
        ("file_exists", _http_error(RepositoryNotFoundError, 404), f"the model repo {REPO} was not found"),
        (
            "upload_folder",
            httpx2.ConnectError("connection refused"),
            "could not reach the Hugging Face Hub while uploading",
        ),
        (
            "create_repo",
            httpx2.ReadTimeout("timed out"),
            "could not reach the Hugging Face Hub while creating the repo",
        ),
        ("create_repo", OfflineModeIsEnabled("offline"), "HF_HUB_OFFLINE is set, so nothing can be uploaded"),
        (
            "upload_folder",
            _http_error(HfHubHTTPError, 500, server_message=f"internal error for token {TOKEN}"),
            "the Hub answered HTTP 500 while uploading for my-lab/tiny-sbir: internal error for token ***.",
        ),
    ],
)
def test_hub_failures_are_one_sentence_without_the_token(tmp_path, fake_api, capsys, method, error, expected):
    run, _ = make_run(tmp_path)
    fake_api.options = {"fail": {method: error}}
    assert main(["push", "--checkpoint", str(run), "--repo-id", REPO]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fgsbir push: error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert TOKEN not in err


def test_push_model_raises_publish_error_from_the_library(tmp_path, fake_hub):
    run, _ = make_run(tmp_path)
    api = fake_hub.new_api(fail={"create_repo": _http_error(HfHubHTTPError, 403)})
    with pytest.raises(PublishError, match="403 Forbidden"):
        push_model(run, REPO, token=TOKEN, api=api)


def test_real_dssa_holef_model_round_trips_w_and_distances(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = timm.create_model("dssa", holef=True).eval()
    with torch.no_grad():
        for p in model.distance.parameters():
            p.add_(0.1 * torch.randn_like(p))
    run = tmp_path / "run"
    save_model(model, run / "model")
    (run / "run_config.json").write_text(json.dumps({**RUN_CONFIG, "model": "dssa", "holef": True}))
    out = push_model(run, REPO, dry_run=tmp_path / "out")
    _populate_hub_cache(tmp_path / "cache", REPO, out)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    loaded = timm.create_model(f"hf-hub:{REPO}", pretrained=True).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, *model.pretrained_cfg["input_size"], generator=g)
    y = torch.rand(2, *model.pretrained_cfg["input_size"], generator=g)
    with torch.no_grad():
        d0 = holef_distance_matrix(model(x), model(y), model.distance.weight_matrix())
        d1 = holef_distance_matrix(loaded(x), loaded(y), loaded.distance.weight_matrix())
    assert d0.shape == (3, 2) and torch.equal(d0, d1)


def test_card_templates_ship_in_the_wheel():
    """Every template under fgsbir_plugin/hub/templates is covered by pyproject.toml's package-data."""
    tomllib = pytest.importorskip("tomllib")  # standard library from Python 3.11
    root = Path(__file__).resolve().parent.parent
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    covered = set()
    for package, patterns in package_data.items():
        base = root.joinpath(*package.split("."))
        covered |= {p.resolve() for pattern in patterns for p in base.glob(pattern)}
    templates = {p.resolve() for p in (root / "fgsbir_plugin" / "hub" / "templates").iterdir()}
    assert templates, "no card templates found"
    missing = sorted(p.name for p in templates - covered)
    assert not missing, (
        f"pyproject.toml's [tool.setuptools.package-data] does not ship {missing}; add "
        '"hub/templates/*.md" to the fgsbir_plugin entry.'
    )


def _tiny_shapes(n_photos=8, size=32):
    """Photos of one filled shape each, sketches its outline; splits train/validation/test by photo."""
    g = torch.Generator().manual_seed(3)
    photos, sketches = [], []
    for i in range(n_photos):
        x0, y0 = (int(v) for v in torch.randint(2, 10, (2,), generator=g))
        box = (x0, y0, x0 + 12 + i % 5, y0 + 12 + (i * 3) % 7)
        photo = Image.new("RGB", (size, size), (240, 240, 240))
        (ImageDraw.Draw(photo).ellipse if i % 2 else ImageDraw.Draw(photo).rectangle)(
            box, fill=(40 * (i % 6), 90, 160)
        )
        photos.append({"photo": photo, "photo_id": f"p{i}", "category": "shape"})
        for k in range(2):
            sketch = Image.new("L", (size, size), 255)
            (ImageDraw.Draw(sketch).ellipse if i % 2 else ImageDraw.Draw(sketch).rectangle)(
                tuple(v + k for v in box), outline=0
            )
            sketches.append(
                {"sketch": sketch, "sketch_id": f"p{i}_{k}", "photo_id": f"p{i}", "category": "shape"}
            )
    split_of = {f"p{i}": ("train" if i < 4 else "validation" if i < 6 else "test") for i in range(n_photos)}

    def pick(rows, split, features):
        keep = [r for r in rows if split_of[r["photo_id"]] == split]
        return Dataset.from_dict({k: [r[k] for r in keep] for k in features}, features=features)

    splits = ("train", "validation", "test")
    return (
        DatasetDict({s: pick(sketches, s, SKETCH_FEATURES) for s in splits}),
        DatasetDict({s: pick(photos, s, PHOTO_FEATURES) for s in splits}),
    )


def test_card_of_a_real_small_run_carries_its_eval_metrics(tmp_path, monkeypatch):
    data = _tiny_shapes()
    run = tmp_path / "run"
    cfg = TrainConfig(
        data="tiny", out=str(run), model="test_resnet", image_size=28, batch_size=4, epochs=1, progress=False
    )
    train(cfg, datasets=data)
    run_eval(run, "tiny", split="test", device="cpu", datasets=data)
    report = json.loads((run / "eval_test.json").read_text())
    # The 10-view protocol has its own report (it overwrote the centre crop's before) and its own card rows.
    run_eval(run, "tiny", split="test", device="cpu", datasets=data, views=10)
    assert json.loads((run / "eval_test.json").read_text()) == report
    ten = json.loads((run / "eval_test_10views.json").read_text())
    out = tmp_path / "out"
    push_model(run, REPO, dry_run=out, license="cc-by-nc-4.0")
    card = (out / "README.md").read_text()
    # config.json states the card's licence for these weights (not the architecture default's "mit")
    assert _front_matter(card)["license"] == "cc-by-nc-4.0"
    assert json.loads((out / "config.json").read_text())["pretrained_cfg"]["license"] == "cc-by-nc-4.0"
    results = _front_matter(card)["model-index"][0]["results"]
    metrics = {m["type"]: m["value"] for m in results[0]["metrics"]}
    assert metrics == {k: float(v) for k, v in report["metrics"].items()}
    assert {m["name"] for m in results[1]["metrics"]} >= {"acc@1 (%) (10 views)"}
    assert f"| test | {report['dataset']} | 1 | {report['num_queries']} | {report['num_gallery']} | " in card
    assert f"| test | {ten['dataset']} | 10 | {ten['num_queries']} | {ten['num_gallery']} | " in card
    assert f"{report['metrics']['acc@1']:.2f}" in card and str(report["device"]) in card
    _populate_hub_cache(tmp_path / "cache", REPO, out)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    original = load_model(run / "model")
    loaded = timm.create_model(f"hf-hub:{REPO}", pretrained=True).eval()
    x = torch.rand(2, *original.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(original(x), loaded(x))
