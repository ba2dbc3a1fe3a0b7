"""``fgsbir index build`` and ``fgsbir search``: embed a photo folder into a gallery index, query it with a sketch."""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import numpy as np
import torch

from .index import METRICS, GalleryIndex

__all__ = ["register", "embed_images", "find_images", "resolve_model_dir", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


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


def resolve_model_dir(path: Path) -> Path:
    """A run folder's ``model/`` subfolder, or ``path`` itself when it is a model folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass a run folder or its model/ folder.")
    return path / "model" if (path / "model" / "config.json").is_file() else path


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def find_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"photo folder {folder} does not exist or is not a folder.")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}.")
    return paths


def _image_transform(model: torch.nn.Module):
    """timm's eval transform for ``model`` and the PIL mode matching its input channels."""
    import timm.data

    cfg = timm.data.resolve_model_data_config(model)
    mode = "L" if cfg["input_size"][0] == 1 else "RGB"
    return timm.data.create_transform(**cfg, is_training=False), mode


def _load_image(path: Path, mode: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"cannot read image {path} ({err}); remove or fix the file.") from None


@torch.no_grad()
def embed_images(
    model: torch.nn.Module,
    paths: list[Path],
    modality: str,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Embed image files with ``model`` (timm eval preprocessing): ``[len(paths), num_features]`` float32.

    ``modality`` ("sketch" / "photo") is passed to models whose ``forward`` accepts it (DSSA with
    separate trunks) and ignored otherwise.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {batch_size}.")
    transform, mode = _image_transform(model)
    takes_modality = "modality" in inspect.signature(model.forward).parameters
    model = model.to(device).eval()
    out = []
    with tqdm(
        total=len(paths), unit="img", desc=f"embedding {modality}s", disable=not progress, file=sys.stderr
    ) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            x = torch.stack([transform(_load_image(p, mode)) for p in chunk]).to(device)
            emb = model(x, modality=modality) if takes_modality else model(x)
            out.append(emb.float().cpu().numpy())
            bar.update(len(chunk))
    return np.concatenate(out)


def _holef_matrix(model: torch.nn.Module):
    distance = getattr(model, "distance", None)
    if distance is None or not hasattr(distance, "weight_matrix"):
        return None
    return distance.weight_matrix().detach()


def _load(checkpoint: Path, device: torch.device) -> torch.nn.Module:
    from ..model_io import load_model

    return load_model(resolve_model_dir(checkpoint), device=device)


def run_build(args: argparse.Namespace) -> int:
    device = _device(args.device)
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
    paths = find_images(args.photos)
    root = args.photos.resolve()
    emb = embed_images(model, paths, "photo", args.batch_size, device)
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
    device = _device(args.device)
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
    query = embed_images(model, [args.sketch], "sketch", 1, device, progress=False)
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
