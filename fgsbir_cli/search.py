"""``fgsbir index build`` and ``fgsbir search``: embed a photo folder into a gallery index, query it with a sketch.

An index built here records the run or model folder and the photo folder it was built from (in its
header's ``extra``), so ``fgsbir search INDEX SKETCH`` finds the model by itself, and
``fgsbir index build --out INDEX`` with nothing else rebuilds an index from the same model and
photos with the same settings. ``--checkpoint`` overrides the recorded folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# `fgsbir --help` must answer at once, so nothing from fgsbir_plugin (whose import loads torch and timm),
# faiss or PIL is imported here: the command functions below import what they use. The choices and
# defaults are restated from fgsbir_plugin.search.faiss_params; tests/test_cli_startup.py checks
# that they agree.

__all__ = ["register", "run_build", "run_search", "write_contact_sheet"]

DEFAULT_METRIC = "auto"
METRICS = ("cosine", "l2", "holef")
DEFAULT_EF_SEARCH = 128
DEFAULT_NPROBE = 16
DEFAULT_SPEC = "Flat"
_MODEL = "run or model folder"


def register(subparsers) -> None:
    index = subparsers.add_parser("index", help="build a searchable gallery index from a folder of photos")
    index_sub = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    _add_build(index_sub)
    _add_search(subparsers)


def _add_build(index_sub) -> None:
    build = index_sub.add_parser(
        "build",
        help="embed every photo under a folder and write a gallery index file",
        description="Embed every image under --photos with the model and write one gallery index file. "
        "When --out names an index already, options left out come from it: its model and photo folder, "
        "and, when the model comes from it too, its metric, spec and search parameters (a rebuild).",
    )
    build.add_argument("--checkpoint", type=Path, help="a run folder (uses its model/) or a model folder")
    build.add_argument("--photos", type=Path, help="folder of photos, searched recursively")
    build.add_argument("--out", required=True, type=Path, help="index file to write, e.g. gallery.index")
    build.add_argument(
        "--metric",
        choices=(DEFAULT_METRIC, *METRICS),
        help=f"default {DEFAULT_METRIC}: holef when the model has a learned HOLEF distance, else cosine",
    )
    build.add_argument(
        "--spec",
        help=f"faiss index_factory spec: Flat (exact), HNSW32, IVF1024,Flat, ... (default {DEFAULT_SPEC})",
    )
    build.add_argument("--batch-size", type=int, default=64)
    build.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1, ...")
    _add_search_param_args(build)
    build.set_defaults(func=run_build)


def _add_search(subparsers) -> None:
    search = subparsers.add_parser(
        "search",
        help="find the photos closest to a sketch in a gallery index",
        description="Embed a sketch with the model the index was built with and print the k closest "
        "photos of the index, closest first.",
    )
    search.add_argument(
        "index", nargs="?", type=Path, metavar="INDEX", help="file written by `fgsbir index build`"
    )
    search.add_argument("sketch", nargs="?", type=Path, metavar="SKETCH", help="sketch image")
    search.add_argument("-k", type=int, default=10, help="number of photos to return (default 10)")
    search.add_argument(
        "--checkpoint",
        type=Path,
        help="the run or model folder to embed the sketch with (default: the one the index records)",
    )
    search.add_argument(
        "--contact-sheet", type=Path, help="also write the sketch and its top-k photos to this PNG"
    )
    search.add_argument("--device", default="auto")
    # The flag spelling of INDEX and SKETCH, which scripts and the README use.
    search.add_argument("--index", dest="index_flag", type=Path, metavar="INDEX", help="same as INDEX")
    search.add_argument("--sketch", dest="sketch_flag", type=Path, metavar="SKETCH", help="same as SKETCH")
    _add_search_param_args(search)
    search.set_defaults(func=run_search)


def _add_search_param_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ef-search",
        type=int,
        help=f"HNSW specs: candidates explored per query (default {DEFAULT_EF_SEARCH})",
    )
    parser.add_argument(
        "--nprobe", type=int, help=f"IVF specs: lists visited per query (default {DEFAULT_NPROBE})"
    )


def _search_params(args: argparse.Namespace) -> dict[str, int]:
    params = {"efSearch": args.ef_search, "nprobe": args.nprobe}
    return {k: v for k, v in params.items() if v is not None}


# -- what an index records ------------------------------------------------------------------------


def _recorded_folder(index_path: Path, header: dict[str, Any], key: str, option: str, what: str) -> Path:
    """The folder ``extra[key]`` of an index header; a one-sentence error when it is missing or gone."""
    recorded = header.get("extra", {}).get(key)
    if not recorded:
        raise ValueError(f"{index_path} does not record the {what} it was built from; pass {option}.")
    folder = Path(recorded)  # a relative path is taken from the working directory
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{index_path} was built from {folder}, which is no longer there; "
            f"pass {option} with the folder's new location."
        )
    return folder


def _build_settings(args: argparse.Namespace) -> dict[str, Any]:
    """checkpoint, photos, metric, spec and search params of `index build`: the options given, then
    what the index at ``--out`` records, then the defaults."""
    settings = {
        "checkpoint": args.checkpoint,
        "photos": args.photos,
        "metric": args.metric,
        "spec": args.spec,
        "params": _search_params(args),
    }
    if args.checkpoint is None or args.photos is None:
        if not args.out.is_file():
            raise ValueError(
                f"pass --checkpoint and --photos: there is no index at {args.out} to take them from."
            )
        from fgsbir_plugin.search.index import GalleryIndex

        header = GalleryIndex.read_header(args.out)
        if args.photos is None:
            settings["photos"] = _recorded_folder(args.out, header, "photos_root", "--photos", "photo folder")
        if args.checkpoint is None:
            settings["checkpoint"] = _recorded_folder(args.out, header, "checkpoint", "--checkpoint", _MODEL)
            settings["metric"] = args.metric or header["metric"]
            if args.spec is None:
                settings["spec"] = header["spec"]
                settings["params"] = {**header["search_params"], **settings["params"]}
    settings["metric"] = settings["metric"] or DEFAULT_METRIC
    settings["spec"] = settings["spec"] or DEFAULT_SPEC
    return settings


def _search_inputs(args: argparse.Namespace) -> tuple[Path, Path]:
    """(index file, sketch file) from the positional arguments or their flag spelling."""
    paths = []
    for name in ("index", "sketch"):
        positional, flag = getattr(args, name), getattr(args, f"{name}_flag")
        if positional is not None and flag is not None and positional != flag:
            raise ValueError(f"give the {name} once: {positional} and --{name} {flag} differ.")
        if positional is None and flag is None:
            raise ValueError(f"search needs the {name}: fgsbir search INDEX SKETCH [-k K].")
        paths.append(positional or flag)
    return paths[0], paths[1]


# -- commands -------------------------------------------------------------------------------------


def _load(checkpoint: Path, device):
    """(model in eval mode, its HOLEF matrix ``[d, d]`` or None) of a run or model folder."""
    from fgsbir_plugin.model_io import load_model
    from fgsbir_plugin.run_folder import RunFolder

    run, model_dir = RunFolder.resolve(checkpoint)
    model = load_model(model_dir, device=device)
    distance = run.load_distance(model)
    if distance is None or not hasattr(distance, "weight_matrix"):
        return model, None
    return model, distance.weight_matrix().detach()


def run_build(args: argparse.Namespace) -> int:
    from fgsbir_plugin.embedding import embed_files, embedding_dim, list_images
    from fgsbir_plugin.runtime import resolve_device
    from fgsbir_plugin.search.index import GalleryIndex

    settings = _build_settings(args)
    checkpoint, metric = settings["checkpoint"], settings["metric"]
    device = resolve_device(args.device)
    model, W = _load(checkpoint, device)
    if metric == "auto":
        metric = "holef" if W is not None else "cosine"
    if metric == "holef" and W is None:
        raise ValueError(
            f"metric holef needs a model with a learned HOLEF distance, and {checkpoint} has none; "
            "use --metric cosine or l2."
        )
    paths = list_images(settings["photos"])
    root = settings["photos"].resolve()
    # Built empty before the photos are embedded, so a spec or parameter faiss refuses fails at once.
    index = GalleryIndex(
        embedding_dim(model),
        metric,
        W=W if metric == "holef" else None,
        spec=settings["spec"],
        model=model,
        **settings["params"],
    )
    emb = embed_files(model, paths, "photo", batch_size=args.batch_size, device=device, progress=True).numpy()
    if not index.is_trained:
        index.train(emb)
    index.add(emb, [p.relative_to(settings["photos"]).as_posix() for p in paths])
    index.save(args.out, extra={"photos_root": str(root), "checkpoint": str(checkpoint.resolve())})
    print(f"wrote {args.out}: {len(index)} photos, metric {metric}, spec {index.spec}, dim {index.dim}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    index_path, sketch = _search_inputs(args)
    if args.k < 1:
        raise ValueError(f"-k must be positive, got {args.k}.")
    from fgsbir_plugin.embedding import embed_files
    from fgsbir_plugin.runtime import resolve_device
    from fgsbir_plugin.search.index import GalleryIndex

    header = GalleryIndex.read_header(index_path)
    checkpoint = args.checkpoint or _recorded_folder(index_path, header, "checkpoint", "--checkpoint", _MODEL)
    if args.contact_sheet:
        _check_png(args.contact_sheet)
    if sketch.is_dir():
        raise IsADirectoryError(f"sketch {sketch} is a folder; pass one sketch image file.")
    if not sketch.is_file():
        raise FileNotFoundError(f"sketch {sketch} does not exist.")
    device = resolve_device(args.device)
    model, W = _load(checkpoint, device)
    if header["metric"] != "holef":
        W = None
    elif W is None:
        raise ValueError(
            f"{index_path} uses the HOLEF metric but {checkpoint} has no learned HOLEF distance; "
            "pass the checkpoint the index was built with."
        )
    index = GalleryIndex.load(index_path, expect={"model": model, "W": W})
    if _search_params(args):
        index.set_search_params(**_search_params(args))
    query = embed_files(model, [sketch], "sketch", batch_size=1, device=device).numpy()
    dist, ids = index.search(query, min(args.k, max(len(index), 1)))
    root = Path(index.extra.get("photos_root", "."))
    results = [(root / str(i), float(d)) for i, d in zip(ids[0], dist[0]) if i is not None and i != -1]
    print(f"# rank\tdistance ({index.metric})\tphoto")
    for rank, (path, d) in enumerate(results, 1):
        print(f"{rank}\t{d:.6g}\t{path}")
    if args.contact_sheet:
        write_contact_sheet(sketch, results, args.contact_sheet)
        print(f"wrote {args.contact_sheet}")
    return 0


# -- contact sheet --------------------------------------------------------------------------------


def _load_image(path: Path, mode: str):
    from fgsbir_plugin.data.validate import load_image

    return load_image(path).convert(mode)  # a damaged or oversized file is one sentence naming it


def _check_png(out: Path) -> None:
    if Path(out).suffix.lower() != ".png":
        raise ValueError(f"contact sheet {out} must end in .png: the sheet is written as a PNG.")


def _fit(draw, text: str, width: int) -> str:
    """``text``, its start cut to ``...`` until it fits in ``width`` pixels (a file name's end tells it apart)."""
    if draw.textlength(text) <= width:
        return text
    while len(text) > 1 and draw.textlength("..." + text) > width:
        text = text[1:]
    return "..." + text


def write_contact_sheet(sketch: Path, results: list[tuple[Path, float]], out: Path, thumb: int = 160) -> Path:
    """One PNG row: the sketch, then each result photo with its rank, distance and file name under it."""
    _check_png(out)
    from PIL import Image, ImageDraw

    from fgsbir_plugin._common import atomic_path

    line_h = 14
    sheet = Image.new("RGB", ((len(results) + 1) * (thumb + 8) + 8, thumb + 2 * line_h + 20), "white")
    draw = ImageDraw.Draw(sheet)
    tiles = [(sketch, "sketch")] + [(p, f"#{i} {d:.4g}") for i, (p, d) in enumerate(results, 1)]
    for col, (path, caption) in enumerate(tiles):
        im = _load_image(path, "RGB")
        im.thumbnail((thumb, thumb))
        x = 8 + col * (thumb + 8)
        sheet.paste(im, (x + (thumb - im.width) // 2, 8 + (thumb - im.height) // 2))
        colour = (200, 0, 0) if col == 0 else (0, 0, 0)
        for line, text in enumerate((caption, _fit(draw, Path(path).name, thumb))):
            draw.text((x, thumb + 12 + line * line_h), text, fill=colour)
    out = Path(out)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
