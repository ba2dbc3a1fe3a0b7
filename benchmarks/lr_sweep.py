"""Learning-rate sweep on the validation splits: how a protocol's per-method learning rate is chosen.

For each learning rate of ``--lrs``, every method of ``--methods`` is trained on every dataset and seed of
the config with that rate and the config's other settings unchanged, by ``benchmarks/accuracy.py`` into
``<work>/results/<results name>_lr<lr>/``. A cell made with the same settings already exists in the
protocol's own results (the config's rate) is copied rather than trained again.

Only the figure each cell chose its model by is read: ``selection.best_val_acc1_acc10``, on the validation
split carved from train. The test figures the cells also hold are never read here, and the log shows each
trained cell's validation figure instead of its test scores (the per-rate tables that accuracy.py writes
under ``<work>/results`` do hold them: the sweep does not open them). Per method, the rate
with the best validation acc@1 averaged over datasets and seeds is chosen (a tie goes to the smaller
rate); every method gets the same grid and the same rule. A rate counts for a method only when all its
cells (every dataset and seed) are there. Where a method's best rate is at an edge of the grid (the
largest or the smallest), the grid is extended for that method: run the next rate beyond that edge with
``--methods`` naming those methods, then the whole grid with ``--aggregate-only``, which reads the cells
there are and trains none. The table goes to ``<out>.json`` and ``.md``.

Usage (repo root):
  python benchmarks/lr_sweep.py --config benchmarks/accuracy_configs/cpu.yaml --lrs 3e-4 1e-3 3e-3 1e-2
  python benchmarks/lr_sweep.py --config ... --lrs 3e-2 --methods triplet         # extend at the edge
  python benchmarks/lr_sweep.py --config ... --lrs 1e-4 --methods triplet_sn      # (or the other edge)
  python benchmarks/lr_sweep.py --config ... --lrs 3e-4 1e-3 3e-3 1e-2 3e-2 --aggregate-only
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import itertools
import shlex
import shutil
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accuracy_cells import Harness, read_cell, stale_cell
from accuracy_config import (
    DEFAULT_RESULTS,
    REPO,
    dataset_ref,
    is_trained,
    load_benchmark_config,
    repo_relative,
    results_name_for,
    train_values,
)
from accuracy_report import validation_acc1
from report_files import write_json, write_report

from fgsbir_plugin._common import default_data_dir


def lr_label(lr: float) -> str:
    return f"{lr:g}"


def config_with_lr(bench: dict, methods: Sequence[str], lr: float) -> dict:
    """``bench`` with every method of ``methods`` trained at ``lr``, nothing else changed.

    The rate goes into the shared ``train.lr`` and out of those methods' own settings, so that a sweep's
    cells describe a method the same way whether or not the protocol has since given it a rate of its own
    (they stay valid when the chosen rates are written into the config).
    """
    out = copy.deepcopy(bench)
    out["train"]["lr"] = lr
    for name in methods:
        method = out["methods"][name]
        if "lr" in (method.get("train") or {}):
            del method["train"]["lr"]
            if not method["train"]:
                del method["train"]
    return out


def choose(table: dict[str, dict[str, float]]) -> dict[str, str]:
    """Per method, the rate (label) with the highest mean validation acc@1; a tie: the smaller rate."""
    return {
        method: max(sorted(by_lr, key=float), key=lambda lr: (by_lr[lr], -float(lr)))
        for method, by_lr in table.items()
        if by_lr
    }


def _fresh_cell(h: Harness, path: Path, ref, method: str, seed: int) -> dict | None:
    """The finished cell in ``path`` when it was made with ``h``'s settings for it, else None."""
    rec = read_cell(path)
    return rec if rec is not None and not stale_cell(h, ref, method, seed, rec) else None


def sweep(args) -> dict[str, Any]:
    import accuracy

    bench = load_benchmark_config(args.config)
    swept = [m for m, spec in bench["methods"].items() if is_trained(spec) and spec["kind"] == "timm"]
    methods = args.methods or swept
    unknown = [m for m in methods if m not in bench["methods"] or not is_trained(bench["methods"][m])]
    if unknown:
        raise ValueError(f"--methods {unknown} are not trained methods of {args.config}; name trained ones.")
    datasets = args.datasets or list(bench["datasets"])
    seeds = args.seeds or [int(s) for s in bench["seeds"]]
    name = results_name_for(args.config)
    work = Path(args.work or REPO / "runs" / f"lr_sweep_{name}")
    data_dir = args.data_dir or (str(default_data_dir()) if default_data_dir() else None)
    protocol = Harness(bench, Path(args.protocol_results), name, work / "unused")
    # the learning rate does not change a dataset's description: one set of refs for every rate
    grid = list(itertools.product([dataset_ref(d, bench, data_dir) for d in datasets], methods, seeds))
    cells: dict[str, dict[str, dict[str, dict[int, float | None]]]] = {m: {} for m in methods}
    for lr in args.lrs:
        label = lr_label(lr)
        # Every swept method at this rate, whichever of them this invocation trains: one rate's folder
        # describes all its cells alike, so running more methods into it later leaves the others' valid.
        derived = config_with_lr(bench, list(dict.fromkeys([*swept, *methods])), lr)
        cfg_path = write_json(work / "configs" / f"{Path(args.config).stem}_lr{label}.json", derived)
        h = Harness(derived, work / "results", results_name_for(cfg_path), work / f"runs_lr{label}")
        for ref, m, seed in grid:
            # the protocol's own cell, made with exactly these settings, is this cell
            target = h.cell_path(ref.name, m, seed)
            if not target.is_file() and _fresh_cell(h, protocol.cell_path(ref.name, m, seed), ref, m, seed):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(protocol.cell_path(ref.name, m, seed), target)
        run_args = ["--config", str(cfg_path), "--results-dir", str(work / "results")]
        run_args += ["--runs-dir", str(h.runs_dir), "--methods", ",".join(methods), "--no-plots"]
        run_args += ["--log-split", "validation"]  # the sweep's log shows no test figure
        run_args += ["--datasets", ",".join(datasets), "--seeds", ",".join(map(str, seeds))]
        if args.data_dir:
            run_args += ["--data-dir", args.data_dir]
        if not args.aggregate_only:
            print(f"[lr-sweep] lr {label}: python benchmarks/accuracy.py {shlex.join(run_args)}", flush=True)
            accuracy.main(run_args)
        for ref, m, seed in grid:
            # None when the cell is missing or was made with other settings
            rec = _fresh_cell(h, h.cell_path(ref.name, m, seed), ref, m, seed)
            cells[m].setdefault(label, {}).setdefault(ref.name, {})[seed] = validation_acc1(rec)
    # a rate whose cells are not all there is shown but not compared
    means = {
        m: {
            lr: statistics.mean(v for per_seed in by_ds.values() for v in per_seed.values())
            for lr, by_ds in by_lr.items()
            if all(v is not None for per_seed in by_ds.values() for v in per_seed.values())
        }
        for m, by_lr in cells.items()
    }
    chosen = choose(means)
    base = {m: lr_label(float(train_values(bench, bench["methods"][m])["lr"])) for m in methods}
    return {
        "benchmark": f"{name}_lr_sweep",
        "config": repo_relative(args.config),
        "command": shlex.join(["python", "benchmarks/lr_sweep.py", *args.argv]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "rule": "per method, the rate with the highest validation acc@1 averaged over datasets and seeds "
        "(tie: the smaller rate); the same grid for every method; test figures are not read",
        "lrs": [lr_label(lr) for lr in args.lrs],
        "datasets": datasets,
        "seeds": seeds,
        "validation_acc1": cells,
        "mean_validation_acc1": means,
        "protocol_lr": base,
        "chosen_lr": chosen,
    }


def markdown(report: dict) -> str:
    lrs, datasets = report["lrs"], report["datasets"]
    lines = [
        f"# Learning-rate sweep: {report['config']}",
        "",
        f"Validation acc@1 (the split carved from train that picks each cell's model), mean over seeds "
        f"{', '.join(map(str, report['seeds']))}; test figures are not read. Rule: {report['rule']}.",
        "",
        "*config's rate*: the rate the config gave the method when this table was written (before the "
        "chosen rates are copied into it, the rate the protocol had been using).",
        "",
        f"Command: `{report['command']}`  ",
        f"Written: {report['date']}",
        "",
        "| method | lr | " + " | ".join(datasets) + " | mean | |",
        "| --- | --- | " + " | ".join("---:" for _ in datasets) + " | ---: | --- |",
    ]
    for m, by_lr in report["validation_acc1"].items():
        for lr in lrs:
            by_ds = by_lr.get(lr, {})
            if all(v is None for per_seed in by_ds.values() for v in per_seed.values()):
                continue  # not run for this method (the grid was extended for other methods)
            row = []
            for d in datasets:
                vals = [v for v in by_ds.get(d, {}).values() if v is not None]
                row.append(f"{statistics.mean(vals):.1f}" if vals else "—")
            mean = report["mean_validation_acc1"][m].get(lr)
            mark = "**chosen**" if report["chosen_lr"].get(m) == lr else ""
            mark += " (config's rate)" if report["protocol_lr"].get(m) == lr else ""
            lines.append(
                f"| {m} | {lr} | "
                + " | ".join(row)
                + f" | {'—' if mean is None else f'{mean:.1f}'} | {mark} |"
            )
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="the protocol's benchmark config")
    p.add_argument("--lrs", type=float, nargs="+", required=True, help="learning rates to try")
    p.add_argument(
        "--methods", type=lambda s: s.split(","), default=None, help="default: trained timm methods"
    )
    p.add_argument("--datasets", type=lambda s: s.split(","), default=None)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--work", default=None, help="configs, cells and runs (default runs/lr_sweep_<name>)")
    p.add_argument("--protocol-results", default=str(DEFAULT_RESULTS), help="where the protocol's cells are")
    p.add_argument("--out", default=None, help="writes OUT.json and OUT.md (default results/<name>_lr_sweep)")
    p.add_argument("--aggregate-only", action="store_true", help="read the cells there are; train none")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    report = sweep(args)
    out = Path(args.out) if args.out else DEFAULT_RESULTS / report["benchmark"]
    write_report(out.with_suffix(".json"), report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
