"""``fgsbir train``, ``fgsbir eval``, ``fgsbir embed`` and ``fgsbir demo``."""

from __future__ import annotations

import argparse
import json
from typing import Any

# `fgsbir --help` must answer at once, so nothing from fgsbir_plugin (whose import loads torch and timm)
# is imported here: each command function imports its implementation when it runs. The choices are
# restated from fgsbir_plugin.train.config; tests/test_cli_startup.py checks that they agree.
LOSSES = ("triplet", "triplet_l2", "holef")
MINERS = ("none", "batch-hard", "semi-hard")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
CACHE_MODES = ("auto", "yes", "no")
BATCH_GROUPS = ("none", "annotated")

__all__ = ["register", "config_from_args", "train_command", "eval_command", "embed_command", "demo_command"]

S = argparse.SUPPRESS  # an option left out stays out, so the config file's value (or the default) holds


def _json_mapping(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({err.msg}); write e.g. '{{\"shared\": false}}'"
        ) from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object such as '{\"shared\": false}'")
    return value


def _bool(parser_group, flag: str, dest: str, help_on: str) -> None:
    parser_group.add_argument(flag, dest=dest, action="store_true", default=S, help=help_on)
    parser_group.add_argument(
        f"--no-{flag[2:]}", dest=dest, action="store_false", default=S, help=argparse.SUPPRESS
    )


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=S,
        help="dataset name (chairv2, shoev2, shoes_v1, chairs_v1, sketchy, synthetic) or folder",
    )
    g.add_argument(
        "--data-dir", dest="data_dir", default=S, help="folder holding the dataset (default: $FGSBIR_DATA)"
    )
    g.add_argument(
        "--data-kwargs", dest="data_kwargs", type=_json_mapping, default=S, help="JSON reader options"
    )
    g.add_argument(
        "--validation-size",
        dest="validation_size",
        type=float,
        default=S,
        help="fraction of train photos held out for validation (default 0.1; 0 = none)",
    )
    g.add_argument(
        "--out", default=S, help="run folder to write (model/, state/, log.jsonl, run_config.json)"
    )


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and loss")
    g.add_argument("--model", default=S, help="timm model name (default dssa)")
    g.add_argument(
        "--model-kwargs",
        dest="model_kwargs",
        type=_json_mapping,
        default=S,
        help="JSON keyword arguments for timm.create_model, e.g. '{\"shared\": false}'",
    )
    _bool(g, "--pretrained", "pretrained", "start from the model's pretrained weights")
    g.add_argument(
        "--loss",
        choices=LOSSES,
        default=S,
        help="triplet (squared Euclidean, HOLEF with W = I), triplet_l2 (Euclidean) or holef "
        "(default triplet)",
    )
    g.add_argument("--margin", type=float, default=S, help="triplet margin (default 0.2)")
    g.add_argument(
        "--holef-lambda", dest="holef_lambda", type=float, default=S, help="HOLEF regulariser weight"
    )
    g.add_argument(
        "--miner", choices=MINERS, default=S, help="triplet mining within the batch (default none: all)"
    )


def _add_optimisation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=S, help="passes over the train sketches (default 10)")
    g.add_argument(
        "--max-steps", dest="max_steps", type=int, default=S, help="optimiser steps (overrides --epochs)"
    )
    g.add_argument(
        "--batch-size",
        dest="batch_size",
        type=int,
        default=S,
        help="sketches per batch per process (default 32)",
    )
    g.add_argument(
        "--k-per-photo",
        dest="k_per_photo",
        type=int,
        default=S,
        help="sketches per photo in a batch (default 1)",
    )
    g.add_argument(
        "--batch-groups",
        dest="batch_groups",
        choices=BATCH_GROUPS,
        default=S,
        help="none (default): a batch's photos at random; annotated: in sets of --group-size look-alikes "
        "from the human annotations (shoes_v1, chairs_v1), so more in-batch negatives are look-alikes",
    )
    g.add_argument(
        "--group-size",
        dest="group_size",
        type=int,
        default=S,
        help="photos per set of look-alikes with --batch-groups annotated (default 4)",
    )
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=S, help="default adamw")
    g.add_argument("--lr", type=float, default=S, help="learning rate of the head (default 1e-4)")
    g.add_argument(
        "--trunk-lr",
        dest="trunk_lr",
        type=float,
        default=S,
        help="learning rate of the trunk (default: --lr)",
    )
    g.add_argument(
        "--distance-lr",
        dest="distance_lr",
        type=float,
        default=S,
        help="learning rate of a learned distance such as HOLEF W (default: --lr)",
    )
    g.add_argument("--weight-decay", dest="weight_decay", type=float, default=S, help="default 0.01")
    g.add_argument("--momentum", type=float, default=S, help="SGD momentum (default 0.9)")
    g.add_argument("--schedule", choices=SCHEDULES, default=S, help="learning-rate schedule (default cosine)")
    g.add_argument(
        "--warmup-steps", dest="warmup_steps", type=int, default=S, help="linear warm-up steps (default 0)"
    )
    g.add_argument("--grad-clip", dest="grad_clip", type=float, default=S, help="clip the gradient norm")
    g.add_argument(
        "--freeze",
        default=S,
        help="freeze the trunk ('trunk') or its stem and blocks[:K] ('trunk.blocks.K'); their outputs are "
        "computed once per image and view and cached, and only the rest trains",
    )
    g.add_argument(
        "--cache-views",
        dest="cache_views",
        type=int,
        default=S,
        help="augmented views cached per training image with --freeze (default 6)",
    )
    g.add_argument(
        "--grad-accum", dest="grad_accum", type=int, default=S, help="micro-batches per step (default 1)"
    )
    g.add_argument(
        "--eval-every",
        dest="eval_every",
        type=int,
        default=S,
        help="validate (and keep the best model) every N steps and at the last one, not every epoch",
    )
    g.add_argument(
        "--early-stop",
        dest="early_stop",
        type=int,
        default=S,
        help="stop after this many validations without improvement",
    )


def _add_input_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input")
    g.add_argument(
        "--image-size", dest="image_size", type=int, default=S, help="input side in pixels (default: model's)"
    )
    g.add_argument("--hflip", type=float, default=S, help="horizontal flip probability (default 0.5)")
    g.add_argument(
        "--stroke-jitter",
        dest="stroke_jitter",
        type=float,
        default=S,
        help="probability of thickening sketch strokes (default 0)",
    )
    g.add_argument("--workers", type=int, default=S, help="DataLoader worker processes (default 0)")
    g.add_argument(
        "--cache",
        choices=CACHE_MODES,
        default=S,
        help="decode images once and keep them in memory (auto: when under --cache-limit-mb)",
    )
    g.add_argument("--cache-limit-mb", dest="cache_limit_mb", type=float, default=S, help="default 2048")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=S, help="default 0")
    g.add_argument("--device", default=S, help="auto, cpu, cuda, cuda:1 (default auto)")
    g.add_argument("--precision", choices=PRECISIONS, default=S, help="autocast precision (default fp32)")
    _bool(g, "--channels-last", "channels_last", "use the channels_last memory format")
    _bool(g, "--compile", "compile", "torch.compile the model")
    g.add_argument(
        "--eval-batch-size",
        dest="eval_batch_size",
        type=int,
        default=S,
        help="images per forward pass when validating and computing cached views (default 64)",
    )
    g.add_argument(
        "--save-every",
        dest="save_every",
        type=int,
        default=S,
        help="write the resumable state every N steps (default 50; also every epoch)",
    )
    g.add_argument("--log-every", dest="log_every", type=int, default=S, help="default 10 steps")
    _bool(g, "--log-csv", "log_csv", "also write log.csv")
    _bool(g, "--tensorboard", "tensorboard", "also log to TensorBoard (when installed)")
    _bool(g, "--progress", "progress", "show a progress bar (default on; --no-progress hides it)")
    g.add_argument(
        "--stop-after-steps",
        dest="stop_after_steps",
        type=int,
        default=S,
        help="save the state and exit after N steps, as if interrupted (resume later)",
    )
    _bool(g, "--resume", "resume", "continue the run in --out from its saved state")


def _add_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model (DSSA or any timm model) on a sketch/photo dataset",
        description="Train on the train split; validate on a part of it carved out by photo; keep the best model. "
        "Options not given come from --config FILE (YAML, TOML or JSON), else the defaults shown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--config",
        dest="config_file",
        default=None,
        help="YAML, TOML or JSON file of options (flags override it)",
    )
    _add_data_options(p)
    _add_model_options(p)
    _add_optimisation_options(p)
    _add_input_options(p)
    _add_run_options(p)
    p.set_defaults(func=train_command)


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` of a parsed ``fgsbir train`` command: defaults < --config file < flags."""
    from fgsbir_plugin.train.config import load_config_file, merge_config

    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config_file")}
    file_values = load_config_file(args.config_file) if args.config_file else None
    return merge_config(file_values, flags).validate()


def train_command(args: argparse.Namespace) -> int:
    from fgsbir_plugin.train.engine import train

    summary = train(config_from_args(args))
    if summary["stopped"]:
        print(
            f"stopped after step {summary['step']}; continue with: fgsbir train --out {summary['out']} --resume"
        )
    else:
        best = summary["best"]
        extra = f"; best validation acc@1 {best[0]:.2f}, acc@10 {best[1]:.2f}" if best else ""
        print(f"trained {summary['step']} steps; model in {summary['out']}/model{extra}")
    return 0


def _add_eval(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a trained model on a split (acc@K, mAP, ranks)")
    p.add_argument("--checkpoint", required=True, help="run folder (or its model/ folder)")
    p.add_argument("--data", required=True, help="dataset name or folder")
    p.add_argument("--data-dir", dest="data_dir", default=None)
    p.add_argument(
        "--data-kwargs",
        dest="data_kwargs",
        type=_json_mapping,
        default=None,
        help="JSON reader options (default: the run's own when --data is the dataset it was trained on)",
    )
    p.add_argument(
        "--split",
        default="test",
        help="split to score (default test); validation: the one the run carved from train to choose its model",
    )
    p.add_argument(
        "--views", type=int, choices=(1, 10), default=1, help="1 centre crop, or the 10 views averaged"
    )
    p.add_argument(
        "--image-size", dest="image_size", type=int, default=None, help="default: the trained size"
    )
    p.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="report path (default <checkpoint>/eval_<split>.json)")
    p.set_defaults(func=eval_command)


def eval_command(args: argparse.Namespace) -> int:
    from fgsbir_plugin.train.evaluate import run_eval

    report = run_eval(
        args.checkpoint,
        args.data,
        split=args.split,
        data_dir=args.data_dir,
        data_kwargs=args.data_kwargs,
        views=args.views,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=args.device,
        out=args.out,
    )
    m = report["metrics"]
    print(
        f"{report['model_name']} on {report['dataset']}/{report['split']} "
        f"({report['num_queries']} sketches, {report['num_gallery']} photos, {args.views} view(s))"
    )
    print("| acc@1 | acc@5 | acc@10 | mAP | mean rank | median rank |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {m['acc@1']:.2f} | {m['acc@5']:.2f} | {m['acc@10']:.2f} | {m['mAP']:.2f} | "
        f"{m['mean_rank']:.2f} | {m['median_rank']:.1f} |"
    )
    print(f"report: {report['path']}")
    return 0


def _add_embed(subparsers) -> None:
    p = subparsers.add_parser(
        "embed", help="write the embeddings of a folder of images to a safetensors file"
    )
    p.add_argument("--checkpoint", required=True, help="run folder (or its model/ folder)")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--modality", choices=("sketch", "photo"), default="photo")
    p.add_argument("--views", type=int, choices=(1, 10), default=1)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=embed_command)


def embed_command(args: argparse.Namespace) -> int:
    from fgsbir_plugin.train.embed import embed_folder

    info = embed_folder(
        args.checkpoint,
        args.images,
        args.out,
        modality=args.modality,
        views=args.views,
        batch_size=args.batch_size,
        device=args.device,
        progress=True,
    )
    print(f"wrote {info['num_images']} {args.modality} embeddings of dimension {info['dim']} to {args.out}")
    return 0


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train DSSA and the triplet baseline on synthetic data on CPU, compare, and draw retrievals",
    )
    p.add_argument("--out", default="fgsbir_demo", help="folder for the two runs, the table and the picture")
    p.add_argument(
        "--steps", type=int, default=None, help="training steps per model (default 200; 100 with --quick)"
    )
    p.add_argument(
        "--quick", action="store_true", help="60 photos at 144 px: about a minute (the CI smoke run)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from fgsbir_plugin.train.demo import run_demo

    result = run_demo(
        args.out,
        steps=args.steps,
        quick=args.quick,
        device=args.device,
        seed=args.seed,
        progress=args.progress,
    )
    print(result["table"])
    print(f"results: {result['json']}; picture: {result['figure']}")
    return 0


def register(subparsers) -> None:
    """Add ``train``, ``eval``, ``embed`` and ``demo`` to the ``fgsbir`` parser."""
    _add_train(subparsers)
    _add_eval(subparsers)
    _add_embed(subparsers)
    _add_demo(subparsers)
