"""The GPU suite's run: the environment, the one-off speed benchmarks, then accuracy cells until the budget ends.

``gpu_suite.py`` calls :func:`run` once it has installed the carried wheels (its docstring gives the
interface). A run:

1. records the machine (GPU, driver, torch, CUDA);
2. runs each speed benchmark whose GPU results are not in the results folder yet (:data:`BENCHES`: how
   many cells at once give the most steps per second, training throughput of the DSSA variants against
   their bare trunks, the HOLEF closed form, gallery search), each its own script in a subprocess with a
   time limit, writing ``<results>/<stem>.*``;
3. runs the accuracy cells still missing from the results folder, in the priority order of
   ``gpu_schedule``, each only when its estimate fits in the time left, trained by
   ``gpu_train.train_on_device`` (a deadline stops a cell that overruns; it is not written); one at a time,
   or as many at once as :func:`cells_at_once` says, in worker processes (``gpu_pool``);
4. after every finished piece, rewrites the bundle in ``--out``: ``gpu_results.tar.gz`` (the new result
   files, relative to the results folder), ``gpu_call.json`` (this call: machine, benchmarks, per-cell
   wall time, GPU utilisation and memory, the summary) and ``gpu_suite.log``, so that a call killed at
   its limit still returns what it finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from accuracy_cells import Harness, read_cell, stale_cell
from accuracy_config import (
    EXPORT_MARK,
    dataset_unavailable,
    export_folder,
    is_trained,
    read_export,
    repo_relative,
)
from compact_data import verify_export, write_export
from gpu_pool import CellProgress, JobSpec, make_harness, run_one, run_parallel
from gpu_probe import GpuMonitor, environment
from gpu_schedule import Cell, Estimator, calls_left, next_cell, priority_order
from gpu_train import OutOfTime

from fgsbir_plugin._common import atomic_write_bytes
from fgsbir_plugin.data import load_fgsbir_pair
from fgsbir_plugin.runtime import git_commit

REPO = Path(__file__).resolve().parents[1]
RESERVE_S = 15.0  # kept back at the end of the budget for the last bundle
BENCH_SHARE = 0.5  # the speed benchmarks start only within this share of the budget


@dataclass
class Suite:
    """What one run reads and writes, and how long it may take."""

    out: Path
    config: Path
    results_dir: Path
    runs_dir: Path
    data_dir: Path | None
    device: str
    budget_s: float
    started: float  # time.monotonic() at the start of the script
    command: str
    smoke: bool = False
    compile: bool = False
    benchmarks: bool = True
    parallel: int | None = None  # cells at once; None: see cells_at_once

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def time_left(self) -> float:
        return self.budget_s - RESERVE_S - self.elapsed()


@dataclass(frozen=True)
class Bench:
    script: str
    stem: str  # results file stem: <results>/<stem>.json and .md
    args: str  # on the GPU
    smoke_args: str  # on the CPU, toy sizes
    timeout_s: float


# The settings for the throughput (batch 128, 224 px, bf16, channels_last) and each script's
# default sizes otherwise; the limits are generous guesses, no GPU has timed these scripts yet.
BENCHES = (
    # First: its best_procs decides how many cells this call and the next ones run at once.
    Bench(
        "gpu_concurrency",
        "concurrency_gpu",
        "--device cuda --procs 1 2 4 8 --seconds 6",
        "--device cpu --procs 1 2 --seconds 2 --image-size 64 --batch-size 4 --photos 16 --load-size 72",
        150.0,
    ),
    Bench(
        "train_throughput",
        "train_throughput_gpu",
        "--device cuda --batch-size 128 --image-size 224 --precision bf16 --channels-last "
        "--warmup 5 --iters 10 --rounds 3",
        "--device cpu --cpu-small --only dssa_efficientnet_lite0 --iters 1 --rounds 1",
        180.0,
    ),
    Bench(
        "holef_closed_form",
        "holef_closed_form_gpu",
        "--devices cuda",
        "--devices cpu --sizes 16x16x64",
        150.0,
    ),
    Bench(
        "search",
        "search_gpu",
        "--sizes 10000 100000 1000000 --hnsw-sizes 10000",
        "--sizes 2000 --hnsw-sizes 2000 --ef-search 16 --queries 10 --repeats 1",
        150.0,
    ),
)


class Call:
    """This call's record and the bundle in ``suite.out``, rewritten after every finished piece."""

    def __init__(self, suite: Suite, log) -> None:
        self.suite, self.log = suite, log
        self.new_files: list[Path] = []
        self.record: dict[str, Any] = {
            "call": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": suite.command,
            "commit": git_commit() or os.environ.get("FGSBIR_COMMIT"),
            "smoke": suite.smoke,
            "config": repo_relative(suite.config),
            "budget_s": suite.budget_s,
            "compile": suite.compile,
            "data_path": "uint8 images decoded once and kept on the device; crops, flips and normalisation there",
            "benchmarks": [],
            "cells": [],
        }

    def add_file(self, path: Path) -> None:
        if path.is_file() and path not in self.new_files:
            self.new_files.append(path)

    def write(self) -> None:
        self.record["wall_s"] = round(self.suite.elapsed(), 1)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for path in self.new_files:
                tar.add(path, arcname=str(path.relative_to(self.suite.results_dir)))
        atomic_write_bytes(self.suite.out / "gpu_results.tar.gz", buf.getvalue())
        atomic_write_bytes(
            self.suite.out / "gpu_call.json", (json.dumps(self.record, indent=1) + "\n").encode()
        )


def gpu_report(path: Path) -> dict[str, Any] | None:
    """The benchmark report in ``path`` when it was measured on a GPU, else None."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    device = json.dumps(report.get("device") or report.get("devices") or "")
    return report if "GPU" in device or "CUDA" in device else None


def bench_done(path: Path) -> bool:
    """True when ``path`` holds a benchmark report measured on a GPU."""
    return gpu_report(path) is not None


def _concurrency_report(suite: Suite) -> dict[str, Any] | None:
    """The GPU concurrency benchmark's report, when the cells run on a GPU and it was measured on one."""
    return gpu_report(suite.results_dir / "concurrency_gpu.json") if suite.device.startswith("cuda") else None


def run_benchmarks(suite: Suite, call: Call) -> None:
    """Each speed benchmark without GPU results yet, in a subprocess with a time limit."""
    for bench in BENCHES:
        stem = suite.results_dir / bench.stem
        entry: dict[str, Any] = {"name": bench.script, "results": bench.stem}
        if bench_done(stem.with_suffix(".json")):
            entry["status"] = "done earlier"
        elif suite.elapsed() > BENCH_SHARE * suite.budget_s:
            entry["status"] = "not started: the budget's share for benchmarks is spent"
        else:
            args = (bench.smoke_args if suite.smoke else bench.args).split()
            cmd = [sys.executable, str(REPO / "benchmarks" / f"{bench.script}.py"), *args, "--out", str(stem)]
            # A benchmark may overrun the benchmarks' share by a minute at most, and never the budget.
            share_left = BENCH_SHARE * suite.budget_s - suite.elapsed() + 60.0
            limit = min(bench.timeout_s, share_left, suite.time_left())
            entry.update(_run_subprocess(cmd, limit, call.log))
            if entry["status"] == "ok":
                call.add_file(stem.with_suffix(".json"))
                call.add_file(stem.with_suffix(".md"))
        call.log(f"[gpu-suite] benchmark {bench.script}: {entry['status']}")
        call.record["benchmarks"].append(entry)
        call.write()


def _run_subprocess(cmd: list[str], timeout_s: float, log) -> dict[str, Any]:
    if timeout_s < 10:
        return {"status": "not started: no time left"}
    log(f"[gpu-suite] $ {' '.join(cmd)}  (limit {timeout_s:.0f} s)")
    t0 = time.monotonic()
    # A session of its own, so that at the limit its whole process group goes: a benchmark's spawned
    # workers (the concurrency probe's) would otherwise outlive it and keep their CUDA contexts.
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        log(out)
        return {
            "status": f"stopped at its limit of {timeout_s:.0f} s",
            "wall_s": round(time.monotonic() - t0, 1),
        }
    log(out)
    status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    return {"status": status, "wall_s": round(time.monotonic() - t0, 1)}


def _train_sizes(refs) -> dict[str, float]:
    """Training sketches per dataset, from the compact exports' row counts (unknown: left out)."""
    sizes = {}
    for ref in refs:
        folder = export_folder(ref)
        if folder is not None:
            info = json.loads((folder / EXPORT_MARK).read_text(encoding="utf-8"))
            sizes[ref.name] = float(info["rows"]["sketches"].get("train", 0)) or None
    return {k: v for k, v in sizes.items() if v}


def grid_status(h: Harness, refs, seeds: list[int]) -> dict[str, Any]:
    """The protocol's cells in priority order, sorted into done, stale, blocked (with why) and pending."""
    by_name = {r.name: r for r in refs}
    order = priority_order([r.name for r in refs], list(h.bench["methods"]), seeds)
    status: dict[str, Any] = {"order": order, "done": [], "stale": [], "blocked": {}, "pending": []}
    for cell in order:
        ref, method = by_name[cell.dataset], h.bench["methods"][cell.method]
        rec = read_cell(h.cell_path(cell.dataset, cell.method, cell.seed))
        why = dataset_unavailable(ref)
        if why is None and method["kind"] == "clip" and h.clip_factory is None:
            why = "CLIP weights unavailable offline"
        if rec is not None:
            status["stale" if stale_cell(h, ref, cell.method, cell.seed, rec) else "done"].append(cell)
        elif why:
            status["blocked"][cell] = why
        else:
            status["pending"].append(cell)
    return status


def _estimator(h: Harness, refs, done: list[Cell], device_kind: str) -> Estimator:
    """An estimator primed with the finished cells made on the same kind of device (their wall times)."""
    untrained = frozenset(n for n, m in h.bench["methods"].items() if not is_trained(m))
    est = Estimator(_train_sizes(refs), untrained=untrained)
    for cell in done:
        rec = read_cell(h.cell_path(cell.dataset, cell.method, cell.seed)) or {}
        if str(rec.get("device", "")).startswith(device_kind) and float(rec.get("wall_s") or 0) > 0:
            est.add(cell, float(rec["wall_s"]))
    return est


def cells_at_once(suite: Suite) -> tuple[int, str]:
    """How many cells run at once, and why: ``--parallel``, else the GPU concurrency benchmark's
    ``best_procs`` (on a GPU, once measured), else 1."""
    if suite.parallel:
        return suite.parallel, "--parallel"
    best = (_concurrency_report(suite) or {}).get("best_procs")
    if isinstance(best, int) and best >= 1:
        return best, "best_procs of concurrency_gpu.json"
    return 1, "default"


def prior_slowdown(suite: Suite, workers: int) -> float:
    """How much slower one cell runs while ``workers`` run at once, for the estimates made before any cell is
    timed: from the GPU concurrency report when it measured that count, else ``workers`` (no overlap)."""
    if workers <= 1:
        return 1.0
    rows = {r.get("procs"): r for r in (_concurrency_report(suite) or {}).get("rows", [])}
    if 1 in rows and workers in rows and rows[workers].get("steps_per_s_each"):
        each = rows[workers]["steps_per_s_each"]
        return max(1.0, rows[1]["steps_per_s_total"] / (sum(each) / len(each)))
    return float(workers)


def run_accuracy(suite: Suite, call: Call, monitor: GpuMonitor) -> dict[str, Any]:
    """Run pending cells while they fit; returns the summary (done, left, estimated calls left)."""
    phase_start = suite.elapsed()
    spec = JobSpec(
        config=suite.config,
        results_dir=suite.results_dir,
        runs_dir=suite.runs_dir,
        data_dir=suite.data_dir,
        device=suite.device,
        command=suite.command,
        deadline=suite.started + suite.budget_s - RESERVE_S,
        compile=suite.compile,
    )
    h, by_name = make_harness(spec)
    refs = list(by_name.values())
    status = grid_status(h, refs, [int(s) for s in h.bench["seeds"]])
    for cell in status["stale"]:
        call.log(
            f"[gpu-suite] {cell}: made with other settings than the config's now; delete it to run it again"
        )
    estimator = _estimator(h, refs, status["done"], "GPU" if suite.device.startswith("cuda") else "CPU")
    progress = CellProgress(h, call, estimator, list(status["pending"]), status["done"])
    workers, why = cells_at_once(suite)
    slowdown = prior_slowdown(suite, workers)
    # The priors stand for one cell alone; measured cells already ran alongside the others.
    estimator.fixed_s *= slowdown
    estimator.prior_s_per_sketch *= slowdown
    estimator.untrained_prior_s *= slowdown
    call.record["cells_at_once"] = {"workers": workers, "from": why, "prior_slowdown": round(slowdown, 2)}
    call.log(f"[gpu-suite] cells at once: {workers} ({why}); prior estimates x{slowdown:.2f}")
    if workers > 1 and run_parallel(spec, progress, workers, suite.time_left, monitor):
        call.log("[gpu-suite] a worker process died: the rest of the call runs one cell at a time")
        workers = 1
    while (choice := next_cell(progress.pending, estimator, suite.time_left())) is not None:
        cell, estimate = choice
        entry = progress.start(cell, estimate, suite.time_left())
        t0, error = time.monotonic(), None
        try:
            entry.update(run_one(h, by_name[cell.dataset], cell, monitor))
        except OutOfTime as err:
            error = err
        except Exception as err:  # noqa: BLE001  (one broken cell must not cost the call's other cells)
            error = err
            call.log(traceback.format_exc())
        if error is not None:
            entry["wall_s"] = round(time.monotonic() - t0, 1)
        if not progress.finish(cell, entry, error):
            break
    left = progress.pending + progress.failed
    # A call's time for cells: its budget less what it spends before the first cell (start-up, not the
    # one-off benchmarks).
    bench_s = sum(b.get("wall_s", 0.0) for b in call.record["benchmarks"])
    usable = suite.budget_s - RESERVE_S - max(phase_start - bench_s, 0.0)
    summary = {
        "grid": len(status["order"]),
        "done": len(progress.done),
        "done_this_call": progress.ran,
        "left": len(left),
        "left_cells": [str(c) for c in left],
        "failed_this_call": [str(c) for c in progress.failed],
        "stale": [str(c) for c in status["stale"]],
        "blocked": {str(c): why for c, why in status["blocked"].items()},
        "estimated_left_s": round(sum(estimator.estimate(c) for c in left), 1),
        "cells_at_once": workers,
        "estimated_calls_left": calls_left(left, estimator, usable, workers),
        "usable_s_per_call": round(usable, 1),
    }
    call.record["summary"] = summary
    return summary


def print_summary(summary: dict[str, Any], log) -> None:
    blocked = sorted({why for why in summary["blocked"].values()})
    log(
        f"[gpu-suite] cells done: {summary['done']} of {summary['grid']} ({summary['done_this_call']} this call); "
        f"cells left: {summary['left']} (about {summary['estimated_left_s']:.0f} s); "
        f"estimated calls left: {summary['estimated_calls_left']} (of about {summary['usable_s_per_call']:.0f} s "
        "of cells each)"
    )
    if summary["blocked"]:
        log(f"[gpu-suite] not runnable here: {len(summary['blocked'])} cells ({'; '.join(blocked)})")
    if summary["stale"]:
        log(f"[gpu-suite] stale cells (other settings): {', '.join(summary['stale'])}")
    if summary["failed_this_call"]:
        log(f"[gpu-suite] failed this call: {', '.join(summary['failed_this_call'])} (see the log)")


def run(suite: Suite, log) -> int:
    """The device run (module docstring); returns the exit status."""
    suite.out.mkdir(parents=True, exist_ok=True)
    datasets.disable_progress_bars()
    if suite.data_dir is not None and not suite.data_dir.is_dir():
        log(
            f"[gpu-suite] no data folder {suite.data_dir}: the real datasets' cells cannot run. Build it with "
            "`python benchmarks/gpu_suite.py --prepare` and carry it."
        )
    call = Call(suite, log)
    env = environment(suite.device)
    call.record["environment"] = env
    log(f"[gpu-suite] {json.dumps(env)}")
    if not env["pillow_webp"]:
        log(
            "[gpu-suite] this Pillow cannot decode WebP: no cell of the compact export can run; carry a Pillow wheel"
        )
    if suite.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    call.write()
    try:
        if suite.benchmarks:
            run_benchmarks(suite, call)
        summary = run_accuracy(suite, call, GpuMonitor(enabled=suite.device.startswith("cuda")))
    finally:
        call.write()
    print_summary(summary, log)
    return 0


def smoke(suite: Suite, log, keep: bool = False) -> int:
    """The device run on the CPU in a temporary folder (results, run folders), after writing, reading back
    and checking a compact export of generated data (``--prepare``'s export path); the bundle goes to
    ``suite.out`` as on the device."""
    work = Path(tempfile.mkdtemp(prefix="gpu_suite_smoke_"))
    try:
        t0 = time.monotonic()
        datasets.disable_progress_bars()
        original = load_fgsbir_pair("synthetic", num_photos=8, sketches_per_photo=2, image_size=64, seed=0)
        info = write_export(*original, work / "data" / "synthetic", name="synthetic", source="generated")
        checked = verify_export(original, read_export(work / "data" / "synthetic"))
        log(
            f"[gpu-suite] smoke: compact export of generated data: {checked} images equal after the round "
            f"trip, {info['bytes']} bytes, {time.monotonic() - t0:.1f} s"
        )
        inner = dataclasses.replace(
            suite, results_dir=work / "results", runs_dir=work / "runs", data_dir=None
        )
        return run(inner, log)
    finally:
        if keep:
            log(f"[gpu-suite] smoke: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
