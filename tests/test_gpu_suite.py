"""The GPU suite (benchmarks/gpu_*.py, compact_data.py): its schedule, its input pipeline on the device, the
compact data export, the bundle's merge, and its smoke run end to end (slow)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from _train_fixtures import tiny_fgsbir
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SMOKE = BENCH / "accuracy_configs" / "gpu_smoke.yaml"
sys.path.insert(0, str(BENCH))  # the benchmark modules import each other by their plain names

import accuracy_cells as cells  # noqa: E402
import accuracy_config as config  # noqa: E402
import compact_data  # noqa: E402
import gpu_prepare  # noqa: E402
import gpu_run  # noqa: E402
import gpu_train  # noqa: E402
from accuracy_scoring import DIAGNOSTIC_KEYS  # noqa: E402
from gpu_schedule import Cell, Estimator, calls_left, next_cell, priority_order  # noqa: E402

from fgsbir_plugin.data import carve_validation, load_fgsbir_pair  # noqa: E402
from fgsbir_plugin.data.sampling import PairDataset, collate_pairs, pair_index  # noqa: E402
from fgsbir_plugin.data.transforms import ImageTable, ImageTransform  # noqa: E402
from fgsbir_plugin.train import engine  # noqa: E402
from fgsbir_plugin.train.config import TrainConfig  # noqa: E402


def test_priority_order_headline_rows_first_then_the_other_rows_then_later_seeds():
    order = [
        str(c) for c in priority_order(["a", "b"], ["triplet", "attention", "dssa_full", "zero"], [0, 1, 2])
    ]
    assert order[:4] == ["a/triplet/seed0", "a/dssa_full/seed0", "b/triplet/seed0", "b/dssa_full/seed0"]
    assert order[4:8] == ["a/attention/seed0", "a/zero/seed0", "b/attention/seed0", "b/zero/seed0"]
    assert order[8:12] == ["a/triplet/seed1", "a/dssa_full/seed1", "b/triplet/seed1", "b/dssa_full/seed1"]
    assert order[12:16] == ["a/triplet/seed2", "a/dssa_full/seed2", "b/triplet/seed2", "b/dssa_full/seed2"]
    assert order[16] == "a/attention/seed1" and len(set(order)) == len(order) == 2 * 4 * 3


def test_estimates_scale_with_the_training_sketches_and_prefer_the_same_method():
    est = Estimator({"small": 200, "big": 1000}, untrained=frozenset({"zero"}), safety=1.0)
    assert est.estimate(Cell("small", "triplet", 0)) == pytest.approx(
        est.fixed_s + est.prior_s_per_sketch * 200
    )
    est.add(Cell("small", "triplet", 0), 20.0)
    assert est.estimate(Cell("big", "triplet", 0)) == pytest.approx(100.0)
    assert est.estimate(Cell("big", "dssa_full", 0)) == pytest.approx(100.0)  # any trained method's rate
    est.add(Cell("small", "dssa_full", 0), 40.0)
    assert est.estimate(Cell("big", "dssa_full", 1)) == pytest.approx(200.0)
    assert est.estimate(Cell("big", "zero", 0)) == est.untrained_prior_s
    est.add(Cell("big", "zero", 0), 3.0)
    assert est.estimate(Cell("big", "zero", 1)) == pytest.approx(3.0)


def test_a_cell_starts_only_when_its_estimate_fits_and_smaller_ones_fill_the_end():
    est = Estimator({"small": 200, "big": 1000}, safety=1.0)
    est.add(Cell("small", "t", 0), 20.0)
    pending = [Cell("big", "t", 1), Cell("small", "t", 1)]
    assert next_cell(pending, est, 150.0) == (Cell("big", "t", 1), pytest.approx(100.0))
    assert next_cell(pending, est, 50.0) == (Cell("small", "t", 1), pytest.approx(20.0))
    assert next_cell(pending, est, 10.0) is None
    assert calls_left([], est, 400.0) == 0 and calls_left(pending, est, 100.0) == 2


def _fake_cell(h, ref, method: str, seed: int, **extra) -> dict:
    """A finished cell's record, as read_cell accepts it, made with the config's settings."""
    rec = {
        "seed": seed,
        "metrics": dict.fromkeys(cells.METRIC_KEYS, 50.0),
        "diagnostics": dict.fromkeys(DIAGNOSTIC_KEYS),
        "ranks": [1, 2],
        "device": "GPU: test",
        "wall_s": 30.0,
        "settings": cells.cell_settings(h, ref, method, seed),
        **extra,
    }
    path = h.cell_path(ref.name, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return rec


def test_the_run_resumes_from_committed_cells_and_starts_nothing_past_its_budget(tmp_path):
    bench = config.load_benchmark_config(SMOKE)
    results = tmp_path / "results"
    h = cells.Harness(bench, results, "accuracy_gpu_smoke", tmp_path / "runs", device="cpu")
    ref = config.dataset_ref("synthetic", bench, None)
    _fake_cell(h, ref, "triplet", 0)
    _fake_cell(h, ref, "dssa_full", 1, settings={"other": "settings"})
    status = gpu_run.grid_status(h, [ref], [0, 1])
    assert status["done"] == [Cell("synthetic", "triplet", 0)] and status["stale"] == [
        Cell("synthetic", "dssa_full", 1)
    ]
    assert [str(c) for c in status["pending"]] == [
        "synthetic/dssa_full/seed0",
        "synthetic/pretrained_zero_shot/seed0",
        "synthetic/triplet/seed1",
        "synthetic/pretrained_zero_shot/seed1",
    ]
    assert set(status["blocked"].values()) == {"CLIP weights unavailable offline"}

    lines: list[str] = []
    suite = gpu_run.Suite(
        out=tmp_path / "out",
        config=SMOKE,
        results_dir=results,
        runs_dir=tmp_path / "runs",
        data_dir=None,
        device="cpu",
        budget_s=gpu_run.RESERVE_S + 5.0,  # less than any cell's estimate
        started=time.monotonic(),
        command="test",
        smoke=True,
        benchmarks=False,
    )
    assert gpu_run.run(suite, lines.append) == 0
    call = json.loads((tmp_path / "out" / "gpu_call.json").read_text())
    summary = call["summary"]
    assert call["cells"] == [] and summary["done"] == 1 and summary["left"] == 4 and summary["grid"] == 8
    assert summary["estimated_calls_left"] >= 1 and summary["stale"] == ["synthetic/dssa_full/seed1"]
    assert any("cells done: 1 of 8" in line and "estimated calls left" in line for line in lines)
    with tarfile.open(tmp_path / "out" / "gpu_results.tar.gz") as tar:
        assert tar.getnames() == []


def test_device_batches_are_the_engine_pipeline_s_batches_pixel_for_pixel():
    sketches, photos = load_fgsbir_pair(
        "synthetic", num_photos=12, sketches_per_photo=2, image_size=48, seed=0
    )
    load, size, mean, std = 40, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    s_table = ImageTable(sketches["train"], "sketch", load, 3, cache=True)
    p_table = ImageTable(photos["train"], "photo", load, 3, cache=True)
    s2p = pair_index(list(sketches["train"]["photo_id"]), list(photos["train"]["photo_id"]))
    s_tf = ImageTransform(size, mean, std, 3, train=True, hflip=0.5, stroke_jitter=0.5)
    engine_pairs = PairDataset(
        s_table, p_table, s2p, s_tf, ImageTransform(size, mean, std, 3, train=True), seed=3
    )
    spec = {"image_size": size, "in_chans": 3, "mean": mean, "std": std}
    cfg = TrainConfig(seed=3, hflip=0.5, stroke_jitter=0.5)
    device_pairs = gpu_train.DeviceBatches(s_table.tensor, p_table.tensor, s2p, spec, cfg)
    for epoch in (0, 7):
        indices = [3, 0, 7, 2, 11, 5, 9]
        expected = collate_pairs([engine_pairs[(epoch, i)] for i in indices])
        for got, want in zip(device_pairs.batch(epoch, indices), expected):
            assert torch.equal(got, want)


def _tiny_config(out: Path, **kw) -> TrainConfig:
    values = dict(data="tiny", out=str(out), model="test_resnet", image_size=32, batch_size=4, epochs=2)
    values.update(hflip=0.5, stroke_jitter=0.3, device="cpu", progress=False, save_every=0, seed=1)
    return TrainConfig(**{**values, **kw})


def test_a_run_on_device_batches_is_the_engine_s_run(tmp_path):
    datasets = tiny_fgsbir()
    ours = gpu_train.train_on_device(_tiny_config(tmp_path / "device"), datasets=datasets)
    theirs = engine.train(_tiny_config(tmp_path / "engine"), datasets=datasets)
    assert ours["done"] and ours["best"] == theirs["best"] and ours["best_step"] == theirs["best_step"]
    a, b = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("device", "engine"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(gpu_train.OutOfTime, match="budget ran out at step 0"):
        gpu_train.train_on_device(
            _tiny_config(tmp_path / "late"), datasets=datasets, deadline=time.monotonic() - 1
        )


def test_a_compact_export_has_the_original_rows_and_pixels_and_the_harness_reads_it(tmp_path):
    original = load_fgsbir_pair("synthetic", num_photos=6, sketches_per_photo=2, image_size=40, seed=0)
    folder = tmp_path / "data" / config.DATASET_FOLDERS["chairs_v1"]
    info = compact_data.write_export(*original, folder, name="chairs_v1", source="test")
    assert info["rows"]["sketches"] == {"train": 8, "test": 4} and info["bytes"] > 0
    assert compact_data.verify_export(original, config.read_export(folder)) == 12 + 6
    # A named dataset whose folder in the data folder holds an export is read from it.
    ref = config.dataset_ref("chairs_v1", {"dataset_kwargs": {}}, str(tmp_path / "data"))
    assert config.export_folder(ref) == folder and config.dataset_unavailable(ref) is None
    got = cells.load_cell_data(ref, 1, 0.25)
    want = carve_validation(*original, 0.25, 1)
    for g, w, column in ((got[0], want[0], "sketch_id"), (got[1], want[1], "photo_id")):
        assert list(g) == list(w) and all(list(g[s][column]) == list(w[s][column]) for s in w)
    with pytest.raises(ValueError, match="cannot apply the reader arguments"):
        cells.load_cell_data(dataclasses.replace(ref, kwargs={"line_width": 2}), 1, 0.25)
    shuffled = config.read_export(folder)
    shuffled[0]["train"] = shuffled[0]["train"].select(list(reversed(range(8))))
    with pytest.raises(ValueError, match="sketch_id differs"):
        compact_data.verify_export(original, shuffled)


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_unpack_merges_finished_cells_keeps_existing_ones_and_refuses_other_names(tmp_path):
    bench = config.load_benchmark_config(SMOKE)
    results = tmp_path / "results"
    h = cells.Harness(bench, results, "accuracy_gpu_smoke", tmp_path / "runs", device="cpu")
    ref = config.dataset_ref("synthetic", bench, None)
    good = json.dumps(_fake_cell(h, ref, "triplet", 1)).encode()
    kept = h.cell_path("synthetic", "triplet", 0)
    kept.write_bytes(b"{}")
    bundle = tmp_path / "bundle.tgz"
    bundle.write_bytes(
        _tar(
            {
                "accuracy_gpu_smoke/synthetic/triplet/seed1.json": good,
                "accuracy_gpu_smoke/synthetic/triplet/seed0.json": good,
                "accuracy_gpu_smoke/synthetic/dssa_full/seed0.json": b"{not json",
                "../evil.json": good,
                "train_throughput_gpu.json": b'{"device": "GPU: test"}',
            }
        )
    )
    h.cell_path("synthetic", "triplet", 1).unlink()
    counts = gpu_prepare.merge_bundle(bundle, results, "accuracy_gpu_smoke", lambda line: None)
    assert counts == {
        "cell": 1,
        "kept (a cell is there already)": 1,
        "refused (not a finished cell)": 1,
        "refused (unexpected name)": 1,
        "benchmark": 1,
    }
    assert h.cell_path("synthetic", "triplet", 1).read_bytes() == good and kept.read_bytes() == b"{}"
    assert not (tmp_path / "evil.json").exists() and not h.cell_path("synthetic", "dssa_full", 0).exists()
    assert gpu_run.bench_done(results / "train_throughput_gpu.json")
    call = {"call": "2026-01-01T00:00:00+00:00", "command": "c", "budget_s": 480, "cells": [], "summary": {}}
    path = gpu_prepare.record_call(call, results, "accuracy_gpu_smoke")
    gpu_prepare.record_call(call, results, "accuracy_gpu_smoke")
    assert len(json.loads(path.read_text())) == 1 and "## 2026-01-01" in path.with_suffix(".md").read_text()


def test_the_benchmark_subprocesses_import_this_tree_without_an_installed_package(tmp_path):
    # On the device (and in a bare checkout) nothing is installed: the suite's benchmark subprocesses
    # must find fgsbir_cli/fgsbir_plugin through PYTHONPATH. `-S` keeps the installed copy out of sight.
    probe = (
        "import os, subprocess, sys; sys.path.insert(0, 'benchmarks'); import gpu_suite; gpu_suite.use_paths([]); "
        "sys.exit(subprocess.run([sys.executable, '-S', '-c', 'import fgsbir_cli; print(fgsbir_cli.__file__)'],"
        " cwd=sys.argv[1]).returncode)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()).parent == REPO / "fgsbir_cli"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a killed process nobody has reaped yet shows as a zombie: not alive)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_a_benchmark_stopped_at_its_limit_takes_its_worker_processes_with_it(tmp_path):
    # The concurrency probe's spawned workers block forever once their parent is gone; a killed benchmark
    # must not leave them holding the GPU for the rest of the call.
    pid_file = tmp_path / "worker.pid"
    script = (
        "import subprocess, sys, time; "
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"open({str(pid_file)!r}, 'w').write(str(w.pid)); print('started', flush=True); time.sleep(300)"
    )
    lines = []
    entry = gpu_run._run_subprocess([sys.executable, "-c", script], 10, lines.append)
    assert entry["status"] == "stopped at its limit of 10 s" and "started" in "".join(lines)
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)


def test_holef_benchmark_children_find_packages_that_only_the_parents_pythonpath_names(tmp_path):
    # The device's Python has torch but not pytorch-metric-learning: the suite installs the carried wheels
    # into a folder named only by PYTHONPATH. Here: the base interpreter (no site-packages of this venv),
    # with the venv's site-packages and the repository on PYTHONPATH. The children used to get PYTHONPATH=<repo> alone, could
    # not import the package, and the run still wrote a report and exited 0.
    import site

    base = getattr(sys, "_base_executable", sys.executable)
    if subprocess.run([base, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("the base interpreter imports torch by itself: it cannot stand for the device's Python")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*site.getsitepackages(), str(REPO)]))  # as use_paths
    out = tmp_path / "holef"
    cmd = [
        base,
        str(BENCH / "holef_closed_form.py"),
        "--devices",
        "cpu",
        "--sizes",
        "4x4x8",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == 3


def test_holef_benchmark_exits_nonzero_when_a_case_breaks_but_not_when_the_gpu_runs_out_of_memory(
    tmp_path, monkeypatch
):
    import holef_closed_form as hcf

    def child(reason):
        return lambda *a: {"status": "failed", "reason": reason}

    argv = ["--devices", "cpu", "--sizes", "4x4x8", "--out", str(tmp_path / "r")]
    monkeypatch.setattr(hcf, "_run_child", child("exit code 1: ModuleNotFoundError: No module named 'x'"))
    assert hcf.main(argv) == 1
    assert (tmp_path / "r.json").is_file()  # kept for reading; the suite does not bundle a failed run
    monkeypatch.setattr(hcf, "_run_child", child("torch.OutOfMemoryError: CUDA out of memory."))
    assert hcf.main(argv) == 0


@pytest.mark.slow
def test_the_smoke_run_writes_the_bundle_and_unpacks_into_tables(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_suite.py"), "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "cells done: 6 of 8 (6 this call); cells left: 0" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["gpu_call.json", "gpu_results.tar.gz", "gpu_suite.log"]
    call = json.loads((out / "gpu_call.json").read_text())
    assert [b["status"] for b in call["benchmarks"]] == ["ok", "ok", "ok", "ok"]
    assert all(c["status"] == "done" for c in call["cells"]) and len(call["cells"]) == 6
    # The CPU concurrency report does not count.
    assert call["cells_at_once"] == {"workers": 1, "from": "default", "prior_slowdown": 1.0}
    with tarfile.open(out / "gpu_results.tar.gz") as tar:
        names = tar.getnames()
    assert {
        f"{b}.json"
        for b in ("concurrency_gpu", "train_throughput_gpu", "holef_closed_form_gpu", "search_gpu")
    } <= set(names)
    assert sum(n.startswith("accuracy_gpu_smoke/synthetic/") for n in names) == 6

    results = tmp_path / "results"
    unpack = [
        sys.executable,
        str(BENCH / "gpu_suite.py"),
        "--unpack",
        str(out),
        "--results-dir",
        str(results),
    ]
    proc = subprocess.run(unpack, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for seed in (0, 1):
        for method in ("triplet", "dssa_full", "pretrained_zero_shot"):
            assert cells.read_cell(cells.cell_path(results, "accuracy_gpu_smoke", "synthetic", method, seed))
    table = json.loads((results / "accuracy_gpu_smoke.json").read_text())
    rows = {r["method"]: r for r in table["rows"]}
    assert rows["dssa_full"]["seeds"] == [0, 1] and rows["clip_zero_shot"]["not_run"]
    assert "synthetic/dssa_full/seed0" in (results / "accuracy_gpu_smoke_calls.md").read_text()


def _smoke_cells(out: Path, *extra: str) -> tuple[dict, dict[str, dict]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread in every process: the same arithmetic
    cmd = [
        sys.executable,
        str(BENCH / "gpu_suite.py"),
        "--smoke",
        "--no-benchmarks",
        "--out",
        str(out),
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    call = json.loads((out / "gpu_call.json").read_text())
    with tarfile.open(out / "gpu_results.tar.gz") as tar:
        cells_ = {m.name: json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")}
    return call, cells_


@pytest.mark.slow
def test_cells_run_at_once_in_worker_processes_equal_the_cells_run_one_at_a_time(tmp_path):
    one_call, one = _smoke_cells(tmp_path / "one")
    two_call, two = _smoke_cells(tmp_path / "two", "--parallel", "2")
    assert two_call["cells_at_once"] == {"workers": 2, "from": "--parallel", "prior_slowdown": 2.0}
    assert all(c["cells_at_once"] == 2 for c in two_call["cells"])
    assert sorted(one) == sorted(two) and len(one) == 6
    for name, rec in one.items():
        assert two[name]["ranks"] == rec["ranks"] and two[name]["metrics"] == rec["metrics"], name
        assert two[name]["selection"] == rec["selection"], name


def test_cells_at_once_comes_from_the_option_else_a_gpu_concurrency_report(tmp_path):
    def suite(device: str, parallel=None):
        return gpu_run.Suite(
            out=tmp_path / "out",
            config=SMOKE,
            results_dir=tmp_path,
            runs_dir=tmp_path / "runs",
            data_dir=None,
            device=device,
            budget_s=60.0,
            started=time.monotonic(),
            command="t",
            parallel=parallel,
        )

    assert gpu_run.cells_at_once(suite("cuda")) == (1, "default")
    report = tmp_path / "concurrency_gpu.json"
    report.write_text(json.dumps({"device": "CPU: x86_64", "best_procs": 2}))
    assert gpu_run.cells_at_once(suite("cuda")) == (1, "default")  # measured on a CPU: not a GPU figure
    report.write_text(json.dumps({"device": "GPU: NVIDIA H200", "best_procs": 4}))
    assert gpu_run.cells_at_once(suite("cuda")) == (4, "best_procs of concurrency_gpu.json")
    assert gpu_run.cells_at_once(suite("cpu")) == (1, "default")
    assert gpu_run.cells_at_once(suite("cuda", parallel=3)) == (3, "--parallel")
    # Before any cell is timed, estimates grow by how much slower one cell steps alongside the others.
    rows = [{"procs": 1, "steps_per_s_total": 10.0, "steps_per_s_each": [10.0]}]
    rows += [{"procs": 4, "steps_per_s_total": 24.0, "steps_per_s_each": [6.0, 6.0, 5.0, 7.0]}]
    report.write_text(json.dumps({"device": "GPU: NVIDIA H200", "best_procs": 4, "rows": rows}))
    assert gpu_run.prior_slowdown(suite("cuda"), 4) == pytest.approx(10.0 / 6.0)
    assert gpu_run.prior_slowdown(suite("cuda"), 2) == 2.0  # a count it did not measure: no overlap assumed
    assert gpu_run.prior_slowdown(suite("cuda"), 1) == 1.0


def test_the_concurrency_benchmark_picks_the_smallest_count_near_the_best_rate():
    import gpu_concurrency

    rows = [{"procs": 1, "steps_per_s_total": 10.0}, {"procs": 2, "steps_per_s_total": 19.0}]
    rows += [{"procs": 4, "steps_per_s_total": 30.0}, {"procs": 8, "steps_per_s_total": 31.0}]
    assert gpu_concurrency.best_procs(rows) == 4
    assert gpu_concurrency.best_procs(rows[:1]) == 1
    est = Estimator({"d": 100.0}, safety=1.0)
    est.add(Cell("d", "m", 0), 100.0)
    pending = [Cell("d", "m", s) for s in range(1, 5)]  # 400 s of cells measured one at a time... or at once
    assert calls_left(pending, est, 100.0) == 4 and calls_left(pending, est, 100.0, at_once=4) == 1


def test_unpack_adds_the_gpu_throughput_rows_beside_the_cpu_ones(tmp_path):
    cpu = json.loads((REPO / "benchmarks" / "results" / "train_throughput.json").read_text())
    (tmp_path / "train_throughput.json").write_text(json.dumps(cpu))
    (tmp_path / "train_throughput.md").write_text("# CPU table\n\n| a |\n")
    assert gpu_prepare.fold_gpu_throughput(tmp_path) == []  # no GPU report yet
    gpu = {**cpu, "device": "GPU: NVIDIA H200", "date": "2026-12-01T00:00:00+00:00", "precision": "bf16"}
    gpu["rows"] = [{**r, "img_per_s": 1000.0} for r in cpu["rows"][:2]]
    (tmp_path / "train_throughput_gpu.json").write_text(json.dumps(gpu))
    for _ in range(2):  # unpacking again replaces the GPU section, it does not add a second
        written = gpu_prepare.fold_gpu_throughput(tmp_path)
    assert [p.name for p in written] == ["train_throughput.json", "train_throughput.md"]
    folded = json.loads((tmp_path / "train_throughput.json").read_text())
    assert folded["rows"] == cpu["rows"] and folded["gpu"]["rows"] == gpu["rows"]
    md = (tmp_path / "train_throughput.md").read_text()
    assert md.startswith("# CPU table") and md.count(gpu_prepare.GPU_SECTION) == 1
    assert "GPU: NVIDIA H200" in md and "1000.0" in md


def test_the_tree_fits_beside_the_carried_folders_in_one_device_call():
    # A device call carries the tree (tracked and untracked, not ignored, files) with .data/gpu and .whl in
    # 64 MiB; faiss travels until the search benchmark has GPU results (gpu_prepare.prepare).
    with_faiss = not gpu_run.bench_done(gpu_prepare.RESULTS / "search_gpu.json")
    used, budget = gpu_prepare.tree_bytes(), gpu_prepare.tree_budget(with_faiss)
    assert used <= budget, (
        f"the files a device call sends take {used / 2**20:.2f} MiB, more than the {budget / 2**20:.2f} MiB "
        f"left beside .data/gpu and .whl{' with faiss' if with_faiss else ''}: shrink what is committed "
        "(results, pictures) or move untracked files out of the checkout"
    )
