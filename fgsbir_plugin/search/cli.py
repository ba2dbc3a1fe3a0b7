"""``fgsbir index build`` and ``fgsbir search``: embed a photo folder into a gallery index, query it with a sketch."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .index import METRICS, GalleryIndex

__all__ = ["register", "write_contact_sheet"]


def register(subparsers) -> None:
    index = subparsers.add_parser("index", help="build a searchable gallery index from a folder of photos")
    index_sub = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    build = index_sub.add_parser(
        "build",
        help="embed every photo under a folder and write a gallery index file",
        description="Embed every image under --photos with the model and write one gallery index file.",
    )
    build.add_argument(
        "--checkpoint", required=True, type=Path, help="a run folder (uses its model/) or a model folder"
    )
    build.add_argument("--photos", required=True, type=Path, help="folder of photos, searched recursively")
    build.add_argument("--out", required=True, type=Path, help="index file to write, e.g. gallery.index")
    build.add_argument(
        "--metric",
        default="auto",
        choices=("auto", *METRICS),
        help="auto: holef when the model has a learned HOLEF distance, else cosine",
    )
    build.add_argument(
        "--spec", default="Flat", help="faiss index_factory spec: Flat (exact), HNSW32, IVF1024,Flat, ..."
    )
    build.add_argument("--batch-size", type=int, default=64)
    build.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1, ...")
    _add_search_param_args(build)
    build.set_defaults(func=run_build)

    search = subparsers.add_parser(
        "search",
        help="find the photos closest to a sketch in a gallery index",
        description="Embed a sketch with the model and print the k closest photos of the index, closest first.",
    )
    search.add_argument("--index", required=True, type=Path, help="file written by `fgsbir index build`")
    search.add_argument(
        "--checkpoint", required=True, type=Path, help="the run or model folder the index was built with"
    )
    search.add_argument("--sketch", required=True, type=Path, help="sketch image")
    search.add_argument("-k", type=int, default=10, help="number of photos to return (default 10)")
    search.add_argument(
        "--contact-sheet", type=Path, help="also write the sketch and its top-k photos to this PNG"
    )
    search.add_argument("--device", default="auto")
    _add_search_param_args(search)
    search.set_defaults(func=run_search)


def _add_search_param_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ef-search", type=int, help="HNSW specs: candidates explored per query (default 128)"
    )
    parser.add_argument("--nprobe", type=int, help="IVF specs: lists visited per query (default 16)")


def _search_params(args: argparse.Namespace) -> dict[str, int]:
    params = {"efSearch": args.ef_search, "nprobe": args.nprobe}
    return {k: v for k, v in params.items() if v is not None}


# ----------------------------------------------------------------------------------------------


def _load_image(path: Path, mode: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"cannot read image {path} ({err}); remove or fix the file.") from None


def _load(checkpoint: Path, device: torch.device) -> torch.nn.Module:
    from ..model_io import load_model
    from ..run_folder import RunFolder

    return load_model(RunFolder.resolve(checkpoint)[1], device=device)


def _holef_matrix(model: torch.nn.Module):
    distance = getattr(model, "distance", None)
    if distance is None or not hasattr(distance, "weight_matrix"):
        return None
    return distance.weight_matrix().detach()


def run_build(args: argparse.Namespace) -> int:
    from ..embedding import embed_files, list_images
    from ..runtime import resolve_device

    device = resolve_device(args.device)
    model = _load(args.checkpoint, device)
    W = _holef_matrix(model)
    metric = args.metric
    if metric == "auto":
        metric = "holef" if W is not None else "cosine"
    if metric == "holef" and W is None:
        raise ValueError(
            f"metric holef needs a model with a learned HOLEF distance (model.distance), and {args.checkpoint} "
            "has none; use --metric cosine or l2."
        )
    paths = list_images(args.photos)
    root = args.photos.resolve()
    emb = embed_files(model, paths, "photo", batch_size=args.batch_size, device=device, progress=True).numpy()
    index = GalleryIndex(
        emb.shape[1],
        metric,
        W=W if metric == "holef" else None,
        spec=args.spec,
        model=model,
        **_search_params(args),
    )
    if not index.is_trained:
        index.train(emb)
    index.add(emb, [p.resolve().relative_to(root).as_posix() for p in paths])
    index.save(args.out, extra={"photos_root": str(root), "checkpoint": str(args.checkpoint)})
    print(f"wrote {args.out}: {len(index)} photos, metric {metric}, spec {args.spec}, dim {index.dim}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ValueError(f"-k must be positive, got {args.k}.")
    from ..embedding import embed_files
    from ..runtime import resolve_device

    device = resolve_device(args.device)
    model = _load(args.checkpoint, device)
    header = GalleryIndex.read_header(args.index)
    W = _holef_matrix(model) if header["metric"] == "holef" else None
    if header["metric"] == "holef" and W is None:
        raise ValueError(
            f"{args.index} uses the HOLEF metric but {args.checkpoint} has no learned HOLEF distance; "
            "pass the checkpoint the index was built with."
        )
    index = GalleryIndex.load(args.index, expect={"model": model, "W": W})
    if _search_params(args):
        index.set_search_params(**_search_params(args))
    if not args.sketch.is_file():
        raise FileNotFoundError(f"sketch {args.sketch} does not exist.")
    query = embed_files(model, [args.sketch], "sketch", batch_size=1, device=device).numpy()
    dist, ids = index.search(query, min(args.k, max(len(index), 1)))
    root = Path(index.extra.get("photos_root", "."))
    results = [(root / str(i), float(d)) for i, d in zip(ids[0], dist[0]) if i is not None and i != -1]
    print(f"# rank\tdistance ({index.metric})\tphoto")
    for rank, (path, d) in enumerate(results, 1):
        print(f"{rank}\t{d:.6g}\t{path}")
    if args.contact_sheet:
        write_contact_sheet(args.sketch, results, args.contact_sheet)
        print(f"wrote {args.contact_sheet}")
    return 0


def write_contact_sheet(sketch: Path, results: list[tuple[Path, float]], out: Path, thumb: int = 160) -> Path:
    """One PNG row: the sketch, then each result photo with its rank and distance under it."""
    from PIL import Image, ImageDraw

    from .._common import atomic_path

    label_h = 18
    sheet = Image.new("RGB", ((len(results) + 1) * (thumb + 8) + 8, thumb + label_h + 16), "white")
    draw = ImageDraw.Draw(sheet)
    tiles = [(sketch, "sketch")] + [(p, f"#{i} {d:.4g}") for i, (p, d) in enumerate(results, 1)]
    for col, (path, caption) in enumerate(tiles):
        im = _load_image(path, "RGB")
        im.thumbnail((thumb, thumb))
        x = 8 + col * (thumb + 8)
        sheet.paste(im, (x + (thumb - im.width) // 2, 8 + (thumb - im.height) // 2))
        draw.text((x, thumb + 12), caption, fill=(200, 0, 0) if col == 0 else (0, 0, 0))
    out = Path(out)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
