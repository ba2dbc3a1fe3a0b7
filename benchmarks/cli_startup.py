"""Time the ``fgsbir`` command line's start-up: help, an argument error, against importing the library.

Each job is a fresh process (the console script, as a user runs it); best of ``--repeats``
interleaved rounds, wall clock, so that a load spike on the shared machine hits every job alike:

- ``fgsbir --help``, ``fgsbir train --help``, ``fgsbir search --help``;
- ``fgsbir train --loss nope`` (an argument error, exit status 2);
- ``python -c "import fgsbir_plugin"``: what every command paid before the command line moved to
  its own package (torch and timm), for the ratio.

Usage::

    python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from report_files import write_report

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_S = 1.0


def _jobs(fgsbir: str) -> dict[str, list[str]]:
    return {
        "fgsbir --help": [fgsbir, "--help"],
        "fgsbir train --help": [fgsbir, "train", "--help"],
        "fgsbir search --help": [fgsbir, "search", "--help"],
        "fgsbir train --loss nope": [fgsbir, "train", "--loss", "nope"],
        'python -c "import fgsbir_plugin"': [sys.executable, "-c", "import fgsbir_plugin"],
    }


def best_of_interleaved(jobs: dict[str, list[str]], repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in jobs}
    for _ in range(repeats):
        for name, cmd in jobs.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=False)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    fgsbir = shutil.which("fgsbir") or str(Path(sys.executable).with_name("fgsbir"))
    if not Path(fgsbir).is_file():
        print("the fgsbir console script is not installed: pip install -e .", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    timings = best_of_interleaved(_jobs(fgsbir), args.repeats)
    load_after = os.getloadavg()[0]
    library = timings['python -c "import fgsbir_plugin"']
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    result = {
        "benchmark": "cli_startup",
        "seconds_best_of_repeats": {k: round(v, 3) for k, v in timings.items()},
        "ratio_to_library_import": {k: round(v / library, 3) for k, v in timings.items()},
        "target_s": TARGET_S,
        "all_cli_jobs_under_target": all(v < TARGET_S for k, v in timings.items() if k.startswith("fgsbir")),
        "repeats": args.repeats,
        "load_average_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        "device": f"CPU: {platform.machine()}, {os.cpu_count()} cores (sandbox shared with other jobs)",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit,
        "command": "python benchmarks/cli_startup.py"
        + (f" --repeats {args.repeats}" if args.repeats != 5 else ""),
        "python": platform.python_version(),
    }
    lines = [
        "# Command-line start-up",
        "",
        f"{result['device']}; {result['date']}; commit {commit}; best of {args.repeats} interleaved rounds, "
        f"each a fresh process; 1-min load average {result['load_average_1min_before_after'][0]} before, "
        f"{result['load_average_1min_before_after'][1]} after.",
        "",
        f"Command: `{result['command']}`",
        "",
        "| what | seconds | vs `import fgsbir_plugin` |",
        "| --- | ---: | ---: |",
        *(
            f"| `{k}` | {v:.3f} | {result['ratio_to_library_import'][k]:.3f}x |"
            for k, v in result["seconds_best_of_repeats"].items()
        ),
        "",
        f"Target: every `fgsbir` row under {TARGET_S:.0f} s: "
        f"{'met' if result['all_cli_jobs_under_target'] else 'NOT met'}.",
        "",
    ]
    write_report(RESULTS / "cli_startup.json", result, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
