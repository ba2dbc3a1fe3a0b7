"""Compare one training setting against the protocol's, row by row, on validation first (test only after).

A probe trains the protocol's rows with one setting changed (for example ``batch_groups: annotated``) into
a results folder of its own; this script reads those cells (the *variant*) and the same rows' cells without
the change (the *reference*) and writes, per row, the seed-mean validation acc@1 (the figure each cell
chose its model by) on every dataset, their mean over datasets, and the rule's decision: the variant wins
a row when that mean is higher to 0.01 (a tie keeps the reference). Test figures are left out unless
``--test`` is given, which adds each row's paired test acc@1 difference (variant minus reference, the
same test queries, seeds paired; intervals as in the accuracy tables); pass it only after the decisions
are written down.

    python benchmarks/setting_probe.py --variant-dir runs/probe/results/accuracy_cpu_groups \\
        --reference-dirs runs/probe/results/accuracy_cpu_ref benchmarks/results/accuracy_cpu \\
        --methods triplet,dssa_full --datasets chairs_v1,shoes_v1 --seeds 0,1,2 \\
        --setting "batch_groups: annotated" --out benchmarks/results/accuracy_cpu_probe

Cells are ``<dir>/<dataset>/<method>/seed<k>.json``; each reference cell is read from the first of
``--reference-dirs`` that has it, so re-trained reference cells can shadow older ones.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_cells import read_cell  # noqa: E402
from accuracy_config import DatasetRef  # noqa: E402
from accuracy_report import paired_differences, validation_acc1  # noqa: E402
from report_files import write_report  # noqa: E402


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def cell_file(root: Path, dataset: str, method: str, seed: int) -> Path:
    return Path(root) / dataset / method / f"seed{seed}.json"


def reference_cell(
    dirs: Sequence[Path], dataset: str, method: str, seed: int
) -> tuple[Path | None, dict | None]:
    """The first of ``dirs`` holding this cell, and the cell (or ``(None, None)``)."""
    for root in dirs:
        path = cell_file(root, dataset, method, seed)
        cell = read_cell(path)
        if cell is not None:
            return path, cell
    return None, None


def _mean(values: list[float | None]) -> float | None:
    return round(statistics.fmean(values), 4) if values and None not in values else None


def probe(
    variant_dir: Path,
    reference_dirs: Sequence[Path],
    methods: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    test: bool = False,
) -> list[dict[str, Any]]:
    """One record per method: validation figures per dataset, their mean, the decision (and test pairs)."""
    rows = []
    for method in methods:
        row: dict[str, Any] = {"method": method, "datasets": {}, "reference_cells": []}
        for dataset in datasets:
            var = [validation_acc1(read_cell(cell_file(variant_dir, dataset, method, s))) for s in seeds]
            refs = [reference_cell(reference_dirs, dataset, method, s) for s in seeds]
            ref = [validation_acc1(cell) for _, cell in refs]
            row["reference_cells"] += [str(p) for p, _ in refs if p is not None]
            row["datasets"][dataset] = {
                "variant_val_acc1": var,
                "reference_val_acc1": ref,
                "variant_mean": _mean(var),
                "reference_mean": _mean(ref),
            }
        var_means = [d["variant_mean"] for d in row["datasets"].values()]
        ref_means = [d["reference_mean"] for d in row["datasets"].values()]
        row["variant_mean"], row["reference_mean"] = _mean(var_means), _mean(ref_means)
        if row["variant_mean"] is None or row["reference_mean"] is None:
            row["decision"] = "incomplete"
        else:
            wins = round(row["variant_mean"], 2) > round(row["reference_mean"], 2)
            row["decision"] = "variant" if wins else "reference"
        if test:
            row["test"] = _test_pairs(variant_dir, reference_dirs, method, datasets, seeds)
        rows.append(row)
    return rows


def _test_pairs(variant_dir, reference_dirs, method, datasets, seeds) -> list[dict]:
    # paired_differences reads cells through cell_path(dataset, name, seed); the two arms get two names.
    def cell_path(dataset: str, name: str, seed: int) -> Path:
        if name == "variant":
            return cell_file(variant_dir, dataset, method, seed)
        path, _ = reference_cell(reference_dirs, dataset, method, seed)
        return path if path is not None else cell_file(reference_dirs[0], dataset, method, seed)

    refs = [DatasetRef(d, d, None, {}) for d in datasets]
    pairs = paired_differences(cell_path, refs, ["reference"], seeds, reference="variant")
    for p in pairs:
        p["method"], p["against"] = f"{method} (variant)", f"{method} (reference)"
    return pairs


def markdown(report: dict[str, Any]) -> str:
    datasets = report["datasets"]
    lines = [
        f"# Setting probe: {report['setting']}",
        "",
        f"Seed-mean validation acc@1 (seeds {', '.join(map(str, report['seeds']))}), variant / reference, and "
        "the mean over datasets; the variant wins a row when its mean is higher to 0.01.",
        "",
        f"Variant cells: `{report['variant_dir']}`; reference cells: the first of "
        + ", ".join(f"`{d}`" for d in report["reference_dirs"])
        + " that holds the cell.",
        f"Written: {report['written']}",
        "",
        "| row | " + " | ".join(datasets) + " | mean | decision |",
        "| --- | " + " | ".join("---:" for _ in datasets) + " | ---: | --- |",
    ]

    def num(v):
        return "–" if v is None else f"{v:.1f}"

    for row in report["rows"]:
        cells = [
            f"{num(row['datasets'][d]['variant_mean'])} / {num(row['datasets'][d]['reference_mean'])}"
            for d in datasets
        ]
        mean = f"{num(row['variant_mean'])} / {num(row['reference_mean'])}"
        lines.append(f"| `{row['method']}` | " + " | ".join(cells) + f" | {mean} | {row['decision']} |")
    if report["test"]:
        lines += [
            "",
            "Test acc@1, variant minus reference, paired on the same queries (mean over seeds; 95% interval "
            "over seeds and queries; seeds ahead):",
            "",
            "| row | " + " | ".join(datasets) + " |",
            "| --- | " + " | ".join("---:" for _ in datasets) + " |",
        ]
        for row in report["rows"]:
            by = {p["dataset"]: p for p in row.get("test", [])}
            cells = []
            for d in datasets:
                p = by.get(d)
                if p is None:
                    cells.append("–")
                    continue
                lo, hi = p["ci95_seeds_queries"]
                cells.append(
                    f"{p['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({p['seeds_ahead']}/{len(p['seeds'])})"
                )
            lines.append(f"| `{row['method']}` | " + " | ".join(cells) + " |")
    if report.get("command"):
        lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--variant-dir", required=True, type=Path, help="the probe's cells (<dataset>/<method>/seed<k>.json)"
    )
    ap.add_argument(
        "--reference-dirs",
        required=True,
        type=Path,
        nargs="+",
        help="cells without the change, first match wins",
    )
    ap.add_argument("--methods", required=True, help="comma-separated rows")
    ap.add_argument("--datasets", required=True, help="comma-separated datasets")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--setting", required=True, help="what the variant changes, for the table's title")
    ap.add_argument("--test", action="store_true", help="add the paired test differences (after deciding)")
    ap.add_argument("--out", type=Path, help="write <out>.json and <out>.md (default: print the table)")
    args = ap.parse_args(argv)
    methods, datasets, seeds = _csv(args.methods), _csv(args.datasets), [int(s) for s in _csv(args.seeds)]
    rows = probe(args.variant_dir, args.reference_dirs, methods, datasets, seeds, test=args.test)
    report = {
        "setting": args.setting,
        "variant_dir": str(args.variant_dir),
        "reference_dirs": [str(d) for d in args.reference_dirs],
        "datasets": datasets,
        "seeds": seeds,
        "test": args.test,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/setting_probe.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "rows": rows,
    }
    text = markdown(report)
    if args.out is None:
        print(text, end="")
    else:
        json_path, md_path = write_report(args.out.with_suffix(".json"), report, text)
        print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
