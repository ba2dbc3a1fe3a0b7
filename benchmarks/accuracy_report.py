"""The accuracy benchmark's tables: cells -> rows (mean ± std over seeds) -> ``<name>.json`` and ``<name>.md``.

Standard deviations are SAMPLE standard deviations over seeds (n - 1 in the denominator); a row with one
seed has none (null in the JSON, the mean alone in the Markdown).

Beside the rows, :func:`paired_differences` compares ``dssa_full`` with every other row query by query:
the acc@1 difference on the same test queries, seed by seed, with bootstrap intervals over the queries and
over the seeds and queries.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from accuracy_cells import read_cell
from accuracy_config import PAPER, DatasetRef
from accuracy_scoring import DIAGNOSTIC_KEYS

NO_RESULT = "no result files yet"
STD_NOTE = "sample standard deviation over seeds (n - 1 in the denominator)"
SELECTION_NOTE = (
    "trained models: the step with the best validation acc@1 (then acc@10), validation carved from train "
    "by photo (seeded by the cell's seed); the test split is scored once per cell"
)
# JSON key -> metric key of a cell
PER_SEED = {"acc1": "acc@1", "acc5": "acc@5", "acc10": "acc@10", "map": "mAP", "mean_rank": "mean_rank"}
PAIRED_REFERENCE = "dssa_full"  # the method the paired differences are about
PAIRED_RESAMPLES = 10_000
PAIRED_NOTE = (
    "acc@1 of {ref} minus the row's, on the same test queries, mean over the seeds both have (paired by "
    "seed); the 95% interval is a paired bootstrap over the test queries ({n} resamples, seeded), so it "
    "covers which queries the test split happens to hold, not the spread between training seeds (the "
    "per-seed differences show that); the second interval resamples the seeds as well (seeds with "
    "replacement, then each drawn seed's queries), so it covers both, coarsely when there are few seeds"
)

STEPS_NOTE = (
    "each ablation step of the config (a row that changes one thing from its parent): the row's acc@1 minus "
    "its parent's, paired on the same test queries as above, with the same two intervals"
)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _joined(values) -> str:
    return "; ".join(sorted({str(v) for v in values if v is not None})) or "unknown"


def _row_note(cells: list[dict], seeds: Sequence[int]) -> str | None:
    notes = []
    if cells and all(c.get("seed_independent") for c in cells):
        computed = {c["computed_with_seed"] for c in cells}
        notes.append(
            "no training: computed once and recorded for every seed (it does not depend on the seed)"
            if len(computed) == 1
            else "no training: computed per seed, because the test split differs between seeds"
        )
    if len(cells) < len(seeds):
        notes.append(f"{len(cells)} of {len(seeds)} seeds")
    return "; ".join(notes) or None


def validation_acc1(cell: dict | None) -> float | None:
    """The validation acc@1 a trained cell chose its model by (``selection.best_val_acc1_acc10``), else None."""
    sel = (cell or {}).get("selection") or {}
    if sel.get("split") != "validation" or not sel.get("best_val_acc1_acc10"):
        return None
    return float(sel["best_val_acc1_acc10"][0])


def build_row(cells: list[dict], dataset: str, method: str, label: str, seeds, not_run: str | None) -> dict:
    """One table row from a method's cells on a dataset (none: a "not run" row with null figures)."""
    row: dict[str, Any] = {"dataset": dataset, "method": method, "label": label}
    row["seeds"] = [c["seed"] for c in cells]
    row["per_seed"] = [
        {"seed": c["seed"], **{k: c["metrics"][m] for k, m in PER_SEED.items()}} for c in cells
    ]
    for key, metric in (("acc1", "acc@1"), ("acc10", "acc@10"), ("map", "mAP")):
        mean, std = _mean_std([c["metrics"][metric] for c in cells]) if cells else (None, None)
        row[f"{key}_mean"], row[f"{key}_std"] = mean, std
    # the validation acc@1 each trained cell chose its model by (none for an untrained method)
    for entry, c in zip(row["per_seed"], cells):
        entry["val_acc1"] = validation_acc1(c)
    chosen_by = [e["val_acc1"] for e in row["per_seed"] if e["val_acc1"] is not None]
    row["val_acc1_mean"], row["val_acc1_std"] = _mean_std(chosen_by) if chosen_by else (None, None)
    row["device"] = _joined(c.get("device") for c in cells) if cells else None
    row["commit"] = _joined(c.get("commit") for c in cells) if cells else None
    row["date"] = _joined(str(c.get("date", ""))[:10] for c in cells) if cells else None
    row["wall_s"] = round(sum(float(c.get("wall_s") or 0.0) for c in cells), 2) if cells else None
    diagnostics = {}
    for key in DIAGNOSTIC_KEYS:
        values = [c["diagnostics"][key] for c in cells if c["diagnostics"].get(key) is not None]
        diagnostics[key] = statistics.fmean(values) if values else None
    row["diagnostics"] = diagnostics
    row["note"] = _row_note(cells, seeds)
    row["not_run"] = None if cells else (not_run or NO_RESULT)
    return row


def collect_rows(
    bench: dict,
    cell_path,
    refs: Sequence[DatasetRef],
    methods: Sequence[str],
    seeds: Sequence[int],
    not_run: dict | None = None,
) -> list[dict]:
    """Every (dataset, method) row; ``cell_path(dataset, method, seed)`` locates the cells."""
    not_run = not_run or {}
    rows = []
    for ref in refs:
        for name in methods:
            cells = [c for s in seeds if (c := read_cell(cell_path(ref.name, name, s))) is not None]
            label = bench["methods"][name]["label"]
            rows.append(build_row(cells, ref.name, name, label, seeds, not_run.get((ref.name, name))))
    return rows


def _hits(cell: dict) -> np.ndarray:
    return np.asarray(cell["ranks"]) == 1  # ranks count ties against the model, as acc@1 does


def _query_resample_means(d: np.ndarray, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Means of ``d`` over bootstrap resamples of its entries (``shape`` of them, each of ``len(d)`` draws
    with replacement), drawn as counts of its distinct values: the same distribution, without an index per
    draw (``d`` holds -1, 0 and +1 only)."""
    values, counts = np.unique(d, return_counts=True)
    drawn = rng.multinomial(len(d), counts / len(d), size=shape)
    return drawn @ values / len(d)


def _seed_and_query_bootstrap(
    diffs: list[np.ndarray], resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Two-level bootstrap of the mean over seeds of the per-query differences ``diffs`` (one array per
    seed): per resample, the seeds drawn with replacement, then each drawn seed's queries (a fresh draw per
    slot, also when a seed is drawn twice)."""
    k = len(diffs)
    # per_slot[seed, resample, slot]: that seed's query-resampled mean, were it drawn into that slot
    per_slot = np.stack([_query_resample_means(d, rng, (resamples, k)) for d in diffs])
    drawn = rng.integers(0, k, (resamples, k))
    return per_slot[drawn, np.arange(resamples)[:, None], np.arange(k)[None, :]].mean(axis=1)


def paired_differences(
    cell_path,
    refs: Sequence[DatasetRef],
    methods: Sequence[str],
    seeds: Sequence[int],
    reference: str = PAIRED_REFERENCE,
    resamples: int = PAIRED_RESAMPLES,
) -> list[dict]:
    """Per dataset, ``reference``'s acc@1 minus each other method's, query by query on the same test split.

    Only seeds whose two cells scored the same test split (same fingerprint and query count) are paired.
    Returns one dict per (dataset, other method): the seeds, the per-seed differences, their mean and a
    95% percentile interval from a paired bootstrap over the test queries (each seed's queries resampled
    with replacement, the same draw for both methods; the mean over seeds taken in every resample), and a
    second one that resamples the seeds too (``ci95_seeds_queries``: seeds with replacement, then each drawn
    seed's queries), which covers the spread between training seeds as well.
    """
    out = []
    for ref in refs:
        base = {s: c for s in seeds if (c := read_cell(cell_path(ref.name, reference, s))) is not None}
        if not base:
            continue
        for name in methods:
            if name == reference:
                continue
            other = {s: c for s in seeds if (c := read_cell(cell_path(ref.name, name, s))) is not None}
            paired = [
                s
                for s in seeds
                if s in base
                and s in other
                and base[s].get("test_fingerprint") == other[s].get("test_fingerprint")
                and len(base[s]["ranks"]) == len(other[s]["ranks"])
            ]
            if not paired:
                continue
            rng = np.random.default_rng(0)
            per_seed, boot, diffs = [], np.zeros(resamples), []
            for s in paired:
                d = _hits(base[s]).astype(float) - _hits(other[s]).astype(float)
                diffs.append(d)
                per_seed.append(100.0 * float(d.mean()))
                boot += d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
            boot *= 100.0 / len(paired)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            both = _seed_and_query_bootstrap(diffs, resamples, np.random.default_rng(1))
            both_lo, both_hi = np.percentile(100.0 * both, [2.5, 97.5])
            out.append(
                {
                    "dataset": ref.name,
                    "method": reference,
                    "against": name,
                    "seeds": paired,
                    "per_seed": [round(v, 4) for v in per_seed],
                    "mean": round(statistics.fmean(per_seed), 4),
                    "ci95": [round(float(lo), 4), round(float(hi), 4)],
                    "ci95_seeds_queries": [round(float(both_lo), 4), round(float(both_hi), 4)],
                    "seeds_ahead": sum(v > 0 for v in per_seed),
                }
            )
    return out


def paired_steps(
    cell_path,
    refs: Sequence[DatasetRef],
    methods: Sequence[str],
    seeds: Sequence[int],
    steps: Sequence[Sequence[str]],
    resamples: int = PAIRED_RESAMPLES,
) -> list[dict]:
    """Per ablation step ``[parent, child]`` whose two methods are both in ``methods``: the child's acc@1
    minus the parent's, as :func:`paired_differences` pairs them (``method`` is the child, ``against`` the
    parent)."""
    return [
        p
        for parent, child in steps
        if parent in methods and child in methods
        for p in paired_differences(cell_path, refs, [parent], seeds, reference=child, resamples=resamples)
    ]


def write_tables(
    results_dir: Path,
    name: str,
    bench: dict,
    refs: Sequence[DatasetRef],
    rows: list[dict],
    run: dict,
    paired: list[dict] | None = None,
    steps: list[dict] | None = None,
) -> dict[str, Any]:
    """Write ``<results_dir>/<name>.json`` and ``.md``; ``run`` describes this invocation; ``paired``: the
    :func:`paired_differences` to show; ``steps``: the :func:`paired_steps`. Returns the JSON."""
    from report_files import write_report

    paper = {
        r.name: {label: {"acc1": a1, "acc10": a10} for label, (a1, a10) in PAPER[r.name].items()}
        for r in refs
        if r.name in PAPER
    }
    table = {
        "benchmark": name,
        "protocol": bench["protocol"],
        "command": run.get("command", ""),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "total_wall_s": round(sum(r["wall_s"] or 0.0 for r in rows), 2),
        "invocation": run,
        "std": STD_NOTE,
        "selection": SELECTION_NOTE,
        "titles": {r.name: r.title for r in refs},
        "paper": paper,
        "config": bench,
        "rows": rows,
        "paired": paired or [],
        "paired_note": PAIRED_NOTE.format(ref=PAIRED_REFERENCE, n=PAIRED_RESAMPLES),
        "steps": steps or [],
        "steps_note": STEPS_NOTE,
    }
    write_report(Path(results_dir) / f"{name}.json", table, render_markdown(table))
    return table


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pair(d: dict, a: str, b: str) -> str:
    if d[a] is None and d[b] is None:
        return "—"
    return f"{_num(d[a])} / {_num(d[b])}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s ({seconds / 60:.1f} min)"


HEADER = (
    "| method | acc@1 | acc@10 | mAP | val acc@1 | att. lift S / P | att. peak S / P | fine cos | coarse cos "
    "| seeds | wall | device | date | commit |"
)
N_COLUMNS = HEADER.count("|") - 1


def _row_line(row: dict) -> str:
    if row["not_run"]:
        return f"| {row['label']} | not run: {row['not_run']} |" + " |" * (N_COLUMNS - 2)
    d = row["diagnostics"]
    cells = [
        row["label"],
        _pm(row["acc1_mean"], row["acc1_std"]),
        _pm(row["acc10_mean"], row["acc10_std"]),
        _pm(row["map_mean"], row["map_std"]),
        _pm(row["val_acc1_mean"], row["val_acc1_std"]) or "—",
        _pair(d, "attention_lift_sketch", "attention_lift_photo"),
        _pair(d, "attention_peak_sketch", "attention_peak_photo"),
        _num(d["fine_cosine_photo"], 3),
        _num(d["coarse_cosine_photo"], 3),
        ", ".join(str(s) for s in row["seeds"]),
        f"{row['wall_s']:.0f} s",
        row["device"],
        row["date"],
        ", ".join(c[:10] for c in row["commit"].split("; ")),
    ]
    return "| " + " | ".join(cells) + " |"


def _intro(table: dict) -> list[str]:
    run = table["invocation"]
    this = (
        "aggregated only"
        if run.get("aggregate_only")
        else (
            f"{_duration(run.get('wall_s', 0.0))}, {run.get('ran', 0)} cells run, {run.get('skipped', 0)} skipped as done"
        )
    )
    total = "no cell has run yet"
    if any(not r["not_run"] for r in table["rows"]):
        total = f"{_duration(table['total_wall_s'])}, the sum of the cells' own wall times"
    return [
        f"# Accuracy: {table['benchmark']}",
        "",
        f"**Protocol.** {table['protocol']}",
        "",
        "Sketch → photo retrieval on each dataset's TEST split: mean ± std over seeds, where std is the "
        f"{table['std']}. Selection: {table['selection']}. acc@K and mAP in percent, ties counted against "
        "the model. *val acc@1* is the validation acc@1 each trained model was chosen by (the best of its "
        "checks on the small validation split, so it runs high).",
        "",
        "Diagnostics, on the test split with the selected model, mean over seeds: *att. lift S / P* is the "
        "attention mass on ink (sketches) / object (photos) pixels against a uniform map's (1.00 = uniform); "
        "*att. peak* is the largest attention weight times h·w (1.00 = uniform); *fine cos* / *coarse cos* "
        "are the mean cosines between different test photos' fine / coarse branch vectors (near 1: the branch "
        "gives every photo the same vector); — : the model has no such part.",
        "",
        f"Command: `{table['command']}`  ",
        f"Total wall time: {total} (this invocation: {this}).  ",
        f"Written: {table['date']}",
        "",
    ]


def render_markdown(table: dict[str, Any]) -> str:
    lines = _intro(table)
    by_dataset: dict[str, list] = {}
    for row in table["rows"]:
        by_dataset.setdefault(row["dataset"], []).append(row)
    for dataset, rows in by_dataset.items():
        lines += [f"## {table['titles'].get(dataset, dataset)}", "", HEADER, "| --- " * N_COLUMNS + "|"]
        for label, figures in table["paper"].get(dataset, {}).items():
            cells = [f"*{label}*", _num(figures["acc1"]), _num(figures["acc10"])]
            lines.append("| " + " | ".join(cells) + " |" + " |" * (N_COLUMNS - len(cells)))
        lines += [_row_line(row) for row in rows]
        notes = [f"- {row['label']}: {row['note']}." for row in rows if row["note"] and not row["not_run"]]
        lines += ["", *notes, ""] if notes else [""]
        lines += _paired_lines(table, dataset)
    return "\n".join(lines)


def _signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "−")


def _difference_lines(first: str, pairs: list[dict], name) -> list[str]:
    """A table of paired differences, one line per pair; ``name(pair)`` fills the first column."""
    lines = [
        f"| {first} | Δ acc@1 | 95% interval (queries) | 95% interval (seeds, queries) | per seed | seeds ahead |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for p in pairs:
        lo, hi = p["ci95"]
        both_lo, both_hi = p["ci95_seeds_queries"]
        lines.append(
            f"| {name(p)} | {_signed(p['mean'])} | [{_signed(lo)}, {_signed(hi)}] | "
            f"[{_signed(both_lo)}, {_signed(both_hi)}] | "
            + " / ".join(_signed(v) for v in p["per_seed"])
            + f" | {p['seeds_ahead']} of {len(p['seeds'])} |"
        )
    return [*lines, ""]


def _paired_lines(table: dict, dataset: str) -> list[str]:
    labels = {r["method"]: r["label"] for r in table["rows"]}
    lines = []
    pairs = [p for p in table.get("paired", []) if p["dataset"] == dataset]
    if pairs:
        ref = pairs[0]["method"]
        lines += [f"Paired with {labels.get(ref, ref)}: {table['paired_note']}.", ""]
        lines += _difference_lines("against", pairs, lambda p: labels.get(p["against"], p["against"]))
    steps = [p for p in table.get("steps", []) if p["dataset"] == dataset]
    if steps:
        lines += [f"Steps: {table['steps_note']}.", ""]
        lines += _difference_lines("step", steps, lambda p: f"`{p['against']}` → `{p['method']}`")
    return lines
