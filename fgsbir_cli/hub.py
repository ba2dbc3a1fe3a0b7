"""``fgsbir push`` and ``fgsbir push-dataset``: publish a run's model or a converted dataset to the Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import CLIError

# `fgsbir --help` must answer at once: the publishing code (torch, timm, huggingface_hub, datasets) is
# imported by the command functions below when they run.

__all__ = ["register"]

_TOKEN_HELP = "The token comes from HF_TOKEN or `hf auth login` and is never printed."


def _add_publish_options(p: argparse.ArgumentParser, what: str, repo_help: str) -> None:
    """The options of every push (read back by :func:`_publish_args`); ``what`` is "weights" or "data"."""
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help=repo_help)
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument(
        "--revision", metavar="BRANCH", help="branch to push to (created if missing; default main)"
    )
    p.add_argument("--commit-message", metavar="TEXT", help="commit message on the Hub")
    p.add_argument("--license", default="other", help=f"licence of the {what} in the card (default: other)")
    thing = "model" if what == "weights" else "dataset"
    p.add_argument("--overwrite", action="store_true", help=f"push over a {thing} already in the repo")
    p.add_argument(
        "--dry-run",
        type=Path,
        metavar="DIR",
        help="write the folder that would be uploaded to DIR; no network",
    )


def register(subparsers) -> None:
    """Add the ``push`` and ``push-dataset`` sub-commands to the ``fgsbir`` parser."""
    p = subparsers.add_parser(
        "push",
        help="publish a trained model to the Hugging Face Hub",
        description=(
            "Publish the model of a run folder as a timm repo (config.json, model.safetensors, README.md model "
            "card). It loads back with `import fgsbir_plugin; timm.create_model('hf-hub:ORG/NAME', "
            "pretrained=True)`. " + _TOKEN_HELP
        ),
    )
    p.add_argument(
        "--checkpoint", required=True, type=Path, metavar="RUN", help="run folder written by `fgsbir train`"
    )
    _add_publish_options(p, "weights", "Hub repo to publish to")
    p.add_argument(
        "--dataset-repo-id", metavar="ORG/NAME", help="Hub dataset the model was trained on, for the card"
    )
    s = p.add_argument_group(
        "Space",
        "--space publishes a Hugging Face Space instead: the model in model/, a gallery (--index and its photos) "
        "and the search page of `fgsbir app` (app.py, requirements.txt), which runs as a Gradio Space.",
    )
    s.add_argument("--space", action="store_true", help="push the model with the search page as a Space")
    s.add_argument(
        "--index",
        type=Path,
        metavar="GALLERY.index",
        help="gallery index built with the run's model (with --space)",
    )
    s.add_argument(
        "--photos",
        type=Path,
        metavar="DIR",
        help="the gallery's photos (default: the folder the index records)",
    )
    s.add_argument(
        "--space-requirement",
        metavar="SPEC",
        help="the pip line of the Space's requirements.txt (default fgsbir-plugin[app]==<this version>), "
        "e.g. a git+https:// URL of your fork",
    )
    p.set_defaults(func=_push)

    d = subparsers.add_parser(
        "push-dataset",
        help="publish a converted dataset (Parquet with embedded images) to the Hub",
        description=(
            "Publish a dataset as Parquet with the images embedded, in two configurations (sketches, photos), "
            "with a dataset card. Only publish data you have the right to redistribute: most FG-SBIR datasets' "
            "licences do not allow it. " + _TOKEN_HELP
        ),
    )
    d.add_argument("--data", required=True, metavar="NAME", help="dataset name or folder, as for load_fgsbir")
    d.add_argument("--data-dir", type=Path, metavar="DIR", help="folder holding the original dataset files")
    _add_publish_options(d, "data", "Hub dataset repo to publish to")
    d.add_argument("--source", metavar="TEXT", help="where the original data comes from, for the card")
    d.set_defaults(func=_push_dataset)


def _run(fn, **kwargs) -> str:
    from fgsbir_plugin.hub.upload import PublishError

    try:
        return fn(**kwargs)
    except (PublishError, FileExistsError, TypeError) as err:
        raise CLIError(str(err)) from None


def _publish_args(args: argparse.Namespace) -> dict:
    """The options every push takes: where it goes and how the upload is made."""
    keys = ("repo_id", "private", "revision", "commit_message", "overwrite", "license", "dry_run")
    return {k: getattr(args, k) for k in keys}


def _push(args: argparse.Namespace) -> int:
    space_only = {
        "--index": args.index,
        "--photos": args.photos,
        "--space-requirement": args.space_requirement,
    }
    if args.space:
        return _push_space(args)
    given = [name for name, value in space_only.items() if value is not None]
    if given:
        raise CLIError(
            f"{', '.join(given)} go with --space; add --space to publish the search page as a Space."
        )
    from fgsbir_plugin.hub.model import push_model

    result = _run(
        push_model, run=args.checkpoint, dataset_repo_id=args.dataset_repo_id, **_publish_args(args)
    )
    if args.dry_run is not None:
        print(f"wrote the folder for {args.repo_id} to {result} (nothing uploaded)")
    else:
        print(f"pushed {args.checkpoint} to {args.repo_id}: {result}")
    return 0


def _push_space(args: argparse.Namespace) -> int:
    if args.index is None:
        raise CLIError(
            "--space needs --index GALLERY.index, the gallery the page searches: build one with `fgsbir index build "
            "--checkpoint RUN --photos DIR --out GALLERY.index`."
        )
    from fgsbir_plugin.hub.space import push_space

    result = _run(
        push_space,
        run=args.checkpoint,
        index=args.index,
        photos=args.photos,
        dataset_repo_id=args.dataset_repo_id,
        requirement=args.space_requirement,
        **_publish_args(args),
    )
    if args.dry_run is not None:
        print(f"wrote the Space folder for {args.repo_id} to {result} (nothing uploaded)")
    else:
        print(f"pushed {args.checkpoint} and its search page to the Space {args.repo_id}: {result}")
    return 0


def _push_dataset(args: argparse.Namespace) -> int:
    from fgsbir_plugin.hub.dataset import push_dataset

    result = _run(
        push_dataset, name=args.data, data_dir=args.data_dir, source=args.source, **_publish_args(args)
    )
    if args.dry_run is not None:
        print(f"wrote the dataset folder for {args.repo_id} to {result} (nothing uploaded)")
    else:
        print(f"pushed {args.data} to {args.repo_id}: {result}")
    return 0
