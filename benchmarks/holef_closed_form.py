"""Benchmark: HOLEF closed form vs the naive outer subtraction, time and peak memory, side by side.

    python benchmarks/holef_closed_form.py [--devices cpu,cuda] [--threads 1] [--naive-cap-gib 2]

For each device and (Nq, Nr, d) in (64, 64, 256), (128, 128, 512), (1024, 1024, 512), float32:

* ``closed``: ``holef_distance_matrix`` (two matrix products).
* ``naive``: the test reference, materialising the whole ``[Nq, Nr, d, d]`` outer difference at
  once (squared and weighted in place, so one such tensor is the peak). On CPU it is only run when
  that tensor fits under ``--naive-cap-gib`` (the sandbox is shared); otherwise the row says
  "not run" and how much it would need. On CUDA it is always attempted and an out-of-memory error
  is recorded as measured.
* ``naive_chunked``: the same arithmetic over blocks of query rows, each block ``<= --chunk-mib``,
  i.e. what one would write to make the naive form fit; run when ``Nq Nr d^2`` is at most
  ``--max-naive-elements`` (a time budget), otherwise "not run" with the element count.

Every (device, method, size) runs in a fresh subprocess, so that no case inherits memory an
earlier one left with the allocator. Peak memory:

* CPU, ``peak_mem_bytes``: the most bytes held at once by torch's CPU allocator, from the alloc/free
  events of ``torch.profiler`` (``profile_memory=True``); the inputs are not counted.
  ``rss_peak_growth_bytes``: the operating system's view, growth of the peak resident set
  (``VmHWM`` reset through ``/proc/self/clear_refs``, minus ``VmRSS`` before the first call), which adds
  first-call overheads (thread pools, BLAS buffers, page granularity). ``tracemalloc`` is not used:
  it does not see torch's allocations.
* CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the call.

The first call is unprofiled (RSS, and CUDA memory); on CPU a second, profiled call gives the
allocator peak. Time: median wall time of further calls (at least 3, until ``--min-time-s``), or
the first call alone when it took more than ``--single-run-s`` seconds. Naive outputs are checked
against the closed form.

Writes ``benchmarks/results/holef_closed_form.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from report_files import write_report

from fgsbir_plugin.holef import holef_distance_matrix
from fgsbir_plugin.runtime import cpu_model

SIZES = [(64, 64, 256), (128, 128, 512), (1024, 1024, 512)]
METHODS = ["closed", "naive", "naive_chunked"]
GIB = 1024**3
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- measurement (child process)
def _proc_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.M).group(1))


def _profiler_peak_bytes(prof) -> int | None:
    """Peak of the bytes held by torch's CPU allocator during the profiled call (alloc/free events)."""
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:  # the private kineto API moved: report no figure rather than a wrong one
        return None
    held = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        held += e.nbytes()
        peak = max(peak, held)
    return int(peak)


def _naive_full(s, p, W):
    diff = s[:, None, :, None] - p[None, :, None, :]  # [Nq, Nr, d, d]
    diff.square_()
    diff.mul_(W)
    return diff.sum(dim=(-2, -1))


def _naive_chunked(s, p, W, chunk_bytes):
    nr, d = p.shape[0], p.shape[1]
    rows = max(1, chunk_bytes // (nr * d * d * s.element_size()))
    return torch.cat([_naive_full(s[i : i + rows], p, W) for i in range(0, s.shape[0], rows)])


def _measure(args) -> dict:
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    nq, nr, d = args.size
    g = torch.Generator().manual_seed(0)
    s = torch.randn(nq, d, generator=g).to(dev)
    p = torch.randn(nr, d, generator=g).to(dev)
    W = (torch.eye(d) + 0.01 * torch.randn(d, d, generator=g)).to(dev)
    chunk_bytes = args.chunk_mib * 1024**2
    fn = {
        "closed": lambda: holef_distance_matrix(s, p, W),
        "naive": lambda: _naive_full(s, p, W),
        "naive_chunked": lambda: _naive_chunked(s, p, W, chunk_bytes),
    }[args.method]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    # First call: unprofiled, in a fresh process: the operating system's peak resident set growth.
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _proc_kib("VmRSS") * 1024
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current resident set
    t0 = time.perf_counter()
    try:
        out = fn()
        sync()
    except torch.OutOfMemoryError as err:  # CUDA only: an allocation beyond the card, as measured
        return {"status": "failed", "reason": f"torch.OutOfMemoryError: {str(err).splitlines()[0]}"}
    first = time.perf_counter() - t0
    mem = {}
    if dev.type == "cuda":
        mem["peak_mem_bytes"] = int(torch.cuda.max_memory_allocated() - before)
    else:
        mem["rss_peak_growth_bytes"] = int(_proc_kib("VmHWM") * 1024 - before)
        # Second call, profiled: the bytes torch's allocator held at once.
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        ) as prof:
            fn()
        mem["peak_mem_bytes"] = _profiler_peak_bytes(prof)

    times = []
    if first <= args.single_run_s:
        budget_end = time.perf_counter() + args.min_time_s
        while len(times) < args.max_repeats and (len(times) < 3 or time.perf_counter() < budget_end):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    else:  # slow case: the unprofiled first call is the timing (its one-off overheads are ~ms)
        times.append(first)
    row = {
        "status": "ok",
        "time_s": statistics.median(times),
        "n_timed_runs": len(times),
        "first_call_s": first,
        **mem,
    }
    if args.method != "closed":
        del fn
        ref = holef_distance_matrix(s, p, W)
        row["max_abs_diff_vs_closed"] = float((out - ref).abs().max())
        row["max_abs_closed"] = float(ref.abs().max())
    return row


# ---------------------------------------------------------------- orchestration (parent)
def child_env(threads: int) -> dict[str, str]:
    """The environment of a measuring child: this tree first on its import path, then the parent's.

    The parent's PYTHONPATH is kept: on the GPU device the package's dependencies (pytorch-metric-learning)
    are importable only from the folder the suite installed the carried wheels into, named there.
    """
    inherited = os.environ.get("PYTHONPATH", "")
    path = os.pathsep.join([str(ROOT), *([inherited] if inherited else [])])
    return dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=path)


def broken_rows(rows: list[dict]) -> list[dict]:
    """Cases that failed for a reason other than running out of GPU memory (a measured outcome)."""
    return [r for r in rows if r["status"] == "failed" and "OutOfMemoryError" not in r["reason"]]


def _run_child(device, method, size, args) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_child",
        "--device",
        device,
        "--method",
        method,
        "--size",
        *map(str, size),
        "--threads",
        str(args.threads),
        "--chunk-mib",
        str(args.chunk_mib),
        "--min-time-s",
        str(args.min_time_s),
        "--max-repeats",
        str(args.max_repeats),
        "--single-run-s",
        str(args.single_run_s),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(args.threads))
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"status": "failed", "reason": f"exit code {proc.returncode}: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _plan(device, method, size, args) -> dict | None:
    """Why a case is not run (None: run it)."""
    nq, nr, d = size
    elements = nq * nr * d * d
    if method == "naive" and device == "cpu" and elements * 4 > args.naive_cap_gib * GIB:
        return {
            "status": "not run",
            "reason": f"would need {elements * 4 / GIB:.1f} GiB for the [Nq, Nr, d, d] float32 tensor "
            f"(cap {args.naive_cap_gib} GiB on this shared machine)",
        }
    if method == "naive_chunked" and elements > args.max_naive_elements[device]:
        return {
            "status": "not run",
            "reason": f"Nq*Nr*d^2 = {elements:.2e} outer-difference elements, over the time budget "
            f"of {args.max_naive_elements[device]:.0e} for {device}",
        }
    return None


def _fmt_bytes(b):
    if b is None:
        return "-"
    return f"{b / 1024**2:.1f} MiB" if b < GIB else f"{b / GIB:.2f} GiB"


def _markdown(result) -> str:
    lines = [
        "# HOLEF closed form vs naive outer subtraction",
        "",
        f"- date: {result['date']}",
        f"- command: `{result['command']}`",
        f"- torch {result['torch']}, float32, {result['threads']} CPU thread(s), wall time {result['wall_s']} s",
    ]
    for dev, name in result["devices"].items():
        lines.append(f"- {dev}: {name}")
    lines += [
        f"- peak memory: {result['peak_mem_note']}",
        "",
        "| device | Nq, Nr, d | method | time | peak memory | RSS growth | time / closed | memory / closed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["comparison"]:
        closed = row["closed"]
        for method in METHODS:
            r = row[method]
            if r["status"] == "ok":
                t_ = f"{r['time_s'] * 1e3:.3g} ms"
                t_ratio = "1" if method == "closed" else f"{r['time_s'] / closed['time_s']:.3g}"
                m_ratio = "-"
                if r.get("peak_mem_bytes") and closed.get("peak_mem_bytes"):
                    m_ratio = (
                        "1" if method == "closed" else f"{r['peak_mem_bytes'] / closed['peak_mem_bytes']:.3g}"
                    )
                cells = [
                    t_,
                    _fmt_bytes(r.get("peak_mem_bytes")),
                    _fmt_bytes(r.get("rss_peak_growth_bytes")),
                    t_ratio,
                    m_ratio,
                ]
            else:
                cells = [f"{r['status']}: {r['reason']}", "-", "-", "-", "-"]
            lines.append(f"| {row['device']} | {row['size']} | {method} | " + " | ".join(cells) + " |")
    lines += ["", "Agreement of the naive forms with the closed form (max |difference| of max |D|):", ""]
    for r in result["rows"]:
        if r["status"] == "ok" and "max_abs_diff_vs_closed" in r:
            lines.append(
                f"- {r['device']} {r['method']} {tuple(r['size'])}: "
                f"{r['max_abs_diff_vs_closed']:.3g} of {r['max_abs_closed']:.3g}"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default=None, help="comma list, default: cpu plus cuda when available")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--naive-cap-gib", type=float, default=2.0)
    parser.add_argument("--chunk-mib", type=int, default=256)
    parser.add_argument("--cpu-max-naive-elements", type=float, default=5e9)
    parser.add_argument("--cuda-max-naive-elements", type=float, default=3e11)
    parser.add_argument("--min-time-s", type=float, default=0.5)
    parser.add_argument("--max-repeats", type=int, default=20)
    parser.add_argument("--single-run-s", type=float, default=2.0)
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        help="Nq x Nr x d cases, e.g. 64x64x256 (default: "
        + ", ".join("x".join(map(str, s)) for s in SIZES)
        + ")",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "holef_closed_form"))
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(_measure(args)))
        return 0

    devices = (
        args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes] if args.sizes else SIZES
    if any(len(s) != 3 for s in sizes):
        parser.error(f"--sizes takes Nq x Nr x d cases such as 64x64x256, got {args.sizes}.")
    args.max_naive_elements = {"cpu": args.cpu_max_naive_elements, "cuda": args.cuda_max_naive_elements}
    names = {
        "cpu": f"CPU: {cpu_model() or platform.processor() or 'unknown'}, {os.cpu_count()}-core sandbox (shared), {args.threads} thread(s) used"
    }
    if "cuda" in devices:
        names["cuda"] = f"CUDA: {torch.cuda.get_device_name(0)}"
    rows = []
    start = time.perf_counter()
    for dev in devices:
        for size in sizes:
            for method in METHODS:
                row = _plan(dev, method, size, args) or _run_child(dev, method, size, args)
                row = {"device": dev, "method": method, "size": list(size), **row}
                rows.append(row)
                shown = (
                    f"{row['time_s'] * 1e3:.3g} ms, {_fmt_bytes(row['peak_mem_bytes'])}"
                    if row["status"] == "ok"
                    else row["reason"]
                )
                print(f"{dev:5s} {method:14s} {size}: {row['status']}: {shown}", flush=True)

    def ratio(a, b, key):
        if a["status"] == "ok" and b["status"] == "ok" and b[key] > 0:
            return round(a[key] / b[key], 1)
        return None

    comparison = []
    for dev in devices:
        for size in sizes:
            by = {r["method"]: r for r in rows if r["device"] == dev and tuple(r["size"]) == size}
            comparison.append(
                {
                    "device": dev,
                    "size": ", ".join(map(str, size)),
                    **by,
                    "time_ratio_naive": ratio(by["naive"], by["closed"], "time_s"),
                    "mem_ratio_naive": ratio(by["naive"], by["closed"], "peak_mem_bytes"),
                    "time_ratio_chunked": ratio(by["naive_chunked"], by["closed"], "time_s"),
                }
            )
    result = {
        "benchmark": "holef_closed_form",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(
            ["python", "benchmarks/holef_closed_form.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "torch": torch.__version__,
        "dtype": "float32",
        "threads": args.threads,
        "devices": names,
        "peak_mem_note": "CPU: most bytes held at once by torch's CPU allocator during one call "
        "(torch.profiler memory events, inputs not counted); RSS growth: VmHWM (reset via /proc/self/clear_refs) "
        "minus VmRSS before the first (unprofiled) call, fresh process per case. CUDA: torch.cuda.max_memory_allocated growth. "
        "tracemalloc is not used: it does not see torch's tensor allocations.",
        "wall_s": round(time.perf_counter() - start, 1),
        "rows": rows,
        "comparison": comparison,
    }
    out = Path(args.out)

    write_report(out.with_suffix(".json"), result, _markdown(result))
    print(f"wrote {out.with_suffix('.json')} and .md in {result['wall_s']} s")
    broken = broken_rows(rows)
    if broken:
        # The report stays for reading, but the run is not a measurement: the GPU suite does not keep it.
        first = broken[0]
        print(
            f"{len(broken)} case(s) failed, first {first['device']} {first['method']} {first['size']}: "
            f"{first['reason']}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
