"""The embedded default gallery of ``fgsbir app``: the demo's DSSA and its synthetic test photos.

``fgsbir app`` with no arguments serves it, so a fresh machine runs the page with no data and no
downloads. The first start builds it: it trains the DSSA of ``fgsbir demo --quick`` on the
synthetic set (about 1.5 minutes on 2 CPU cores), writes the test split's photos and sketches as PNG
files and indexes the photos with the trained model, exactly as ``fgsbir index build`` would. Later
starts load the folder. The folder appears complete or not at all, and two starts at once build it
once.

Layout of the folder (``~/.cache/fgsbir/app_default`` unless ``$FGSBIR_APP_CACHE`` or an argument
says otherwise)::

    demo/dssa/          the run folder of the trained model (as `fgsbir train` writes it)
    photos/<id>.png     the synthetic test photos (the gallery)
    sketches/<id>.png   the synthetic test sketches (the page's examples)
    gallery.index       the gallery index (photo ids are the file names under photos/)
    assets.json         what is where, and each example sketch's photo; written last
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._common import atomic_dir
from ..embedding import embed_files
from ..model_io import load_model
from ..run_folder import RunFolder
from ..search.index import GalleryIndex
from ..train.demo import DEMO_MODELS, DemoSettings, run_demo

__all__ = ["DefaultAssets", "default_assets_dir", "ensure_default_assets", "CACHE_ENV"]

CACHE_ENV = "FGSBIR_APP_CACHE"
_RECORD = "assets.json"


@dataclass(frozen=True)
class DefaultAssets:
    """Where the built default lives: the index, the run folder, and ``(sketch file, photo id)`` examples."""

    folder: Path
    index: Path
    checkpoint: Path
    examples: list[tuple[Path, str]]


def default_assets_dir() -> Path:
    """``$FGSBIR_APP_CACHE``, else ``$XDG_CACHE_HOME/fgsbir/app_default``, else ``~/.cache/fgsbir/app_default``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fgsbir" / "app_default"


def _read(folder: Path) -> DefaultAssets:
    record = folder / _RECORD
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        examples = [(folder / str(path), str(photo)) for path, photo in data["examples"]]
        assets = DefaultAssets(
            folder, folder / str(data["index"]), folder / str(data["checkpoint"]), examples
        )
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise ValueError(
            f"{record} is damaged; delete {folder} and start the app again to rebuild it."
        ) from None
    if not assets.index.is_file():
        raise FileNotFoundError(
            f"{assets.index} is missing; delete {folder} and start the app again to rebuild it."
        )
    return assets


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Held while the folder is built, so that a second app started meanwhile waits and then reuses it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_default_assets(
    folder: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    seed: int = 0,
    settings: DemoSettings | None = None,
    models: tuple[tuple[str, str, dict[str, Any], dict[str, Any]], ...] | None = None,
    datasets=None,
) -> DefaultAssets:
    """The default gallery in ``folder`` (default :func:`default_assets_dir`), built there first if missing.

    ``settings``, ``models`` and ``datasets`` are those of :func:`~fgsbir_plugin.train.demo.run_demo`
    (default: the quick demo's sizes, its DSSA only, the synthetic set); tests pass tiny ones.
    """
    folder = Path(folder) if folder is not None else default_assets_dir()
    if (folder / _RECORD).is_file():
        return _read(folder)
    with _build_lock(folder):
        if not (folder / _RECORD).is_file():  # another process may have built it while this one waited
            if progress:
                print(
                    f"building the default gallery in {folder} (once; about 1.5 minutes on 2 CPU cores) ..."
                )
            with atomic_dir(folder) as tmp:
                _build(
                    tmp, folder.resolve(), progress, seed, settings or DemoSettings.quick(), models, datasets
                )
    return _read(folder)


def _build(
    tmp: Path, final: Path, progress: bool, seed: int, settings: DemoSettings, models, datasets
) -> None:
    """Train, write the photos and sketches, index the photos; paths recorded are those of ``final``."""
    if datasets is None:
        datasets = settings.datasets(seed)
    models = models or DEMO_MODELS[:1]
    result = run_demo(
        tmp / "demo", settings=settings, models=models, datasets=datasets, progress=progress, seed=seed
    )
    run_dir = Path(result["results"][models[0][0]]["run"]).relative_to(tmp)
    sketches, photos = datasets[0]["test"], datasets[1]["test"]
    photo_files = []
    for row in photos:
        path = tmp / "photos" / f"{row['photo_id']}.png"
        path.parent.mkdir(exist_ok=True)
        row["photo"].convert("RGB").save(path, format="PNG")
        photo_files.append(path)
    examples = []
    for row in sketches:
        path = Path("sketches") / f"{row['sketch_id']}.png"
        (tmp / path.parent).mkdir(exist_ok=True)
        row["sketch"].convert("L").save(tmp / path, format="PNG")
        examples.append((path.as_posix(), f"{row['photo_id']}.png"))
    _index_photos(tmp, final, run_dir, photo_files)
    record = {"index": "gallery.index", "checkpoint": run_dir.as_posix(), "examples": examples}
    (tmp / _RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _index_photos(tmp: Path, final: Path, run_dir: Path, photo_files: list[Path]) -> None:
    """``gallery.index`` of the photos with the trained model: HOLEF when the model learned one, else cosine."""
    run = RunFolder(tmp / run_dir)
    model = load_model(run.model_dir)
    distance = run.load_distance(model)
    W = distance.weight_matrix().detach() if hasattr(distance, "weight_matrix") else None
    emb = embed_files(model, photo_files, "photo").numpy()
    index = GalleryIndex(emb.shape[1], "holef" if W is not None else "cosine", W=W, model=model)
    index.add(emb, [p.name for p in photo_files])
    # The index names the folders it will have once the build is renamed into place.
    index.save(
        tmp / "gallery.index",
        extra={"photos_root": str(final / "photos"), "checkpoint": str(final / run_dir)},
    )
