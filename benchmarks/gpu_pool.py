"""How the GPU suite runs its accuracy cells: one at a time in its own process, or several at once.

One cell (a small model, batch 32, a sync every step) may leave a large GPU mostly idle; ``gpu_concurrency.py``
measures how many cells stepping at once give the most steps per second. With ``workers > 1``,
:func:`run_parallel` runs that many cells at once, each in a worker process of its own (spawned: CUDA
cannot be used in forked children), with the same schedule as one at a time: the next pending cell in
priority order whose estimate fits in the time left starts whenever a worker is free. Each worker builds
the harness from a :class:`JobSpec` and trains with the same ``deadline``; the parent samples the GPU's
utilisation for all of them and gives each cell the mean over its own run. A worker that dies (the pool
breaks) ends the parallel phase; the caller goes on one cell at a time.

:class:`CellProgress` keeps the call's bookkeeping either way: pending, done, failed cells, the estimator,
and the call record rewritten after each cell.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from accuracy_cells import Harness, run_cell
from accuracy_config import dataset_ref, load_benchmark_config, results_name_for
from gpu_probe import GpuMonitor
from gpu_schedule import Cell, Estimator, cpu_share, next_cell
from gpu_train import OutOfTime, train_on_device

from fgsbir_plugin.run_folder import RunFolder


@dataclass(frozen=True)
class JobSpec:
    """What a cell needs besides its name, in a form a worker process receives (picklable)."""

    config: Path
    results_dir: Path
    runs_dir: Path
    data_dir: Path | None
    device: str
    command: str
    deadline: float  # time.monotonic() seconds (one clock for every process of the machine)
    compile: bool = False


def make_harness(spec: JobSpec) -> tuple[Harness, dict[str, Any]]:
    """The accuracy harness of ``spec`` (cells trained on the device, stopped at the deadline) and its
    datasets by name."""
    bench = load_benchmark_config(spec.config)
    data_dir = str(spec.data_dir) if spec.data_dir is not None else None
    refs = {d: dataset_ref(d, bench, data_dir) for d in bench["datasets"]}
    h = Harness(
        bench=bench,
        results_dir=spec.results_dir,
        results_name=results_name_for(spec.config),
        runs_dir=spec.runs_dir,
        device=spec.device,
        command=spec.command,
        train_fn=functools.partial(train_on_device, deadline=spec.deadline, compile=spec.compile),
    )
    return h, {r.name: r for r in refs.values()}


def _steps_run(run_dir: Path) -> int | None:
    """The optimiser steps a finished run folder ran (its "end" record), or None."""
    path = RunFolder(run_dir).log_path
    if not path.is_file():
        return None
    step = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == "end":
            step = rec.get("step")
    return step


def run_one(h: Harness, ref, cell: Cell, monitor: GpuMonitor) -> dict[str, Any]:
    """Run one cell; its entry for the call record (raises OutOfTime when the deadline stops it)."""
    t0 = time.monotonic()
    with monitor:
        rec = run_cell(h, ref, cell.method, cell.seed)
    entry = {"status": "done", "wall_s": round(time.monotonic() - t0, 1), "cell_wall_s": rec["wall_s"]}
    entry["acc@1"], entry["acc@10"] = rec["metrics"]["acc@1"], rec["metrics"]["acc@10"]
    if rec.get("run_dir"):
        steps = _steps_run(h.run_dir(cell.dataset, cell.method, cell.seed))
        entry["steps"] = steps
        entry["steps_per_s"] = round(steps / entry["wall_s"], 2) if steps and entry["wall_s"] else None
    return {**entry, **monitor.summary()}


@dataclass
class CellProgress:
    """The call's cells: what is pending, done and failed, the estimator, and the record of each cell."""

    h: Harness
    call: Any  # gpu_run.Call
    estimator: Estimator
    pending: list[Cell]
    done: list[Cell]
    failed: list[Cell] = field(default_factory=list)
    ran: int = 0

    def start(self, cell: Cell, estimate: float, time_left: float) -> dict[str, Any]:
        self.call.log(f"[gpu-suite] {cell}: running (estimate {estimate:.0f} s, {time_left:.0f} s left)")
        return {"cell": str(cell), "estimate_s": round(estimate, 1)}

    def finish(self, cell: Cell, entry: dict[str, Any], error: BaseException | None) -> bool:
        """Record a cell's end (``error``: what stopped it); False when the deadline stopped it."""
        if isinstance(error, OutOfTime):
            entry["status"] = f"stopped at the deadline, not written ({error})"
            self.call.log(f"[gpu-suite] {entry['cell']}: {entry['status']}")
        elif error is not None:
            entry["status"] = f"failed: {type(error).__name__}: {error}"
            self.call.log(f"[gpu-suite] {entry['cell']}: {entry['status']}")
            self.pending.remove(cell)
            self.failed.append(cell)
        else:
            self.pending.remove(cell)
            self.done.append(cell)
            self.ran += 1
            if entry["cell_wall_s"]:
                self.estimator.add(cell, entry["cell_wall_s"])
            self.call.add_file(self.h.cell_path(cell.dataset, cell.method, cell.seed))
            busy = f", GPU busy {entry['gpu_util_mean']}%" if entry.get("gpu_util_mean") is not None else ""
            self.call.log(
                f"[gpu-suite] {cell}: test acc@1 {entry['acc@1']:.2f} acc@10 {entry['acc@10']:.2f} "
                f"({entry['wall_s']:.0f} s{busy})"
            )
        self.call.record["cells"].append(entry)
        self.call.write()
        return not isinstance(error, OutOfTime)


# -- worker processes ---------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(threads: int, cuda: bool) -> None:
    datasets.disable_progress_bars()
    torch.set_num_threads(threads)
    # as the suite's own process does (gpu_run.main) and the concurrency probe measured
    torch.backends.cudnn.benchmark = cuda


def cell_job(spec: JobSpec, cell: Cell) -> dict[str, Any]:
    """Run ``cell`` in a worker process; its entry (wall time, metrics, steps, peak GPU memory)."""
    if _WORKER.get("spec") != spec:  # one harness per worker: its decoded images stay for the next cell
        _WORKER["spec"], (_WORKER["h"], _WORKER["refs"]) = spec, make_harness(spec)
    monitor = GpuMonitor(enabled=spec.device.startswith("cuda"), utilisation=False)
    return run_one(_WORKER["h"], _WORKER["refs"][cell.dataset], cell, monitor)


def run_parallel(spec: JobSpec, progress: CellProgress, workers: int, time_left, monitor: GpuMonitor) -> bool:
    """Run the pending cells ``workers`` at a time while they fit; True when the pool broke (a worker died)."""
    running: dict[Future, tuple[Cell, dict[str, Any], float]] = {}
    broken = stop = False
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        # each worker its share of the cores, on the GPU too (decoding and validation transforms run there)
        initargs=(cpu_share(workers), spec.device.startswith("cuda")),
    )
    with pool, monitor:
        while True:
            while not (stop or broken) and len(running) < workers:
                busy = {c for c, _, _ in running.values()}
                choice = next_cell(
                    [c for c in progress.pending if c not in busy], progress.estimator, time_left()
                )
                if choice is None:
                    break
                cell, estimate = choice
                entry = progress.start(cell, estimate, time_left())
                running[pool.submit(cell_job, spec, cell)] = (cell, entry, time.monotonic())
            if not running:
                return broken
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                cell, entry, t0 = running.pop(future)
                end = time.monotonic()
                error = future.exception()
                if error is None:
                    entry.update(future.result())
                else:
                    entry["wall_s"] = round(end - t0, 1)
                    broken = broken or isinstance(error, BrokenProcessPool)
                    if not isinstance(error, OutOfTime):
                        # The pool gives a worker's exception its traceback as text, in __cause__.
                        progress.call.log(str(error.__cause__ or "".join(traceback.format_exception(error))))
                entry.update(monitor.utilisation_between(t0, end) if monitor.enabled else {})
                entry["cells_at_once"] = workers
                if isinstance(error, BrokenProcessPool):
                    # Not the cell's fault, perhaps: it stays pending for the one-at-a-time phase.
                    entry["status"] = f"lost with its worker process ({error})"
                    progress.call.record["cells"].append(entry)
                    progress.call.write()
                    continue
                stop = not progress.finish(cell, entry, error) or stop
