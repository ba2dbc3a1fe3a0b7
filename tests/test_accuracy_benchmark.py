"""The accuracy benchmark harness (benchmarks/accuracy.py) in its CPU smoke mode, on synthetic data."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "benchmarks" / "accuracy_configs" / "smoke.yaml"
GPU = REPO / "benchmarks" / "accuracy_configs" / "gpu.yaml"


def _load_harness():
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", REPO / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


acc = _load_harness()

TINY_CLIP = dict(image_size=32, layers=1, width=32, patch_size=8, head_width=16)


def _args(tmp_path: Path, config: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(config),
        "--results-dir",
        str(tmp_path / "results"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--device",
        "cpu",
        *extra,
    ]


def _cells(tmp_path: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted((tmp_path / "results" / "accuracy").rglob("seed*.json"))}


@pytest.mark.slow
def test_smoke_run_scores_test_selects_on_validation_and_resumes(tmp_path, monkeypatch):
    import fgsbir_plugin.train.loop as loop

    # Record every split the training loop scores: selection must only ever see validation rows.
    scored_photo_ids: list[set] = []
    real_evaluate = loop.evaluate_split

    def spy(model, sketches, photos, **kw):
        scored_photo_ids.append(set(sketches["photo_id"]) | set(photos["photo_id"]))
        return real_evaluate(model, sketches, photos, **kw)

    monkeypatch.setattr(loop, "evaluate_split", spy)
    assert acc.main(_args(tmp_path, SMOKE)) == 0

    bench = acc.load_benchmark_config(SMOKE)
    cells = _cells(tmp_path)
    assert len(cells) == len(bench["methods"]) * len(bench["seeds"]) == 4
    for method in bench["methods"]:
        for seed in bench["seeds"]:
            rec = json.loads(acc.cell_path(tmp_path / "results", "synthetic", method, seed).read_text())
            assert rec["split"] == "test" and rec["selection"]["split"] == "validation"
            assert set(rec["metrics"]) == set(acc.METRIC_KEYS)
            assert all(math.isfinite(v) for v in rec["metrics"].values())
            assert len(rec["ranks"]) == rec["num_queries"] > 0
            assert all(1 <= r <= rec["num_gallery"] for r in rec["ranks"])
            acc1 = 100.0 * sum(r == 1 for r in rec["ranks"]) / len(rec["ranks"])
            assert rec["metrics"]["acc@1"] == pytest.approx(acc1)
            for key in ("device", "date", "commit", "command", "wall_s", "config"):
                assert key in rec
            assert rec["config"]["train"]["seed"] == seed
            # The same carve as the run's: its test photos are disjoint from every scored selection split.
            sketches, photos = acc.load_cell_data(
                bench, "synthetic", seed, None, bench["train"]["validation_size"]
            )
            test_ids = set(photos["test"]["photo_id"])
            val_ids = set(photos["validation"]["photo_id"])
            assert len(sketches["test"]) == rec["num_queries"]
            assert not test_ids & val_ids
    # Cells run method by method, seed by seed, one validation per epoch: each scored set belongs to
    # a known seed's carve and must lie inside its validation photos, never touching its test photos.
    epochs, seeds = bench["train"]["epochs"], bench["seeds"]
    assert len(scored_photo_ids) == epochs * len(cells)
    splits = {
        s: acc.load_cell_data(bench, "synthetic", s, None, bench["train"]["validation_size"]) for s in seeds
    }
    for i, ids in enumerate(scored_photo_ids):
        photos = splits[seeds[(i // epochs) % len(seeds)]][1]
        assert ids == set(photos["validation"]["photo_id"])
        assert not ids & set(photos["test"]["photo_id"])

    md = (tmp_path / "results" / "accuracy.md").read_text()
    table = json.loads((tmp_path / "results" / "accuracy.json").read_text())
    assert "Triplet-SN" in md and "DSSA full" in md and "± " in md
    rows = {r["method"]: r for r in table["rows"]}
    assert set(rows) == {"triplet_sn", "dssa_full"}
    for row in rows.values():
        assert row["seeds"] == [0, 1]
        assert all(math.isfinite(v["mean"]) and math.isfinite(v["std"]) for v in row["metrics"].values())
    plots = tmp_path / "results" / "accuracy_plots"
    for name in ("acc_at_k_synthetic.png", "retrievals_synthetic.png", "attention_synthetic.png"):
        assert (plots / name).stat().st_size > 1000

    # A second run trains nothing: every finished cell is skipped and left byte for byte as it was.
    import fgsbir_plugin.train.engine as engine

    real_train = engine.train

    def no_training(*a, **k):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(engine, "train", no_training)
    assert acc.main(_args(tmp_path, SMOKE, "--no-plots")) == 0
    assert _cells(tmp_path) == cells

    # A corrupt cell file counts as unfinished: only that cell is scored again (its finished run
    # folder is resumed, so nothing is retrained), the others stay as they were.
    victim = acc.cell_path(tmp_path / "results", "synthetic", "triplet_sn", 1)
    victim.write_text("{")
    assert acc.read_cell(victim) is None
    monkeypatch.setattr(engine, "train", real_train)
    assert acc.main(_args(tmp_path, SMOKE, "--no-plots")) == 0
    again = _cells(tmp_path)
    assert {p for p in cells if again[p] != cells[p]} == {victim}
    assert json.loads(again[victim])["metrics"] == json.loads(cells[victim])["metrics"]


@pytest.mark.slow
def test_clip_rows_not_run_without_weights_and_run_with_an_injected_tower(tmp_path):
    from fgsbir_plugin.baselines.clip import CLIPImageEmbedder

    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["seeds"] = [0]
    cfg["train"]["epochs"] = 1
    cfg["train"].pop("image_size")  # CLIP runs at its tower's own input size
    cfg["methods"] = {
        "clip_zero_shot": {"label": "CLIP zero-shot", "kind": "clip", "adapt": "none"},
        "clip_finetuned": {"label": "CLIP fine-tuned", "kind": "clip", "adapt": "ln_proj"},
    }
    config = tmp_path / "clip.yaml"
    config.write_text(yaml.safe_dump(cfg))

    assert acc.main(_args(tmp_path, config)) == 0
    assert _cells(tmp_path) == {}
    md = (tmp_path / "results" / "accuracy.md").read_text()
    assert md.count("not run: weights unavailable offline") == 2

    def tiny_tower(adapt: str):
        return CLIPImageEmbedder.from_config(16, TINY_CLIP, adapt=adapt)

    assert acc.main(_args(tmp_path, config, "--no-plots"), clip_factory=tiny_tower) == 0
    zero = json.loads(acc.cell_path(tmp_path / "results", "synthetic", "clip_zero_shot", 0).read_text())
    tuned = json.loads(acc.cell_path(tmp_path / "results", "synthetic", "clip_finetuned", 0).read_text())
    assert zero["selection"]["split"] is None and zero["run_dir"] is None
    assert tuned["selection"]["split"] == "validation"
    assert (Path(tuned["run_dir"]) / "model_state.safetensors").is_file()
    for rec in (zero, tuned):
        assert all(math.isfinite(v) for v in rec["metrics"].values())
    md = (tmp_path / "results" / "accuracy.md").read_text()
    assert "not run" not in md and "CLIP zero-shot" in md


def test_configs_load_and_bad_configs_are_explained(tmp_path):
    gpu = acc.load_benchmark_config(GPU)
    assert gpu["seeds"] == [0, 1, 2]
    assert {"triplet_sn", "dssa_full", "dssa_effnet_full", "clip_zero_shot", "clip_finetuned"} <= set(
        gpu["methods"]
    )
    assert gpu["methods"]["triplet_sn"]["model_kwargs"] == {"attention": False, "fusion": False}
    assert gpu["methods"]["dssa_full"]["train"]["loss"] == "holef"
    smoke = acc.load_benchmark_config(SMOKE)
    assert len(smoke["methods"]) == 2 and len(smoke["seeds"]) == 2 and smoke["datasets"] == ["synthetic"]

    bad = yaml.safe_load(SMOKE.read_text())
    bad["train"]["validation_size"] = 0.0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="validation split"):
        acc.load_benchmark_config(path)
    bad["train"]["validation_size"] = 0.2
    bad["train"]["epochz"] = 3
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="epochz"):
        acc.load_benchmark_config(path)
    with pytest.raises(FileNotFoundError, match="--config"):
        acc.load_benchmark_config(tmp_path / "missing.yaml")


def test_table_shows_paper_figures_and_not_run_rows(tmp_path):
    bench = acc.load_benchmark_config(GPU)
    not_run = {("chairs_v1", "clip_zero_shot"): acc.CLIP_NOT_RUN}
    table = acc.aggregate(
        bench, tmp_path, ["triplet_sn", "clip_zero_shot"], ["chairs_v1", "shoes_v1"], [0, 1, 2], not_run
    )
    md = (tmp_path / "accuracy.md").read_text()
    assert "| DSSA, paper (Song et al. ICCV 2017) | 81.44 |  | 95.88 |" in md
    assert "| DSSA, paper (Song et al. ICCV 2017) | 61.74 |  | 94.78 |" in md
    assert "| CLIP zero-shot (cosine) | not run: weights unavailable offline |" in md
    assert "| Triplet-SN (Sketch-a-Net) | not run: no result files yet |" in md
    assert table["paper"]["shoes_v1"] == {"acc@1": 61.74, "acc@10": 94.78}
    assert acc.dataset_unavailable("shoev2", str(tmp_path)).startswith("dataset not present")
    assert acc.dataset_unavailable("synthetic", None) is None
