"""How far HOLEF's W moved in training: a summary of the learned W of saved run folders.

HOLEF starts from ``W = I`` (with the non-negative form, off-diagonal entries of ``1e-3``); a W that barely
moves makes HOLEF the squared Euclidean distance in all but name. For every run folder under the given
roots whose saved model holds a HOLEF W (``<run>/model/model.safetensors``, read with safetensors, never
unpickled), this reports per (root, dataset, method), averaged over the seeds found: the diagonal's mean,
min and max, the off-diagonal entries' mean and max, and the largest change of any entry from the W a new
model starts with.

Run folders are laid out ``<root>/<dataset>/<method>/seed<k>/`` (benchmarks/accuracy.py's ``--runs-dir``;
lr_sweep.py writes one root per grid point, ``runs/<work>/runs_<point>``).

Usage (repo root):
  python benchmarks/holef_w.py runs/w_lr_sweep/runs_* --out benchmarks/results/holef_w_cpu
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

import torch
from report_files import write_report
from safetensors.torch import load_file

from fgsbir_plugin.holef import HOLEFDistance

KEYS = ("diag_mean", "diag_min", "diag_max", "offdiag_mean", "offdiag_max", "max_change")


def distance_of(state: dict[str, torch.Tensor]) -> HOLEFDistance | None:
    """The HOLEF distance of a saved model's state (its ``distance.`` entries: ``raw_weight`` for the
    non-negative form, ``weight`` for a free W), or None when the model has none."""
    for name, nonnegative in (("raw_weight", True), ("weight", False)):
        tensor = state.get(f"distance.{name}")
        if tensor is not None:
            if tensor.ndim != 2 or tensor.shape[0] != tensor.shape[1] or tensor.shape[0] < 2:
                raise ValueError(f"W must be a square matrix of side >= 2, got shape {tuple(tensor.shape)}")
            dist = HOLEFDistance(tensor.shape[0], nonnegative=nonnegative)
            dist.load_state_dict({name: tensor})
            return dist
    return None


def w_summary(dist: HOLEFDistance) -> dict[str, float]:
    """The figures of a distance's W (d x d), against the W a new distance of the same form starts with."""
    W = dist.weight_matrix().detach().double()
    d = W.shape[0]
    start = HOLEFDistance(d, nonnegative=dist.nonnegative).weight_matrix().detach().double()
    diag = W.diagonal()
    off = W[~torch.eye(d, dtype=torch.bool)]
    return {
        "diag_mean": diag.mean().item(),
        "diag_min": diag.min().item(),
        "diag_max": diag.max().item(),
        "offdiag_mean": off.mean().item(),
        "offdiag_max": off.max().item(),
        "max_change": (W - start).abs().max().item(),
    }


def collect(roots: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One row per (root, dataset, method) with a HOLEF W: the seeds found and the mean of each figure."""
    rows = []
    for root in map(Path, roots):
        found: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
        for path in sorted(root.glob("*/*/seed*/model/model.safetensors")):
            seed_dir = path.parent.parent
            if not seed_dir.name.removeprefix("seed").isdigit():
                continue  # not a seed folder of the layout (seed<k>)
            dist = distance_of(load_file(str(path)))
            if dist is None:
                continue
            method, dataset = seed_dir.parent.name, seed_dir.parent.parent.name
            seed = int(seed_dir.name.removeprefix("seed"))
            found.setdefault((dataset, method), {})[seed] = w_summary(dist)
        for (dataset, method), by_seed in sorted(found.items()):
            rows.append(
                {
                    "root": str(root),
                    "dataset": dataset,
                    "method": method,
                    "seeds": sorted(by_seed),
                    **{k: statistics.mean(s[k] for s in by_seed.values()) for k in KEYS},
                }
            )
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# HOLEF's learned W",
        "",
        "Per run root (one grid point of a sweep), dataset and method, the mean over the seeds found of: W's "
        "diagonal (mean, min, max), its off-diagonal entries (mean, max) and the largest change of any entry "
        "from the W a new model starts with (I, off-diagonal 1e-3 in the non-negative form).",
        "",
        f"Command: `{report['command']}`  ",
        f"Written: {report['date']}",
        "",
        "| run root | dataset | method | seeds | diag mean | diag min | diag max | off-diag mean | off-diag max "
        "| max change |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['root']} | {r['dataset']} | {r['method']} | {','.join(map(str, r['seeds']))} | "
            f"{r['diag_mean']:.3f} | {r['diag_min']:.3f} | {r['diag_max']:.3f} | {r['offdiag_mean']:.2e} | "
            f"{r['offdiag_max']:.3f} | {r['max_change']:.3f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", help="run roots: <root>/<dataset>/<method>/seed<k>/model/")
    p.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    missing = [r for r in args.roots if not Path(r).is_dir()]
    if missing:
        raise SystemExit(f"error: {missing} are not folders; give the run roots of a benchmark (--runs-dir)")
    rows = collect(args.roots)
    if not rows:
        raise SystemExit(f"error: no saved model with a HOLEF W under {args.roots}; train a holef row first")
    report = {
        "benchmark": "holef_w",
        "command": shlex.join(
            ["python", "benchmarks/holef_w.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
    }
    out = Path(args.out)
    write_report(out.with_suffix(".json"), report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
