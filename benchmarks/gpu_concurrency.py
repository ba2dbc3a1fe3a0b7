"""Benchmark: training throughput of the GPU protocol's cells when several run at once on one device.

One FG-SBIR cell trains a small model (EfficientNet-Lite0, batch 32) and syncs every step, so one process
alone may leave a large GPU mostly idle. This measures, side by side in one run, the training steps per
second of ``P`` processes stepping at once for each ``P`` of ``--procs``: each process builds the
``dssa_full`` cell of ``gpu.yaml`` (the engine's session: model, HOLEF loss, miner, optimiser, bf16,
channels_last; generated data at the protocol's image sizes) and makes its batches with the GPU suite's
device pipeline, as the cells do; the processes are started once, warmed up, and for each ``P`` the first
``P`` of them step together for ``--seconds``. The aggregate rate (steps per second summed over the
processes) against one process alone is the gain; ``best_procs`` is the smallest ``P`` within 5% of the
best aggregate rate, which the GPU suite uses to run that many cells at once.

    python benchmarks/gpu_concurrency.py --device cuda --procs 1 2 4 --seconds 6    # on the device
    python benchmarks/gpu_concurrency.py --device cpu --procs 1 2 --seconds 2 --image-size 64 --batch-size 4

Writes ``--out``.json and .md (default ``benchmarks/results/concurrency_gpu``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
GPU_CONFIG = BENCH / "accuracy_configs" / "gpu.yaml"
METHOD = "dssa_full"


def _session(args, workdir: str):
    """The dssa_full cell's training session on generated data, and its device batches."""
    import torch
    from accuracy_cells import Harness, train_config
    from accuracy_config import DatasetRef, load_benchmark_config
    from gpu_train import device_pipeline

    from fgsbir_plugin.data import load_fgsbir_pair
    from fgsbir_plugin.train.session import start_session

    bench = load_benchmark_config(GPU_CONFIG)
    kwargs = {"num_photos": args.photos, "sketches_per_photo": 1, "image_size": args.load_size}
    ref = DatasetRef("synthetic", "synthetic", None, kwargs)
    h = Harness(bench, Path(workdir) / "results", "concurrency", Path(workdir) / "runs", device=args.device)
    cfg = train_config(h, ref, METHOD, 0, validate=False)
    overrides = {"out": str(Path(workdir) / "run"), "cache": "no", "workers": 0, "progress": False}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.image_size:
        overrides["image_size"] = args.image_size
    cfg = dataclasses.replace(cfg, **overrides)
    s = start_session(cfg, load_fgsbir_pair("synthetic", **kwargs))
    torch.backends.cudnn.benchmark = s.device.type == "cuda"
    return s, device_pipeline(s)


def _worker(rank: int, args, commands, results) -> None:
    """Build the session, then answer the parent's commands: ("warm", steps), ("go", seconds), None."""
    import torch
    from gpu_schedule import cpu_share

    from fgsbir_plugin.train.loop import train_step

    # On the GPU each process gets its share of the CPU cores, as the suite's cell workers do (decoding,
    # validation transforms); torch's default would give every process all of them.
    torch.set_num_threads(args.threads if args.device == "cpu" else cpu_share(max(args.procs)))
    with tempfile.TemporaryDirectory(prefix="gpu_concurrency_") as workdir:
        try:
            s, batches = _session(args, workdir)
        except Exception as err:  # noqa: BLE001  (reported to the parent, which fails with it)
            results.put((rank, "error", f"{type(err).__name__}: {err}"))
            return
        order = s.sampler.epoch_batches(0)
        count = 0

        def step() -> None:
            nonlocal count
            sketch, photo, labels = batches.batch(0, order[count % len(order)])
            train_step(s, sketch, photo, labels, contextlib.nullcontext())  # syncs: it returns the loss
            s.optimizer.step()
            s.optimizer.zero_grad(set_to_none=True)
            count += 1

        results.put((rank, "ready", None))
        while (command := commands.get()) is not None:
            kind, value = command
            if kind == "warm":
                for _ in range(value):
                    step()
                results.put((rank, "warm", None))
            else:
                if s.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t0, n = time.monotonic(), 0
                while time.monotonic() - t0 < value:
                    step()
                    n += 1
                wall = time.monotonic() - t0
                mem = torch.cuda.max_memory_allocated() / 2**30 if s.device.type == "cuda" else None
                results.put((rank, "went", {"steps": n, "wall_s": wall, "mem_gib": mem}))


def _collect(results, ranks: list[int], kind: str, timeout_s: float) -> dict[int, object]:
    got = {}
    while len(got) < len(ranks):
        rank, what, value = results.get(timeout=timeout_s)
        if what == "error":
            raise RuntimeError(f"process {rank} could not build the cell: {value}")
        if what == kind:
            got[rank] = value
    return got


def measure(args) -> list[dict]:
    """One row per P of ``args.procs``: per-process and aggregate steps per second, gain over P = 1."""
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    n = max(args.procs)
    commands = [ctx.Queue() for _ in range(n)]
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, args, commands[r], results), daemon=True) for r in range(n)]
    for p in procs:
        p.start()
    rows = []
    try:
        _collect(results, list(range(n)), "ready", args.timeout_s)
        # One process at a time, so that cuDNN's autotuning picks its kernels without the others' load.
        for rank, q in enumerate(commands):
            q.put(("warm", args.warmup))
            _collect(results, [rank], "warm", args.timeout_s)
        for p_count in args.procs:
            for q in commands[:p_count]:
                q.put(("go", args.seconds))
            went = _collect(results, list(range(p_count)), "went", args.seconds + args.timeout_s)
            rates = [went[r]["steps"] / went[r]["wall_s"] for r in range(p_count)]
            mems = [went[r]["mem_gib"] for r in range(p_count) if went[r]["mem_gib"] is not None]
            rows.append(
                {
                    "procs": p_count,
                    "steps_per_s_each": [round(x, 2) for x in rates],
                    "steps_per_s_total": round(sum(rates), 2),
                    "gpu_mem_peak_gib_each": round(max(mems), 2) if mems else None,
                }
            )
            print(
                f"{p_count} at once: {sum(rates):.2f} steps/s in all ({', '.join(f'{x:.2f}' for x in rates)})"
            )
    finally:
        for q in commands:
            q.put(None)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    base = rows[0]["steps_per_s_total"] if rows and rows[0]["procs"] == 1 else None
    for row in rows:
        row["gain_vs_1"] = round(row["steps_per_s_total"] / base, 3) if base else None
    return rows


def best_procs(rows: list[dict]) -> int:
    """The smallest process count within 5% of the best aggregate rate."""
    top = max(r["steps_per_s_total"] for r in rows)
    return min(r["procs"] for r in rows if r["steps_per_s_total"] >= 0.95 * top)


def _markdown(report: dict) -> str:
    lines = [
        "# Training throughput of the GPU protocol's cells, several at once on one device",
        "",
        f"- device: {report['device']}; date: {report['date']}; commit: {report['commit']}",
        f"- command: `{report['command']}`",
        f"- what: {report['what']}",
        f"- best_procs (the smallest count within 5% of the best aggregate rate): **{report['best_procs']}**",
        "",
        "| processes at once | steps/s, all together | gain over 1 | steps/s, each | peak GPU memory each (GiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['procs']} | {r['steps_per_s_total']} | {r['gain_vs_1']} | "
            f"{', '.join(map(str, r['steps_per_s_each']))} | {r['gpu_mem_peak_gib_each']} |"
        )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4], help="process counts (the first: 1)")
    p.add_argument("--seconds", type=float, default=6.0, help="timed stepping per process count")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per process (cudnn autotuning)")
    p.add_argument("--photos", type=int, default=64, help="generated photos (one sketch each)")
    p.add_argument("--load-size", type=int, default=256, help="generated image side (the export's 256)")
    p.add_argument("--image-size", type=int, default=None, help="default: the model's (224)")
    p.add_argument("--batch-size", type=int, default=None, help="default: gpu.yaml's (32)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process with --device cpu")
    p.add_argument("--timeout-s", type=float, default=300.0, help="wait at most this for a process's answer")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "concurrency_gpu"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.procs[0] != 1 or sorted(set(args.procs)) != args.procs:
        raise SystemExit(
            "--procs must rise from 1 without repeats (e.g. 1 2 4): the gain is measured against 1."
        )
    sys.path[:0] = [str(BENCH), str(REPO)]
    import torch
    from report_files import write_report

    from fgsbir_plugin.runtime import describe_device, git_commit

    rows = measure(args)
    report = {
        "benchmark": "gpu_concurrency",
        "device": describe_device(torch.device(args.device)),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit() or os.environ.get("FGSBIR_COMMIT"),
        "command": " ".join(
            ["python", "benchmarks/gpu_concurrency.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "torch": torch.__version__,
        "what": f"{METHOD} of gpu.yaml on generated data, {args.seconds} s of stepping per process count after "
        f"{args.warmup} warm-up steps; each process syncs every step, as the engine does",
        "rows": rows,
        "best_procs": best_procs(rows),
    }
    out = Path(args.out)
    write_report(out.with_suffix(".json"), report, _markdown(report))
    print(f"best_procs {report['best_procs']}; wrote {out.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
