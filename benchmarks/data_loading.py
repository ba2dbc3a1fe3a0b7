"""Time loading the real datasets into DatasetDicts, including rasterising every ChairV2 sketch.

Measures, side by side in one run (best of ``--repeats`` interleaved rounds, wall clock):

- ``rasterize_only_1thread``: ``rasterize_strokes`` + PNG encoding of all ChairV2 sketches, one thread;
- ``chairv2_load_1thread`` / ``chairv2_load``: ``load_fgsbir_pair("chairv2")`` end to end (unpickle,
  render + encode every sketch, decode-check every photo, build datasets) with one thread and
  with the default thread count;
- ``shoes_v1_load`` / ``chairs_v1_load``: ``load_fgsbir_pair`` of the QMUL-V1 sets (.mat read,
  PNG encoding of sketches and edge maps).

The machine's 1-minute load average before and after is recorded, because the sandbox is shared.

Usage::

    FGSBIR_DATA=/work/shared/data python benchmarks/data_loading.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from report_files import write_report

from fgsbir_plugin._common import default_data_dir
from fgsbir_plugin.data import load_fgsbir_pair
from fgsbir_plugin.data.qmul_v2 import read_strokes
from fgsbir_plugin.data.rasterize import encode_png, rasterize_strokes

RESULTS = Path(__file__).resolve().parent / "results"


def best_of_interleaved(jobs: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each job; rounds run every job once, so a load spike on the shared
    machine hits all of them alike instead of one."""
    best = {name: float("inf") for name in jobs}
    for _ in range(repeats):
        for name, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if data_dir is None or not data_dir.is_dir():
        print("no real data: set $FGSBIR_DATA or pass --data-dir", file=sys.stderr)
        return 2

    load_before = os.getloadavg()[0]
    strokes = list(read_strokes(data_dir, "chairv2").values())

    def rasterize_all(threads: int):
        def one(p):
            return encode_png(rasterize_strokes(p))

        if threads == 1:
            for p in strokes:
                one(p)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, strokes))

    load_fgsbir_pair("chairs_v1", data_dir)  # warm imports and the page cache
    jobs = {
        "rasterize_only_1thread": lambda: rasterize_all(1),
        "chairv2_load_1thread": lambda: load_fgsbir_pair("chairv2", data_dir, num_threads=1),
        "chairv2_load": lambda: load_fgsbir_pair("chairv2", data_dir),
        "shoes_v1_load": lambda: load_fgsbir_pair("shoes_v1", data_dir),
        "chairs_v1_load": lambda: load_fgsbir_pair("chairs_v1", data_dir),
    }
    timings = best_of_interleaved(jobs, args.repeats)
    load_after = os.getloadavg()[0]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    result = {
        "benchmark": "data_loading",
        "seconds_best_of_repeats": {k: round(v, 3) for k, v in timings.items()},
        "chairv2_sketches": len(strokes),
        "chairv2_sketches_per_second": round(len(strokes) / timings["chairv2_load"], 1),
        "thread_speedup_chairv2": round(timings["chairv2_load_1thread"] / timings["chairv2_load"], 2),
        "repeats": args.repeats,
        "threads_default": min(8, os.cpu_count() or 1),
        "load_average_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        "device": f"CPU: {os.cpu_count()}-core sandbox shared with other jobs ({platform.processor() or platform.machine()})",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit,
        "command": "FGSBIR_DATA=/work/shared/data OMP_NUM_THREADS=1 python benchmarks/data_loading.py"
        + (f" --repeats {args.repeats}" if args.repeats != 5 else ""),
        "python": platform.python_version(),
    }
    lines = [
        "# Data loading benchmark",
        "",
        f"{result['device']}; {result['date']}; commit {commit}; best of {args.repeats}; "
        f"1-min load average {result['load_average_1min_before_after'][0]} before, "
        f"{result['load_average_1min_before_after'][1]} after.",
        "",
        f"Command: `{result['command']}`",
        "",
        "| what | seconds |",
        "| --- | --- |",
        *(f"| {k} | {v:.2f} |" for k, v in result["seconds_best_of_repeats"].items()),
        "",
        f"ChairV2: {len(strokes)} sketches rendered and 400 photos checked in {timings['chairv2_load']:.2f} s "
        f"({result['chairv2_sketches_per_second']} sketches/s); threads vs one thread: "
        f"{result['thread_speedup_chairv2']}x.",
        "",
    ]
    write_report(RESULTS / "data_loading.json", result, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
