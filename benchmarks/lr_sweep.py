"""Learning-rate sweep on the validation splits: how a protocol's per-method learning rate is chosen.

For each learning rate of ``--lrs``, every method of ``--methods`` is trained on every dataset and seed of
the config with that rate and the config's other settings unchanged, by ``benchmarks/accuracy.py`` into
``<work>/results/<results name>_lr<lr>/``. A cell made with the same settings already exists in the
protocol's own results (the config's rate) is copied rather than trained again.

Only the figure each cell chose its model by is read: ``selection.best_val_acc1_acc10``, on the validation
split carved from train. The test figures the cells also hold are never read here, the log shows each
trained cell's validation figure instead of its test scores, and accuracy.py writes no per-rate tables or
figures for the sweep (``--table none``), so nothing it shows holds a test figure. Per method, the rate
with the best validation acc@1 averaged over datasets and seeds is chosen (a tie goes to the smaller
rate); every method gets the same grid and the same rule. A rate counts for a method only when all its
cells (every dataset and seed) are there. Where a method's best rate is at an edge of the grid (the
largest or the smallest), the grid is extended for that method: run the next rate beyond that edge with
``--methods`` naming those methods, then the whole grid with ``--aggregate-only``, which reads the cells
there are and trains none. The table goes to ``<out>.json`` and ``.md``.

With ``--miners``, the grid is every (miner, rate) pair: each method is trained with each miner of the list
(``train.miner``) at each rate, and the pair with the best mean validation acc@1 is chosen the same way (a
tie goes to the config's shared miner, then to the smaller rate). The config's shared miner keeps the
folders of a rate-only sweep (``<name>_lr<lr>``), so its cells count in both; another miner's go to
``<name>_<miner>_lr<lr>`` (``semi-hard`` -> ``semihard``).

With ``--distance-lrs``, each of those points is also trained at each learning rate of HOLEF's W
(``train.distance_lr``; only the HOLEF rows have a W, so name those with ``--methods``), and the best point
is chosen the same way (a tie also goes to the config's shared W rate, before the smaller head rate, then
to the smaller W rate). The config's shared W rate keeps the folders above; another one's add
``_dlr<rate>``.

Usage (repo root):
  python benchmarks/lr_sweep.py --config benchmarks/accuracy_configs/cpu.yaml --lrs 3e-4 1e-3 3e-3 1e-2
  python benchmarks/lr_sweep.py --config ... --lrs 3e-2 --methods triplet         # extend at the edge
  python benchmarks/lr_sweep.py --config ... --lrs 1e-4 --methods triplet_sn      # (or the other edge)
  python benchmarks/lr_sweep.py --config ... --lrs 3e-4 1e-3 3e-3 1e-2 3e-2 --aggregate-only
  python benchmarks/lr_sweep.py --config ... --miners batch-hard none semi-hard --lrs 1e-4 3e-4 1e-3 3e-3
  python benchmarks/lr_sweep.py --config ... --methods dssa_full --miners batch-hard --lrs 1e-3 \
      --distance-lrs 1e-4 1e-3 1e-2 1e-1
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
from fgsbir_plugin.train.config import MINERS


def lr_label(lr: float) -> str:
    return f"{lr:g}"


def setting_label(lr: float, miner: str | None = None, distance_lr: float | None = None) -> str:
    """A grid point's label: the rate (``0.001``), or with a miner, ``miner@rate`` (``none@0.001``); with a
    rate for HOLEF's W, ``/W<rate>`` follows (``batch-hard@0.001/W0.01``)."""
    label = lr_label(lr) if miner is None else f"{miner}@{lr_label(lr)}"
    return label if distance_lr is None else f"{label}/W{lr_label(distance_lr)}"


def split_label(label: str) -> tuple[str | None, str]:
    """``(miner or None, rate label)`` of a grid point's label (its W rate, if any, left out)."""
    miner, _, lr = label.partition("/W")[0].rpartition("@")
    return miner or None, lr


def distance_label(label: str) -> str | None:
    """The W rate label of a grid point's label, or None when the grid has no W rates."""
    _, sep, dlr = label.partition("/W")
    return dlr if sep else None


def config_with_lr(
    bench: dict, methods: Sequence[str], lr: float, miner: str | None = None, distance_lr: float | None = None
) -> dict:
    """``bench`` with every method of ``methods`` trained at ``lr`` (and with ``miner``, and W's rate
    ``distance_lr``), nothing else changed.

    The rate (and the miner) go into the shared ``train`` settings and out of those methods' own, so that a
    sweep's cells describe a method the same way whether or not the protocol has since given it a setting
    of its own (they stay valid when the chosen settings are written into the config).
    """
    out = copy.deepcopy(bench)
    out["train"]["lr"] = lr
    keys = ("lr",) + (() if miner is None else ("miner",)) + (() if distance_lr is None else ("distance_lr",))
    if miner is not None:
        out["train"]["miner"] = miner
    if distance_lr is not None:
        out["train"]["distance_lr"] = distance_lr
    for name in methods:
        method = out["methods"][name]
        for key in keys:
            if key in (method.get("train") or {}):
                del method["train"][key]
        if "train" in method and not method["train"]:
            del method["train"]
    return out


def choose(
    table: dict[str, dict[str, float]], first_miner: str | None = None, first_distance_lr: str | None = None
) -> dict[str, str]:
    """Per method, the grid point (label) with the highest mean validation acc@1 (to 0.01); a tie:
    ``first_miner``'s (the config's shared miner), then ``first_distance_lr``'s (the config's shared W rate,
    a label), then the smaller rate, then the smaller W rate."""

    def preference(label: str) -> tuple[bool, bool, float, float]:
        miner, lr = split_label(label)
        dlr = distance_label(label)
        return (
            miner in (None, first_miner),
            dlr in (None, first_distance_lr),
            -float(lr),
            -float(dlr or 0),
        )

    return {
        method: max(sorted(by_lr), key=lambda k: (round(by_lr[k], 2), *preference(k)))
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
    without_w = [m for m in methods if train_values(bench, bench["methods"][m]).get("loss") != "holef"]
    if args.distance_lrs and without_w:
        raise ValueError(
            f"--distance-lrs sets HOLEF's W rate, and {without_w} have no W (their loss is not holef); "
            "name only HOLEF rows with --methods."
        )
    datasets = args.datasets or list(bench["datasets"])
    seeds = args.seeds or [int(s) for s in bench["seeds"]]
    name = results_name_for(args.config)
    work = Path(args.work or REPO / "runs" / f"lr_sweep_{name}")
    data_dir = args.data_dir or (str(default_data_dir()) if default_data_dir() else None)
    protocol = Harness(bench, Path(args.protocol_results), name, work / "unused")
    # the learning rate does not change a dataset's description: one set of refs for every rate
    grid = list(itertools.product([dataset_ref(d, bench, data_dir) for d in datasets], methods, seeds))
    shared_miner = bench["train"].get("miner")
    shared_dlr = bench["train"].get("distance_lr")
    cells: dict[str, dict[str, dict[str, dict[int, float | None]]]] = {m: {} for m in methods}
    for miner, lr, dlr in itertools.product(args.miners or [None], args.lrs, args.distance_lrs or [None]):
        label = setting_label(lr, miner, dlr)
        # the config's shared miner keeps a rate-only sweep's folders; another miner's have its name
        folder = (
            f"lr{lr_label(lr)}"
            if miner in (None, shared_miner)
            else f"{miner.replace('-', '')}_lr{lr_label(lr)}"
        )
        # and the config's shared W rate keeps them too; another one's adds its own
        if dlr is not None and dlr != shared_dlr:
            folder += f"_dlr{lr_label(dlr)}"
        # Every swept method at this point, whichever of them this invocation trains: one point's folder
        # describes all its cells alike, so running more methods into it later leaves the others' valid.
        derived = config_with_lr(bench, list(dict.fromkeys([*swept, *methods])), lr, miner, dlr)
        cfg_path = write_json(work / "configs" / f"{Path(args.config).stem}_{folder}.json", derived)
        h = Harness(derived, work / "results", results_name_for(cfg_path), work / f"runs_{folder}")
        for ref, m, seed in grid:
            # the protocol's own cell, made with exactly these settings, is this cell
            target = h.cell_path(ref.name, m, seed)
            if not target.is_file() and _fresh_cell(h, protocol.cell_path(ref.name, m, seed), ref, m, seed):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(protocol.cell_path(ref.name, m, seed), target)
        run_args = ["--config", str(cfg_path), "--results-dir", str(work / "results")]
        run_args += ["--runs-dir", str(h.runs_dir), "--methods", ",".join(methods), "--no-plots"]
        # the sweep's log shows no test figure, and no per-point table is written (it would hold them)
        run_args += ["--log-split", "validation", "--table", "none"]
        run_args += ["--datasets", ",".join(datasets), "--seeds", ",".join(map(str, seeds))]
        if args.data_dir:
            run_args += ["--data-dir", args.data_dir]
        if not args.aggregate_only:
            print(f"[lr-sweep] {label}: python benchmarks/accuracy.py {shlex.join(run_args)}", flush=True)
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
    chosen = choose(means, shared_miner, None if shared_dlr is None else lr_label(float(shared_dlr)))
    configured = {m: train_values(bench, bench["methods"][m]) for m in methods}
    report = {
        "benchmark": f"{name}_{'miner_' if args.miners else ''}lr_sweep",
        "config": repo_relative(args.config),
        "command": shlex.join(["python", "benchmarks/lr_sweep.py", *args.argv]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "rule": "per method, the rate with the highest validation acc@1 averaged over datasets and seeds "
        "(to 0.01; tie: the smaller rate); the same grid for every method; test figures are not read",
        "lrs": [lr_label(lr) for lr in args.lrs],
        "datasets": datasets,
        "seeds": seeds,
        "validation_acc1": cells,
        "mean_validation_acc1": means,
        "protocol_lr": {m: lr_label(float(v["lr"])) for m, v in configured.items()},
        "chosen_lr": {m: split_label(label)[1] for m, label in chosen.items()},
    }
    if args.miners:
        report["rule"] = (
            "per method, the (miner, rate) with the highest validation acc@1 averaged over datasets and seeds "
            f"(to 0.01; tie: the config's shared miner, {shared_miner}, then the smaller rate); the same grid for every "
            "method; test figures are not read"
        )
        report["miners"] = list(args.miners)
        report["protocol_miner"] = {m: v.get("miner") for m, v in configured.items()}
        report["chosen_miner"] = {m: split_label(label)[0] for m, label in chosen.items()}
    if args.distance_lrs:
        point = "(miner, rate, W rate)" if args.miners else "(rate, W rate)"
        report["rule"] = (
            f"per method, the {point} with the highest validation acc@1 averaged over datasets and seeds (to 0.01; "
            + (f"tie: the config's shared miner, {shared_miner}, then " if args.miners else "tie: ")
            + f"the config's shared W rate, {shared_dlr}, then the smaller rate, then the smaller W rate); the same "
            "grid for every method; test figures are not read"
        )
        report["distance_lrs"] = [lr_label(x) for x in args.distance_lrs]
        report["protocol_distance_lr"] = {
            m: None if v.get("distance_lr") is None else lr_label(float(v["distance_lr"]))
            for m, v in configured.items()
        }
        report["chosen_distance_lr"] = {m: distance_label(label) for m, label in chosen.items()}
    return report


def markdown(report: dict) -> str:
    lrs, datasets, miners = report["lrs"], report["datasets"], report.get("miners")
    dlrs = report.get("distance_lrs")
    what = "rate" if miners is None else "miner and rate"
    if dlrs is not None:
        what += " and W rate"
    title = "Learning-rate" if miners is None else "Miner and learning-rate"
    lines = [
        f"# {title} sweep{'' if dlrs is None else ' (with HOLEF W rates)'}: {report['config']}",
        "",
        f"Validation acc@1 (the split carved from train that picks each cell's model), mean over seeds "
        f"{', '.join(map(str, report['seeds']))}; test figures are not read. Rule: {report['rule']}.",
        "",
        f"*config's {what}*: the {what} the config gave the method when this table was written (before the "
        f"chosen ones are copied into it, the {what} the protocol had been using).",
        "",
        f"Command: `{report['command']}`  ",
        f"Written: {report['date']}",
        "",
        f"| method | {'' if miners is None else 'miner | '}lr | {'' if dlrs is None else 'W lr | '}"
        + " | ".join(datasets)
        + " | mean | |",
        f"| --- | {'' if miners is None else '--- | '}--- | {'' if dlrs is None else '--- | '}"
        + " | ".join("---:" for _ in datasets)
        + " | ---: | --- |",
    ]

    def setting(m: str, kind: str) -> str | None:
        """The label of the grid point the config gave ``m`` (kind "protocol") or the sweep chose ("chosen")."""
        lr = report[f"{kind}_lr"].get(m)
        if lr is None:
            return None
        miner = None if miners is None else report[f"{kind}_miner"].get(m)
        dlr = None if dlrs is None else report[f"{kind}_distance_lr"].get(m)
        return setting_label(float(lr), miner, None if dlr is None else float(dlr))

    for m, by_label in report["validation_acc1"].items():
        for miner, lr, dlr in itertools.product(miners or [None], lrs, dlrs or [None]):
            label = setting_label(float(lr), miner, None if dlr is None else float(dlr))
            by_ds = by_label.get(label, {})
            if all(v is None for per_seed in by_ds.values() for v in per_seed.values()):
                continue  # not run for this method (the grid was extended for other methods)
            row = []
            for d in datasets:
                vals = [v for v in by_ds.get(d, {}).values() if v is not None]
                row.append(f"{statistics.mean(vals):.1f}" if vals else "—")
            mean = report["mean_validation_acc1"][m].get(label)
            mark = "**chosen**" if setting(m, "chosen") == label else ""
            mark += f" (config's {what})" if setting(m, "protocol") == label else ""
            lines.append(
                f"| {m} | {'' if miner is None else f'{miner} | '}{lr} | {'' if dlr is None else f'{dlr} | '}"
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
        "--miners",
        nargs="+",
        choices=MINERS,
        default=None,
        help="miners to try with each rate (default: the config's only)",
    )
    p.add_argument(
        "--distance-lrs",
        type=float,
        nargs="+",
        default=None,
        help="learning rates of HOLEF's W to try with each point (default: the config's only)",
    )
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
