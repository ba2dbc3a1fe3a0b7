"""The GPU suite: one command on a lent GPU runs the next slice of the GPU protocol and brings it back.

A GPU is lent to only some tasks, for about 15 minutes of device time in all, so the GPU work is this one
prepared command: each call makes as much progress as its budget allows, and its results accumulate in
the repository until the whole grid is done. Four modes, from the repository root:

    python benchmarks/gpu_suite.py --prepare                         # here, before the device call
    python3 benchmarks/gpu_suite.py --budget-s 480 --out $OUT        # on the device (`run`, see below)
    python benchmarks/gpu_suite.py --unpack <files_at>               # here, after: merge, rebuild tables
    python benchmarks/gpu_suite.py --smoke --out /tmp/gpu_smoke      # here: the device path, tiny, on the CPU

``--prepare`` writes the compact export of the protocol's datasets to ``.data/gpu`` and the wheels the
device lacks to ``.whl`` (both git-ignored), checks that they fit in the 64 MiB a call carries, and prints
the exact ``run`` call: ``carry: [".data/gpu", ".whl"]``, ``timeout_s: 540``, and the command above.

The device run installs the carried wheels (``.whl/*.whl`` into ``/tmp/site``, as
``../shared/tools/device-wheels.sh`` says), records the machine, runs the speed benchmarks that have no
GPU results yet, then the accuracy cells of ``gpu.yaml`` still missing from
``benchmarks/results/accuracy_gpu/``, in priority order, while they fit in ``--budget-s`` (counted from
the start of this script); see ``gpu_run.py`` and ``gpu_schedule.py``. ``$OUT`` gets three files:
``gpu_results.tar.gz`` (the new result files), ``gpu_call.json`` (this call: machine, per-cell wall
time and GPU utilisation, the summary) and ``gpu_suite.log``. It prints: cells done, cells left,
estimated calls left.

``--unpack`` extracts the new cells and benchmark results into ``benchmarks/results/``, appends the
call to ``benchmarks/results/accuracy_gpu_calls.{json,md}`` and rebuilds ``accuracy_gpu.{json,md}``
with the accuracy harness's report code; then commit them.

``benchmarks/gpu_rehearse.sh`` runs the device command here, on the CPU, in a bare copy of the call's tree
with the device's Python and torch versions (see its header), before a device's minutes are spent.

``--smoke`` runs the device run's code path on the CPU with tiny settings (``gpu_smoke.yaml`` on
generated data, the benchmarks at toy sizes, a compact export of the generated data written and
checked), in a temporary folder, and writes the same bundle to ``--out``.

This file imports only the standard library at its top: the packages the run needs come from the wheels
it installs first.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".whl"
SITE = Path(os.environ.get("FGSBIR_DEVICE_SITE", "/tmp/site"))  # gpu_rehearse.sh: its own folder
EXPORT_ROOT = REPO / ".data" / "gpu"
GPU_CONFIG = REPO / "benchmarks" / "accuracy_configs" / "gpu.yaml"
SMOKE_CONFIG = REPO / "benchmarks" / "accuracy_configs" / "gpu_smoke.yaml"
RESULTS = REPO / "benchmarks" / "results"
DEVICE_COMMAND = "python3 benchmarks/gpu_suite.py --budget-s 480 --out $OUT"
CARRY = (".data/gpu", ".whl")
TIMEOUT_S = 540  # the budget plus a minute for Python's start-up and the last bundle


class Log:
    """Lines to stdout and, once ``open``ed, to ``gpu_suite.log`` in the output folder, flushed at once."""

    def __init__(self) -> None:
        self._file = None

    def open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115  (held for the whole run)

    def __call__(self, text: str) -> None:
        text = text.rstrip("\n")
        if not text:
            return
        print(text, flush=True)
        if self._file is not None:
            self._file.write(text + "\n")
            self._file.flush()


def install_wheels(log: Log) -> None:
    """Install the carried wheels into ``/tmp/site`` and put it (and the repository) first on the path."""
    wheels = sorted(WHEELS.glob("*.whl"))
    if wheels:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        cmd += ["--no-cache-dir", "--upgrade", "--target", str(SITE), *map(str, wheels)]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        log(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise SystemExit(
                f"[gpu-suite] installing the wheels of {WHEELS} failed (exit {proc.returncode})."
            )
        log(f"[gpu-suite] installed {len(wheels)} wheels into {SITE} in {time.monotonic() - t0:.0f} s")
    use_paths([SITE] if wheels else [])


def use_paths(first: list[Path]) -> None:
    """Put ``first`` and the repository at the front of this process's import path and of the benchmark
    subprocesses' (``PYTHONPATH``): they import ``fgsbir_plugin`` from this tree, installed or not."""
    paths = [str(p) for p in (*first, REPO)]
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def commit_stamp(log: Log) -> None:
    """The commit the cells record: git's here; on the device (no .git) the one ``--prepare`` wrote."""
    if "FGSBIR_COMMIT" in os.environ or (REPO / ".git").exists():
        return
    manifest = EXPORT_ROOT / "manifest.json"
    if manifest.is_file():
        os.environ["FGSBIR_COMMIT"] = json.loads(manifest.read_text(encoding="utf-8")).get("commit") or ""
        log(f"[gpu-suite] commit (from {manifest.relative_to(REPO)}): {os.environ['FGSBIR_COMMIT']}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--prepare", action="store_true", help="build .data/gpu and .whl here, check the size")
    mode.add_argument("--unpack", metavar="DIR", help="merge a returned bundle (the run's files_at folder)")
    mode.add_argument("--smoke", action="store_true", help="the device run's code path, tiny, on the CPU")
    p.add_argument("--out", type=Path, help="where the bundle goes ($OUT on the device)")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall time of the run, from its start")
    p.add_argument(
        "--config", type=Path, default=None, help="default: gpu.yaml (gpu_smoke.yaml with --smoke)"
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--runs-dir", type=Path, default=None, help="default: runs/<results name>")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data folder (default: .data/gpu; --prepare: the raw data)",
    )
    p.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    p.add_argument("--compile", action="store_true", help="torch.compile the trained pair model")
    p.add_argument("--no-benchmarks", action="store_true", help="skip the speed benchmarks")
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        metavar="N",
        help="run N cells at once, each in a worker process (default: the measured best_procs of "
        "concurrency_gpu.json on a GPU, else 1)",
    )
    p.add_argument(
        "--no-install", action="store_true", help="use this environment's packages, not .whl (a dry run here)"
    )
    p.add_argument("--force", action="store_true", help="--prepare: export the datasets again")
    p.add_argument("--keep-work", action="store_true", help="--smoke: keep the temporary folder")
    return p


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = _parser().parse_args(argv)
    if args.parallel is not None and args.parallel < 1:
        raise SystemExit("[gpu-suite] --parallel N needs N >= 1 (the number of cells run at once).")
    given = list(argv) if argv is not None else sys.argv[1:]
    command = " ".join(shlex.quote(a) for a in ["python3", "benchmarks/gpu_suite.py", *given])
    log = Log()
    if args.prepare or args.unpack:
        sys.path.insert(0, str(REPO))
        # The packages of this environment: imported once the mode is known (see the module docstring).
        import gpu_prepare

        return gpu_prepare.prepare(args, log) if args.prepare else gpu_prepare.unpack(args, log)
    if args.out is None:
        raise SystemExit(
            "[gpu-suite] --out DIR is required: the folder the bundle goes to ($OUT on the device)."
        )
    log.open(args.out / "gpu_suite.log")
    log(f"[gpu-suite] $ {command}")
    if not (args.smoke or args.no_install):
        install_wheels(log)
        commit_stamp(log)
    else:
        use_paths([])
    # Imported after the wheels are installed: they provide its packages (timm, datasets, PML).
    import gpu_run

    config = args.config or (SMOKE_CONFIG if args.smoke else GPU_CONFIG)
    suite = gpu_run.Suite(
        out=args.out,
        config=config,
        results_dir=args.results_dir,
        runs_dir=args.runs_dir or REPO / "runs" / f"accuracy_{config.stem}",
        data_dir=args.data_dir or EXPORT_ROOT,
        device=args.device or ("cpu" if args.smoke else "cuda"),
        budget_s=args.budget_s,
        started=started,
        command=command,
        compile=args.compile,
        parallel=args.parallel,
        benchmarks=not args.no_benchmarks,
        smoke=args.smoke,
    )
    return gpu_run.smoke(suite, log, keep=args.keep_work) if args.smoke else gpu_run.run(suite, log)


if __name__ == "__main__":
    raise SystemExit(main())
