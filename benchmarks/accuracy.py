"""Accuracy benchmark: DSSA's ablations against triplet baselines, a zero-shot trunk and CLIP, on FG-SBIR data.

A config (``benchmarks/accuracy_configs/*.yaml``; see the README there) names the methods, datasets and
seeds. Every (dataset, seed, method) cell is trained by ``fgsbir_plugin.train.engine.train`` (the model
chosen on a validation split carved from train by photo, never on test), scored once on the TEST split
with diagnostics (attention lift, branch cosines) from the same pass, and written atomically to
``<results-dir>/<results-name>/<dataset>/<method>/seed<k>.json``. A rerun skips finished cells and
resumes a half-trained one. The cells are then aggregated into ``<results-dir>/<results-name>.json`` and
``.md`` (mean ± std over seeds, the published figures beside, "not run: <reason>" for the rest), acc@K
curves, and per dataset a picture of test sketches with their top-5 photos and attention maps (under
``<runs-dir>/figures/``: it shows dataset images; only synthetic data's goes to the results folder).

The modules: ``accuracy_config`` (the config, datasets), ``accuracy_cells`` (one cell), ``accuracy_scoring``
(the test pass and its diagnostics), ``accuracy_report`` (JSON and Markdown), ``accuracy_figures``.

Usage (repo root):
  python benchmarks/accuracy.py --config benchmarks/accuracy_configs/cpu.yaml        # the CPU protocol
  python benchmarks/accuracy.py --config benchmarks/accuracy_configs/smoke.yaml \\
      --results-dir /tmp/acc --runs-dir /tmp/acc/runs                              # synthetic, < 1 min
  python benchmarks/accuracy.py --config ... --datasets /path/to/my_pairs_folder    # your own data
  python benchmarks/accuracy.py --config ... --aggregate-only                      # tables + figures only
  python benchmarks/accuracy.py --config ... --results-name accuracy_cpu_seeds --table given --no-plots \
      --methods triplet,attention,attention_fusion,dssa_full,triplet_holef,triplet_l2,triplet_full_trunk,\\
triplet_sn,triplet_mlp,attention_sn,pretrained_zero_shot --seeds 0,1,2,3,4,5,6,7,8,9  # ten seeds

Beside the rows, the tables pair ``dssa_full`` with every row, and each ablation step of the config's
``steps`` (a child against its parent), query by query on the same test split (``accuracy_report``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accuracy_cells import ClipFactory, Harness, read_cell, run_cell, stale_cell
from accuracy_config import (
    DEFAULT_CONFIG,
    DEFAULT_RESULTS,
    REPO,
    DatasetRef,
    dataset_ref,
    dataset_unavailable,
    load_benchmark_config,
    results_name_for,
)
from accuracy_figures import make_figures
from accuracy_report import collect_rows, paired_differences, paired_steps, validation_acc1, write_tables

CLIP_NOT_RUN = "weights unavailable offline"


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


def not_run_reasons(h: Harness, refs: list[DatasetRef], methods: list[str], clip_reason: str | None) -> dict:
    """(dataset, method) -> why that row cannot run here."""
    reasons = {}
    for ref in refs:
        why = dataset_unavailable(ref)
        for name in methods:
            if why:
                reasons[(ref.name, name)] = why
            elif h.bench["methods"][name]["kind"] == "clip" and h.clip_factory is None:
                reasons[(ref.name, name)] = clip_reason or CLIP_NOT_RUN
    return reasons


def stale_cells(h: Harness, refs: list[DatasetRef], methods: list[str], seeds: list[int]) -> list[Path]:
    """The finished cells of the grid made with settings other than the config's now."""
    stale = []
    for ref in refs:
        for name in methods:
            for seed in seeds:
                rec = read_cell(h.cell_path(ref.name, name, seed))
                if rec is not None and stale_cell(h, ref, name, seed, rec):
                    stale.append(h.cell_path(ref.name, name, seed))
    return stale


def run_grid(
    h: Harness,
    refs: list[DatasetRef],
    methods: list[str],
    seeds: list[int],
    not_run: dict,
    log: Callable[[str], None] = print,
    log_split: str = "test",
) -> tuple[list, list]:
    """Run every missing cell, dataset by dataset and seed by seed; returns (ran, skipped).

    Each finished cell is logged with its test figures, or with ``log_split="validation"`` with the
    validation acc@1 its model was chosen by and no test figure (what a sweep on validation shows)."""
    ran, skipped = [], []
    for ref in refs:
        for seed in seeds:
            for name in methods:
                cell = (ref.name, name, seed)
                if (ref.name, name) in not_run:
                    continue
                if read_cell(h.cell_path(*cell)) is not None:
                    skipped.append(cell)
                    continue
                log(f"[accuracy] {ref.name}/{name}/seed{seed}: running")
                rec = run_cell(h, ref, name, seed)
                ran.append(cell)
                log(
                    f"[accuracy] {ref.name}/{name}/seed{seed}: {_cell_figures(rec, log_split)} ({rec['wall_s']:.0f} s)"
                )
    if skipped:
        log(f"[accuracy] {len(skipped)} cells done earlier, skipped")
    for (dataset, name), why in sorted(not_run.items()):
        log(f"[accuracy] {dataset}/{name}: not run: {why}")
    return ran, skipped


def _cell_figures(rec: dict, split: str) -> str:
    if split == "test":
        m = rec["metrics"]
        return f"test acc@1 {m['acc@1']:.2f} acc@10 {m['acc@10']:.2f}"
    if validation_acc1(rec) is None:
        return "no validation figure (nothing chosen on validation)"
    sel = rec["selection"]
    acc1, acc10 = sel["best_val_acc1_acc10"]
    return f"validation acc@1 {acc1:.2f} acc@10 {acc10:.2f} (step {sel.get('best_step')})"


def run_benchmark(
    h: Harness,
    refs: list[DatasetRef],
    methods: list[str],
    seeds: list[int],
    *,
    table_grid: tuple[list[DatasetRef], list[str], list[int]] | None = None,
    clip_reason: str | None = CLIP_NOT_RUN,
    aggregate_only: bool = False,
    plots: bool = True,
    log: Callable[[str], None] = print,
    log_split: str = "test",
    tables: bool = True,
) -> dict[str, Any]:
    """Run the missing cells of ``refs`` x ``methods`` x ``seeds`` (unless ``aggregate_only``), then write
    the tables and figures of ``table_grid`` (default: the same grid; none when not ``tables``); returns
    ``{"ran", "skipped", "not_run", "table", "figures"}``."""
    t0 = time.perf_counter()
    t_refs, t_methods, t_seeds = table_grid or (refs, methods, seeds)
    stale = stale_cells(h, t_refs, t_methods, t_seeds)
    if stale:
        raise ValueError(
            f"{len(stale)} finished cells were made with settings other than the config's now "
            f"(e.g. {stale[0]}); delete them and their run folders under {h.runs_dir}, or pass another "
            "--results-name."
        )
    not_run = not_run_reasons(h, t_refs, t_methods, clip_reason)
    ran, skipped = ([], []) if aggregate_only else run_grid(h, refs, methods, seeds, not_run, log, log_split)
    if not tables:
        return {"ran": ran, "skipped": skipped, "not_run": not_run, "table": None, "figures": []}
    rows = collect_rows(h.bench, h.cell_path, t_refs, t_methods, t_seeds, not_run)
    figures = make_figures(h, t_refs, rows) if plots else []
    invocation = {
        "command": h.command,
        "aggregate_only": aggregate_only,
        "wall_s": round(time.perf_counter() - t0, 2),
        "ran": len(ran),
        "skipped": len(skipped),
    }
    paired = paired_differences(h.cell_path, t_refs, t_methods, t_seeds)
    steps = paired_steps(h.cell_path, t_refs, t_methods, t_seeds, h.bench.get("steps", []))
    table = write_tables(h.results_dir, h.results_name, h.bench, refs, rows, invocation, paired, steps)
    return {"ran": ran, "skipped": skipped, "not_run": not_run, "table": table, "figures": figures}


def _csv(value: str | None, cast=str):
    return [cast(v) for v in value.split(",") if v] if value else None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="benchmark config (YAML/TOML/JSON)")
    p.add_argument("--results-name", default=None, help="names the tables (default: accuracy_<config stem>)")
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS), help="where cells, tables and curves go")
    p.add_argument("--runs-dir", default=None, help="training run folders (default: runs/<results-name>)")
    p.add_argument("--data-dir", default=None, help="folder with chairv2/, qmul_v1/ (default: $FGSBIR_DATA)")
    p.add_argument(
        "--device", default=None, help="cpu, cuda, auto (default: the config's train.device, else auto)"
    )
    p.add_argument("--methods", default=None, help="comma-separated subset of the config's methods")
    p.add_argument("--datasets", default=None, help="comma-separated dataset names or dataset folders")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's)")
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument("--clip-pretrained", default=None, help="'openai' or a local open_clip checkpoint file")
    p.add_argument("--aggregate-only", action="store_true", help="only rebuild the tables and figures")
    p.add_argument("--no-plots", action="store_true", help="no curves and no retrieval pictures")
    p.add_argument(
        "--log-split",
        choices=("test", "validation"),
        default="test",
        help="which figures each finished cell prints: its test scores, or the validation acc@1 its model "
        "was chosen by and no test figure (a sweep that must choose on validation passes this)",
    )
    p.add_argument(
        "--table",
        choices=("config", "given", "none"),
        default="config",
        help="what the tables cover: the whole config plus what --datasets / --seeds add (config), or only "
        "the methods, datasets and seeds given (given; name the tables with --results-name); none writes "
        "no tables or figures, only the cells (a sweep that must not show test figures passes this)",
    )
    return p


def main(argv: Sequence[str] | None = None, *, clip_factory: ClipFactory | None = None) -> int:
    from fgsbir_plugin._common import default_data_dir

    args = _parser().parse_args(argv)
    bench = load_benchmark_config(args.config)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise FileNotFoundError(
            f"--data-dir {args.data_dir} does not exist; point it at the folder with chairv2/ and qmul_v1/."
        )
    data_dir = args.data_dir or (str(default_data_dir()) if default_data_dir() else None)
    methods = _csv(args.methods) or list(bench["methods"])
    unknown = [m for m in methods if m not in bench["methods"]]
    if unknown:
        raise ValueError(f"methods {unknown} are not in {args.config}; it has {', '.join(bench['methods'])}.")
    config_refs = [dataset_ref(d, bench, data_dir) for d in bench["datasets"]]
    refs = [dataset_ref(d, bench, data_dir) for d in _csv(args.datasets)] if args.datasets else config_refs
    config_seeds = [int(s) for s in bench["seeds"]]
    seeds = _csv(args.seeds, int) or config_seeds
    if args.table == "none":
        table_grid = (refs, methods, seeds)
    elif args.table == "given":
        if args.results_name in (None, results_name_for(args.config)):
            raise ValueError(
                "--table given writes tables of part of the config; give them a --results-name of their own "
                "so that the config's tables are not overwritten."
            )
        table_grid = (refs, methods, seeds)
    else:
        # The tables cover the whole config, and whatever --datasets / --seeds add; those only choose what
        # runs.
        table_refs = config_refs + [r for r in refs if r.name not in {c.name for c in config_refs}]
        table_grid = (
            table_refs,
            list(bench["methods"]),
            config_seeds + [s for s in seeds if s not in config_seeds],
        )
    reason = None
    if clip_factory is None:
        clip_factory, reason = clip_factory_from_args(args.clip_model, args.clip_pretrained)
    name = args.results_name or results_name_for(args.config)
    given = list(argv) if argv is not None else sys.argv[1:]
    h = Harness(
        bench=bench,
        results_dir=Path(args.results_dir),
        results_name=name,
        runs_dir=Path(args.runs_dir) if args.runs_dir else REPO / "runs" / name,
        device=args.device or bench["train"].get("device", "auto"),
        clip_factory=clip_factory,
        clip_info={"model": args.clip_model, "pretrained": args.clip_pretrained} if clip_factory else None,
        command=" ".join(shlex.quote(a) for a in ["python", "benchmarks/accuracy.py", *given]),
    )
    run_benchmark(
        h,
        refs,
        methods,
        seeds,
        table_grid=table_grid,
        clip_reason=reason,
        aggregate_only=args.aggregate_only,
        plots=not args.no_plots,
        log_split=args.log_split,
        tables=args.table != "none",
    )
    if args.table != "none":
        print(f"[accuracy] table: {h.results_dir / (name + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
