"""Accuracy benchmark: DSSA (ablation) against the triplet baseline and CLIP, on real FG-SBIR data.

Issue 7. A config (``benchmarks/accuracy_configs/*.yaml``) names the methods, the datasets and the
seeds; every (method, dataset, seed) cell is trained with ``fgsbir_plugin.train.engine.train`` (the
model chosen on a validation split carved from train by photo, never on test), then scored once
on the TEST split, and written atomically to
``<results-dir>/accuracy/<dataset>/<method>/seed<k>.json`` with device, date, commit, command,
wall time and the full config. A rerun skips finished cells (and resumes a half-trained one from
its run folder). Then the cells are aggregated into ``<results-dir>/accuracy.md`` and
``accuracy.json`` (mean +- std over seeds, the paper's figures beside ours, "not run: <reason>"
for the rest) and plotted: acc@K curves into ``<results-dir>/accuracy_plots/``; the best method's
top-5 retrievals and the attention maps, which show dataset images and so must not be committed,
into ``<runs-dir>/figures/`` (synthetic data: beside the curves).

Method kinds (``kind`` in the config):
  ``timm``: a timm model (the DSSA family) trained by the engine with the given loss;
  ``clip``: the open_clip image tower (``fgsbir_plugin.baselines.CLIPImageEmbedder``), either
  ``adapt: none`` (zero-shot: nothing trained, cosine distance) or ``adapt: ln_proj`` (LayerNorms +
  a projection trained with the triplet loss by the same engine). CLIP runs only when
  ``--clip-pretrained`` is given (``openai`` or a local checkpoint file) and loads; otherwise its
  rows say "not run: weights unavailable offline". No CLIP number is ever made up.

Usage (repo root):
  python benchmarks/accuracy.py --config benchmarks/accuracy_configs/gpu.yaml --data-dir .data
  python benchmarks/accuracy.py --config benchmarks/accuracy_configs/smoke.yaml --device cpu \\
      --results-dir /tmp/acc --runs-dir /tmp/acc/runs          # CPU smoke, synthetic data, < 1 min
  python benchmarks/accuracy.py --config ... --aggregate-only  # rebuild table + plots from the cells
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fgsbir_plugin._common import atomic_path, atomic_write_bytes  # noqa: E402

DEFAULT_CONFIG = REPO / "benchmarks" / "accuracy_configs" / "gpu.yaml"
DEFAULT_RESULTS = REPO / "benchmarks" / "results"
REAL_DATASETS = ("chairv2", "shoev2", "shoes_v1", "chairs_v1")
METRIC_KEYS = ("acc@1", "acc@5", "acc@10", "mAP", "mean_rank", "median_rank")
CLIP_NOT_RUN = "weights unavailable offline"
NO_RESULT = "no result files yet"

# The DSSA paper's (ICCV 2017) full-model figures on the QMUL V1 test sets, as commonly cited.
PAPER = {
    "shoes_v1": {"acc@1": 61.74, "acc@10": 94.78},
    "chairs_v1": {"acc@1": 81.44, "acc@10": 95.88},
}
DATASET_TITLES = {
    "chairv2": "QMUL-Chair-V2",
    "shoev2": "QMUL-Shoe-V2",
    "shoes_v1": "QMUL-Shoe-V1",
    "chairs_v1": "QMUL-Chair-V1",
    "synthetic": "synthetic (smoke)",
}
_METHOD_KEYS = {"label", "kind", "model", "model_kwargs", "train", "adapt", "paper_row"}

# A CLIP tower factory: (adapt) -> CLIPImageEmbedder. Tests inject a tiny random one.
ClipFactory = Callable[[str], torch.nn.Module]


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def load_benchmark_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a benchmark config (YAML, TOML or JSON): seeds, datasets, train, methods."""
    from fgsbir_plugin.train.config import TrainConfig

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark config {path} does not exist; pass --config <file>.")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        cfg = yaml.safe_load(text)
    elif path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        cfg = tomllib.loads(text)
    elif path.suffix == ".json":
        cfg = json.loads(text)
    else:
        raise ValueError(f"benchmark config {path} must end in .yaml, .yml, .toml or .json.")
    if not isinstance(cfg, dict):
        raise ValueError(f"benchmark config {path} must hold a mapping with seeds, datasets, train, methods.")
    unknown = set(cfg) - {"seeds", "datasets", "dataset_kwargs", "train", "methods", "curve_max_k"}
    if unknown:
        raise ValueError(f"benchmark config {path} has unknown keys {sorted(unknown)}.")
    for key in ("seeds", "datasets", "methods"):
        if not cfg.get(key):
            raise ValueError(f"benchmark config {path} must list {key}.")
    cfg.setdefault("train", {})
    cfg.setdefault("dataset_kwargs", {})
    TrainConfig.from_dict(cfg["train"], f"{path}: train")  # unknown option names fail here
    if not float(cfg["train"].get("validation_size", TrainConfig.validation_size)) > 0:
        raise ValueError(
            f"{path}: train.validation_size must be > 0: the model is chosen on a validation split "
            "carved from train, never on test."
        )
    for name, method in cfg["methods"].items():
        extra = set(method) - _METHOD_KEYS
        if extra:
            raise ValueError(f"{path}: method {name!r} has unknown keys {sorted(extra)}.")
        method.setdefault("kind", "timm")
        method.setdefault("label", name)
        if method["kind"] not in ("timm", "clip"):
            raise ValueError(f"{path}: method {name!r} kind must be 'timm' or 'clip'.")
        if method["kind"] == "timm" and not method.get("model"):
            raise ValueError(f"{path}: method {name!r} needs a timm model name (model: dssa).")
        if method["kind"] == "clip" and method.get("adapt", "none") not in ("none", "ln_proj"):
            raise ValueError(f"{path}: method {name!r} adapt must be 'none' or 'ln_proj'.")
        TrainConfig.from_dict(method.get("train", {}), f"{path}: methods.{name}.train")
    return cfg


# --------------------------------------------------------------------------------------------------
# One cell
# --------------------------------------------------------------------------------------------------


def cell_path(results_dir: Path, dataset: str, method: str, seed: int) -> Path:
    return Path(results_dir) / "accuracy" / dataset / method / f"seed{seed}.json"


def read_cell(path: Path) -> dict[str, Any] | None:
    """A finished cell's record, or None when it is missing or unreadable (then it is rerun)."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    metrics = rec.get("metrics") if isinstance(rec, dict) else None
    if not isinstance(metrics, dict) or any(k not in metrics for k in METRIC_KEYS):
        return None
    return rec


def _data_dir_for(dataset: str, data_dir: str | None) -> str | None:
    return None if dataset == "synthetic" else data_dir


def load_cell_data(bench: dict, dataset: str, seed: int, data_dir: str | None, validation_size: float):
    """(sketches, photos) with train / validation (carved from train by photo, seeded) / test."""
    from fgsbir_plugin.data import load_fgsbir_pair

    kwargs = dict(bench.get("dataset_kwargs", {}).get(dataset) or {})
    sketches, photos = load_fgsbir_pair(
        dataset,
        _data_dir_for(dataset, data_dir),
        validation_size=validation_size,
        seed=seed,
        **kwargs,
    )
    for split in ("train", "validation", "test"):
        if split not in sketches or len(sketches[split]) == 0:
            raise ValueError(
                f"{dataset} (seed {seed}) has no {split} sketches; check the data and validation_size."
            )
    val_ids = set(photos["validation"]["photo_id"])
    if val_ids & set(photos["test"]["photo_id"]) or val_ids & set(photos["train"]["photo_id"]):
        raise ValueError(f"{dataset}: the validation photos overlap train or test; the data split is broken.")
    return sketches, photos


@torch.no_grad()
def score_split(model, sketches, photos, *, device, distance=None, image_size=None, batch_size=64):
    """Embed one split and rank: (metrics, ranks [Nq], top10 [Nq, <=10] gallery indices)."""
    from fgsbir_plugin.metrics import rank_of_target, retrieval_metrics
    from fgsbir_plugin.train.evaluate import split_distances

    out = split_distances(
        model,
        sketches,
        photos,
        image_size=image_size,
        batch_size=batch_size,
        device=device,
        distance=distance,
        cache=True,
    )
    dist, target = out["dist"].double(), out["target"]
    metrics = retrieval_metrics(dist, target)
    ranks = rank_of_target(dist, target)
    top = torch.argsort(dist, dim=1, stable=True)[:, : min(10, dist.shape[1])]
    return metrics, ranks, top, dist, target, (out["sketch_table"], out["transform"])


def _train_config(bench: dict, method: dict, dataset: str, seed: int, out: Path, device: str, data_dir):
    from fgsbir_plugin.train.config import TrainConfig

    values = {**bench["train"], **method.get("train", {})}
    values.update(
        data=dataset,
        data_dir=_data_dir_for(dataset, data_dir),
        data_kwargs=dict(bench.get("dataset_kwargs", {}).get(dataset) or {}),
        out=str(out),
        seed=seed,
        device=device,
    )
    if method["kind"] == "timm":
        values["model"] = method["model"]
        values["model_kwargs"] = dict(method.get("model_kwargs") or {})
    return TrainConfig.from_dict(values, "benchmark config").validate()


def _run_in_progress(out: Path) -> bool:
    from fgsbir_plugin.train.checkpoint import has_training_state

    return (out / "run_config.json").is_file() and has_training_state(out / "state")


def run_cell(
    bench: dict,
    name: str,
    dataset: str,
    seed: int,
    *,
    results_dir: Path,
    runs_dir: Path,
    data_dir: str | None,
    device: str,
    clip_factory: ClipFactory | None,
    command: str,
    datasets=None,
) -> dict[str, Any]:
    """Train (unless zero-shot), select on validation, score on test, write the cell's JSON."""
    from fgsbir_plugin.run_folder import RunFolder
    from fgsbir_plugin.runtime import describe_device, git_commit, resolve_device
    from fgsbir_plugin.train.engine import train

    method = bench["methods"][name]
    out = Path(runs_dir) / dataset / name / f"seed{seed}"
    dev = resolve_device(device)
    t0 = time.perf_counter()
    from fgsbir_plugin.train.config import TrainConfig

    val_size = float(
        {**bench["train"], **method.get("train", {})}.get("validation_size", TrainConfig.validation_size)
    )
    if datasets is None:
        datasets = load_cell_data(bench, dataset, seed, data_dir, val_size)
    sketches, photos = datasets
    summary: dict[str, Any] | None = None
    train_cfg = None
    distance = None
    torch.manual_seed(seed)
    if method["kind"] == "clip" and method.get("adapt", "none") == "none":
        model = clip_factory("none").to(dev).eval()  # zero-shot: nothing trained, nothing selected
        selection = {"split": None, "note": "zero-shot: no training, no model selection"}
    else:
        train_cfg = _train_config(bench, method, dataset, seed, out, device, data_dir)
        injected = clip_factory(method["adapt"]) if method["kind"] == "clip" else None
        if injected is not None:
            train_cfg.model = f"clip:{method.get('adapt')}"
        if _run_in_progress(out):
            train_cfg.resume = True
        elif out.exists():
            # Killed before its first resumable state: nothing to keep (the harness owns runs_dir).
            import shutil

            shutil.rmtree(out)
        summary = train(train_cfg, datasets=(sketches, photos), model=injected)
        if not summary["done"]:
            raise RuntimeError(f"training of {out} stopped before its end; rerun to resume it.")
        if injected is not None:
            from safetensors.torch import load_file

            injected.load_state_dict(load_file(str(RunFolder(out).injected_model_path)))
            model = injected.to(dev).eval()
        else:
            from fgsbir_plugin.model_io import load_model

            model = load_model(out / "model", device=dev)
            distance = RunFolder(out).load_distance(model)
        selection = {
            "split": "validation",
            "num_queries": len(sketches["validation"]),
            "num_gallery": len(photos["validation"]),
            "best_val_acc@1_acc@10": summary["best"],
            "best_step": summary["best_step"],
            "total_steps": summary["total_steps"],
        }
    image_size = train_cfg.image_size if train_cfg is not None else None
    metrics, ranks, top, *_ = score_split(
        model, sketches["test"], photos["test"], device=dev, distance=distance, image_size=image_size
    )
    if not all(math.isfinite(v) for v in metrics.values()):
        raise RuntimeError(f"{dataset}/{name}/seed{seed}: non-finite test metrics {metrics}.")
    record = {
        "dataset": dataset,
        "method": name,
        "label": method["label"],
        "seed": seed,
        "split": "test",
        "metrics": metrics,
        "num_queries": len(sketches["test"]),
        "num_gallery": len(photos["test"]),
        "ranks": ranks.tolist(),
        "top10": top.tolist(),
        "selection": selection,
        "run_dir": str(out) if train_cfg is not None else None,
        "device": describe_device(dev),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # The device machine gets a copy of the tree without .git: the caller passes the commit.
        "commit": git_commit() or os.environ.get("FGSBIR_COMMIT"),
        "command": command,
        "wall_s": round(time.perf_counter() - t0, 2),
        "config": {
            "method": method,
            "train": train_cfg.to_dict() if train_cfg is not None else None,
            "dataset_kwargs": bench.get("dataset_kwargs", {}).get(dataset) or {},
            "clip": bench.get("_clip"),
        },
    }
    path = cell_path(results_dir, dataset, name, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(record, indent=1) + "\n").encode())
    return record


# --------------------------------------------------------------------------------------------------
# CLIP
# --------------------------------------------------------------------------------------------------


def clip_factory_from_args(model_name: str, pretrained: str | None) -> tuple[ClipFactory | None, str | None]:
    """(factory, None) when the CLIP weights load; (None, reason) otherwise. Loads once to check."""
    if not pretrained:
        return None, CLIP_NOT_RUN
    try:
        from fgsbir_plugin.baselines.clip import CLIPImageEmbedder

        CLIPImageEmbedder.from_pretrained(model_name, pretrained, adapt="none")
    except Exception as err:  # noqa: BLE001  (any failure to load means: not run, with the reason)
        return None, f"{CLIP_NOT_RUN} ({type(err).__name__}: {str(err).splitlines()[0][:120]})"

    def factory(adapt: str) -> torch.nn.Module:
        return CLIPImageEmbedder.from_pretrained(model_name, pretrained, adapt=adapt)

    return factory, None


# --------------------------------------------------------------------------------------------------
# The whole grid
# --------------------------------------------------------------------------------------------------


def run_benchmark(
    bench: dict,
    *,
    results_dir: Path,
    runs_dir: Path,
    data_dir: str | None,
    device: str = "auto",
    clip_factory: ClipFactory | None = None,
    clip_reason: str | None = CLIP_NOT_RUN,
    methods: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    command: str = "",
    plots: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every missing cell, then aggregate; returns ``{"ran", "skipped", "not_run", "table"}``."""
    from fgsbir_plugin._common import default_data_dir

    methods = list(methods or bench["methods"])
    datasets = list(datasets or bench["datasets"])
    seeds = [int(s) for s in (seeds or bench["seeds"])]
    for m in methods:
        if m not in bench["methods"]:
            raise ValueError(f"method {m!r} is not in the config; it has {', '.join(bench['methods'])}.")
    if data_dir is None:
        found = default_data_dir()
        data_dir = str(found) if found is not None else None
    ran, skipped, not_run = [], [], {}
    for dataset in datasets:
        reason = dataset_unavailable(dataset, data_dir)
        if reason:
            not_run.update({(dataset, m): reason for m in methods})
            log(f"[accuracy] {dataset}: not run: {reason}")
            continue
        for name in methods:
            method = bench["methods"][name]
            if method["kind"] == "clip" and clip_factory is None:
                not_run[(dataset, name)] = clip_reason or CLIP_NOT_RUN
                continue
            for seed in seeds:
                path = cell_path(results_dir, dataset, name, seed)
                if read_cell(path) is not None:
                    skipped.append((dataset, name, seed))
                    log(f"[accuracy] {dataset}/{name}/seed{seed}: done earlier, skipped")
                    continue
                log(f"[accuracy] {dataset}/{name}/seed{seed}: running")
                rec = run_cell(
                    bench,
                    name,
                    dataset,
                    seed,
                    results_dir=results_dir,
                    runs_dir=runs_dir,
                    data_dir=data_dir,
                    device=device,
                    clip_factory=clip_factory,
                    command=command,
                )
                ran.append((dataset, name, seed))
                m = rec["metrics"]
                log(
                    f"[accuracy] {dataset}/{name}/seed{seed}: test acc@1 {m['acc@1']:.2f} "
                    f"acc@10 {m['acc@10']:.2f} ({rec['wall_s']:.0f} s)"
                )
    table = aggregate(bench, results_dir, methods, datasets, seeds, not_run, command=command)
    if plots:
        make_plots(bench, results_dir, runs_dir, methods, datasets, data_dir, device, clip_factory, table)
    return {"ran": ran, "skipped": skipped, "not_run": not_run, "table": table}


def dataset_unavailable(dataset: str, data_dir: str | None) -> str | None:
    """Why ``dataset`` cannot be read here (a short reason), or None when it can."""
    if dataset == "synthetic":
        return None
    if data_dir is None or not Path(data_dir).is_dir():
        return "no data folder (set $FGSBIR_DATA or --data-dir)"
    folder = {
        "chairv2": "chairv2",
        "shoev2": "shoev2",
        "shoes_v1": "qmul_v1/shoes",
        "chairs_v1": "qmul_v1/chairs",
    }
    sub = folder.get(dataset)
    if sub is not None and not (Path(data_dir) / sub).is_dir():
        return f"dataset not present (no {sub}/ in the data folder)"
    return None


# --------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(
    bench: dict,
    results_dir: Path,
    methods: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    not_run: dict | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Write ``accuracy.json`` and ``accuracy.md`` from the cell files; return the JSON."""
    not_run = dict(not_run or {})
    rows = []
    for dataset in datasets:
        for name in methods:
            method = bench["methods"][name]
            cells = [c for s in seeds if (c := read_cell(cell_path(results_dir, dataset, name, s)))]
            row: dict[str, Any] = {"dataset": dataset, "method": name, "label": method["label"]}
            if cells:
                row["seeds"] = [c["seed"] for c in cells]
                row["metrics"] = {}
                for k in METRIC_KEYS:
                    mean, std = _mean_std([float(c["metrics"][k]) for c in cells])
                    row["metrics"][k] = {"mean": mean, "std": std}
                row["devices"] = sorted({c["device"] for c in cells})
                row["dates"] = sorted({c["date"][:10] for c in cells})
                row["commits"] = sorted({str(c["commit"])[:10] for c in cells})
                row["wall_s"] = sum(float(c["wall_s"]) for c in cells)
                if len(cells) < len(seeds):
                    row["note"] = f"{len(cells)} of {len(seeds)} seeds"
            else:
                row["not_run"] = not_run.get((dataset, name), NO_RESULT)
            rows.append(row)
    paper = {d: PAPER[d] for d in datasets if d in PAPER}
    out = {
        "benchmark": "accuracy (issue 7): sketch -> photo retrieval on the TEST split, mean +- std over seeds",
        "selection": "best epoch by validation acc@1 then acc@10 (validation carved from train by photo)",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "seeds": list(seeds),
        "paper": paper,
        "rows": rows,
    }
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(results_dir / "accuracy.json", (json.dumps(out, indent=2) + "\n").encode())
    atomic_write_bytes(results_dir / "accuracy.md", render_markdown(out).encode())
    return out


def _fmt(m: dict[str, Any], key: str, n: int, digits: int = 2) -> str:
    """``mean ± std`` over ``n`` seeds; the mean alone for one seed (a std of 0 would mislead)."""
    v = m[key]
    return f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}" if n > 1 else f"{v['mean']:.{digits}f}"


def render_markdown(table: dict[str, Any]) -> str:
    lines = [
        "# Accuracy benchmark (issue 7)",
        "",
        "Sketch -> photo retrieval on each dataset's TEST split; mean ± std over seeds "
        f"{table['seeds']}. The model of each run is the one with the best validation acc@1 "
        "(then acc@10); validation is carved from train by photo, never from test. acc@K and "
        "mAP in percent, ranks 1-based, ties counted against the model.",
        "",
        f"Command: `{table['command']}`  ",
        f"Aggregated: {table['date']}",
        "",
    ]
    by_ds: dict[str, list] = {}
    for row in table["rows"]:
        by_ds.setdefault(row["dataset"], []).append(row)
    for dataset, rows in by_ds.items():
        lines += [
            f"## {DATASET_TITLES.get(dataset, dataset)}",
            "",
            "| method | acc@1 | acc@5 | acc@10 | mAP | mean rank | seeds | device |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        if dataset in table["paper"]:
            p = table["paper"][dataset]
            lines.append(
                f"| DSSA, paper (Song et al. ICCV 2017) | {p['acc@1']:.2f} |  | {p['acc@10']:.2f} |  |  |  | as published |"
            )
        for row in rows:
            if "not_run" in row:
                lines.append(f"| {row['label']} | not run: {row['not_run']} |  |  |  |  |  |  |")
                continue
            m, n = row["metrics"], len(row["seeds"])
            seeds = str(n) + (f" ({row['note']})" if "note" in row else "")
            lines.append(
                f"| {row['label']} | {_fmt(m, 'acc@1', n)} | {_fmt(m, 'acc@5', n)} | {_fmt(m, 'acc@10', n)} | "
                f"{_fmt(m, 'mAP', n)} | {_fmt(m, 'mean_rank', n)} | {seeds} | {'; '.join(row['devices'])} |"
            )
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def make_plots(
    bench, results_dir, runs_dir, methods, datasets, data_dir, device, clip_factory, table
) -> list[Path]:
    """acc@K curves per dataset, the best method's retrievals, attention maps; returns the files.

    The curves (numbers only) go to ``<results-dir>/accuracy_plots/``. The retrieval grid and the
    attention maps show the dataset's own sketches and photos, which must never be committed, so
    for real datasets they go to ``<runs-dir>/figures/`` (under the git-ignored ``runs/`` by
    default); only the synthetic smoke data's figures sit beside the curves.
    """
    import matplotlib

    matplotlib.use("Agg")
    plot_dir = Path(results_dir) / "accuracy_plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    data_fig_dir = Path(runs_dir) / "figures"
    written = []
    max_k = int(bench.get("curve_max_k", 20))
    for dataset in datasets:
        rows = [r for r in table["rows"] if r["dataset"] == dataset and "metrics" in r]
        if not rows:
            continue
        written.append(plot_acc_curves(results_dir, bench, dataset, rows, plot_dir, max_k))

        def score(r):
            return (r["metrics"]["acc@1"]["mean"], r["metrics"]["acc@10"]["mean"])

        best = max(rows, key=score)
        attended = [r for r in rows if _has_attention(bench["methods"][r["method"]])]
        fig_dir = plot_dir if dataset == "synthetic" else data_fig_dir
        fig_dir.mkdir(parents=True, exist_ok=True)
        try:
            view = _cell_view(bench, results_dir, dataset, best, data_dir, device, clip_factory)
            written.append(plot_retrievals(view, fig_dir / f"retrievals_{dataset}.png"))
            if attended:
                best_att = max(attended, key=score)
                if best_att is not best:
                    view = _cell_view(bench, results_dir, dataset, best_att, data_dir, device, clip_factory)
                if view["model"] is not None:
                    written.append(plot_attention(view, fig_dir / f"attention_{dataset}.png"))
        except (OSError, ValueError, RuntimeError) as err:
            print(f"[accuracy] {dataset}: retrieval / attention figure skipped ({err})")
    return written


def plot_acc_curves(results_dir, bench, dataset, rows, plot_dir: Path, max_k: int) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        curves = []
        for seed in row["seeds"]:
            cell = read_cell(cell_path(results_dir, dataset, row["method"], seed))
            ranks = torch.tensor(cell["ranks"], dtype=torch.float64)
            ks = torch.arange(1, min(max_k, cell["num_gallery"]) + 1, dtype=torch.float64)
            curves.append((ranks[None, :] <= ks[:, None]).double().mean(dim=1) * 100.0)
        c = torch.stack(curves)
        mean = c.mean(0)
        ax.plot(ks.numpy(), mean.numpy(), marker=".", label=row["label"])
        if c.shape[0] > 1:
            std = c.std(0)
            ax.fill_between(ks.numpy(), (mean - std).numpy(), (mean + std).numpy(), alpha=0.15)
    if dataset in PAPER:
        ax.scatter(
            [1, 10],
            [PAPER[dataset]["acc@1"], PAPER[dataset]["acc@10"]],
            marker="*",
            s=90,
            color="k",
            zorder=5,
            label="DSSA, paper",
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("K")
    ax.set_ylabel("acc@K (%) on test")
    ax.set_title(f"{DATASET_TITLES.get(dataset, dataset)}: acc@K (mean ± std over seeds)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    path = plot_dir / f"acc_at_k_{dataset}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _load_cell_model(bench, cell, device, clip_factory):
    """The scored model of a cell (and its distance), or (None, None) when its run folder is gone."""
    from fgsbir_plugin.run_folder import RunFolder

    method = bench["methods"][cell["method"]]
    if method["kind"] == "clip":
        if clip_factory is None:
            return None, None
        model = clip_factory(method.get("adapt", "none"))
        if cell["run_dir"]:
            from safetensors.torch import load_file

            f = RunFolder(cell["run_dir"]).injected_model_path
            if not f.is_file():
                return None, None
            model.load_state_dict(load_file(str(f)))
        return model.to(device).eval(), None
    run = Path(cell["run_dir"] or "")
    if not (run / "model" / "config.json").is_file():
        return None, None
    from fgsbir_plugin.model_io import load_model

    model = load_model(run / "model", device=device)
    return model, RunFolder(run).load_distance(model)


def _cell_view(bench, results_dir, dataset, row, data_dir, device, clip_factory) -> dict[str, Any]:
    """The test split of ``row``'s first seed, its (reloaded) model and its distances ``[Nq, Ng]``."""
    from fgsbir_plugin.data.sampling import pair_index
    from fgsbir_plugin.runtime import resolve_device

    seed = row["seeds"][0]
    cell = read_cell(cell_path(results_dir, dataset, row["method"], seed))
    train_cfg = (cell.get("config") or {}).get("train") or {}
    sketches, photos = load_cell_data(
        bench, dataset, seed, data_dir, float(train_cfg.get("validation_size") or 0.1)
    )
    s_test, p_test = sketches["test"], photos["test"]
    dev = resolve_device(device)
    model, distance = _load_cell_model(bench, cell, dev, clip_factory)
    target = pair_index(list(s_test["photo_id"]), list(p_test["photo_id"]))
    inputs = None
    if model is not None:
        _, _, _, dist, target, inputs = score_split(
            model, s_test, p_test, device=dev, distance=distance, image_size=train_cfg.get("image_size")
        )
    else:
        # No model to re-run (run folder gone, CLIP weights absent): rank by the stored top-10.
        top = torch.tensor(cell["top10"])
        dist = torch.full((len(s_test), len(p_test)), float(len(p_test)), dtype=torch.float64)
        dist.scatter_(1, top, torch.arange(top.shape[1], dtype=torch.float64).expand_as(top).contiguous())
    return {
        "sketches": s_test,
        "photos": p_test,
        "model": model,
        "dist": dist,
        "target": target,
        "inputs": inputs,
        "train_cfg": train_cfg,
        "device": dev,
        "label": row["label"],
    }


def plot_retrievals(view: dict[str, Any], path: Path) -> Path:
    """Six test sketches with their top-5 photos (true match outlined), via demo.draw_retrievals."""
    from fgsbir_plugin.train.demo import draw_retrievals

    return draw_retrievals(
        path,
        view["sketches"],
        view["photos"],
        view["dist"],
        view["target"],
        model=view["model"],
        sketch_inputs=view["inputs"],
        queries=6,
        top=5,
    )


def _has_attention(method: dict) -> bool:
    return method["kind"] == "timm" and (method.get("model_kwargs") or {}).get("attention", True) is not False


@torch.no_grad()
def plot_attention(view: dict[str, Any], path: Path, n: int = 4) -> Path:
    """Rows: a test sketch and its true photo, each with the model's attention map laid over it."""
    import matplotlib.pyplot as plt

    from fgsbir_plugin.data.transforms import ImageTable, load_size_for
    from fgsbir_plugin.embedding import model_input_spec

    model, sketches, photos, target = view["model"], view["sketches"], view["photos"], view["target"]
    inputs, train_cfg, device, label = view["inputs"], view["train_cfg"], view["device"], view["label"]
    s_table, tf = inputs
    spec = model_input_spec(model, train_cfg.get("image_size"))
    p_table = ImageTable(
        photos, "photo", load_size_for(spec["image_size"], spec["crop_pct"]), spec["in_chans"]
    )
    rows = torch.linspace(0, len(sketches) - 1, min(n, len(sketches))).round().long().tolist()
    fig, axes = plt.subplots(len(rows), 2, figsize=(4.4, 2.2 * len(rows)), squeeze=False)
    model.eval()
    for r, q in enumerate(rows):
        for c, (modality, table, idx, img) in enumerate(
            [
                ("sketch", s_table, q, sketches[q]["sketch"]),
                ("photo", p_table, int(target[q]), photos[int(target[q])]["photo"]),
            ]
        ):
            x = tf(table[idx])[None].to(device)
            _, att = model.forward_with_attention(x, modality=modality)
            ax = axes[r][c]
            ax.imshow(img.convert("RGB").resize((spec["image_size"],) * 2))
            att = torch.nn.functional.interpolate(
                att.float().cpu(), size=(spec["image_size"],) * 2, mode="bilinear"
            )
            ax.imshow(att[0, 0].numpy(), cmap="jet", alpha=0.45)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(modality, fontsize=9)
    fig.suptitle(f"attention: {label}", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _csv(value: str | None, cast=str):
    return [cast(v) for v in value.split(",") if v] if value else None


def main(argv: Sequence[str] | None = None, *, clip_factory: ClipFactory | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="benchmark config (YAML/TOML/JSON)")
    p.add_argument("--data-dir", default=None, help="folder with chairv2/, qmul_v1/ (default: $FGSBIR_DATA)")
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS), help="where cells, tables and plots go")
    p.add_argument("--runs-dir", default=str(REPO / "runs" / "accuracy"), help="training run folders")
    p.add_argument("--device", default="auto")
    p.add_argument("--methods", default=None, help="comma-separated subset of the config's methods")
    p.add_argument("--datasets", default=None, help="comma-separated subset of the config's datasets")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="override train.epochs (quick checks only: use a separate --results-dir, since finished cells are skipped whatever their epochs)",
    )
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument("--clip-pretrained", default=None, help="'openai' or a local open_clip checkpoint file")
    p.add_argument("--aggregate-only", action="store_true", help="only rebuild the table and plots")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    bench = load_benchmark_config(args.config)
    if args.epochs is not None:
        bench["train"]["epochs"] = args.epochs
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise FileNotFoundError(
            f"--data-dir {args.data_dir} does not exist; point it at the folder with chairv2/ and qmul_v1/."
        )
    reason = None
    if clip_factory is None:
        clip_factory, reason = clip_factory_from_args(args.clip_model, args.clip_pretrained)
    bench["_clip"] = {"model": args.clip_model, "pretrained": args.clip_pretrained} if clip_factory else None
    command = " ".join(
        shlex.quote(a)
        for a in ["python", "benchmarks/accuracy.py", *(argv if argv is not None else sys.argv[1:])]
    )
    kwargs = dict(
        results_dir=Path(args.results_dir),
        runs_dir=Path(args.runs_dir),
        data_dir=args.data_dir,
        device=args.device,
        clip_factory=clip_factory,
        clip_reason=reason,
        methods=_csv(args.methods),
        datasets=_csv(args.datasets),
        seeds=_csv(args.seeds, int),
        command=command,
        plots=not args.no_plots,
    )
    if args.aggregate_only:
        methods = kwargs["methods"] or list(bench["methods"])
        datasets = kwargs["datasets"] or list(bench["datasets"])
        seeds = kwargs["seeds"] or bench["seeds"]
        from fgsbir_plugin._common import default_data_dir

        data_dir = args.data_dir or (str(default_data_dir()) if default_data_dir() else None)
        not_run = {
            (d, m): reason or CLIP_NOT_RUN
            for d in datasets
            for m in methods
            if bench["methods"][m]["kind"] == "clip" and clip_factory is None
        }
        for d in datasets:
            if why := dataset_unavailable(d, data_dir):
                not_run.update({(d, m): why for m in methods})
        table = aggregate(bench, kwargs["results_dir"], methods, datasets, seeds, not_run, command=command)
        if kwargs["plots"]:
            make_plots(
                bench,
                kwargs["results_dir"],
                kwargs["runs_dir"],
                methods,
                datasets,
                data_dir,
                args.device,
                clip_factory,
                table,
            )
    else:
        run_benchmark(bench, **kwargs)
    print(f"[accuracy] table: {Path(args.results_dir) / 'accuracy.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
