"""Write a loaded dataset out, and read it back: Parquet (Hub layout), the Hub, an imagefolder.

- ``save_parquet(sketches, photos, folder)`` writes a self-contained dataset repository layout::

      README.md                          dataset card whose YAML declares configs "sketches", "photos"
      sketches/<split>-00000-of-00001.parquet
      photos/<split>-00000-of-00001.parquet

  Image bytes are embedded (no paths to the original files survive), and the features are
  stored in the Parquet metadata, so ``load_parquet(folder)`` -- or
  ``datasets.load_dataset(folder_or_repo_id, "sketches")`` -- gives the same rows back.
- ``fgsbir_plugin.hub.push_to_hub(sketches, photos, repo_id)`` uploads exactly that folder, with a
  full dataset card, as a dataset repo.
- ``export_imagefolder(dataset_dict, folder)`` writes ``<split>/<index>.<ext>`` files and a
  ``<split>/metadata.jsonl`` per split, which ``datasets.load_dataset("imagefolder", data_dir=folder)``
  reads back with the same columns (``sketch``/``photo`` from ``sketch_file_name``/``photo_file_name``).

Every file is written atomically; an existing non-empty output folder is refused.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets import Dataset, DatasetDict, load_dataset
from datasets import Image as ImageFeature
from datasets.table import InMemoryTable, embed_table_storage
from PIL import Image

from .._common import atomic_path, atomic_write_bytes
from .schema import PHOTO_FEATURES, SKETCH_FEATURES, SPLITS

__all__ = [
    "save_parquet",
    "load_parquet",
    "export_imagefolder",
    "load_imagefolder",
    "config_of",
]

_CONFIGS = {"sketches": ("sketch", SKETCH_FEATURES), "photos": ("photo", PHOTO_FEATURES)}


def config_of(dd: DatasetDict) -> str:
    """``"sketches"`` or ``"photos"``, from the columns of ``dd``."""
    if not isinstance(dd, DatasetDict) or not len(dd):
        raise TypeError(f"expected a non-empty datasets.DatasetDict, got {type(dd).__name__}")
    features = next(iter(dd.values())).features
    for name, (_, feats) in _CONFIGS.items():
        if features == feats:
            return name
    raise ValueError(
        f"the dataset's features {sorted(features)} match neither the sketch nor the photo schema of "
        "fgsbir_plugin.data.schema; export what load_fgsbir returns"
    )


def _fresh_dir(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} exists and is not an empty folder; choose a new folder or remove it")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _split_order(dd: DatasetDict) -> list[str]:
    return [s for s in SPLITS if s in dd] + [s for s in dd if s not in SPLITS]


def _card(title: str, splits: dict[str, list[str]]) -> str:
    configs = []
    for name in ("sketches", "photos"):
        configs.append(
            {
                "config_name": name,
                **({"default": True} if name == "sketches" else {}),
                "data_files": [{"split": s, "path": f"{name}/{s}-*.parquet"} for s in splits[name]],
            }
        )
    header = yaml.safe_dump({"configs": configs}, sort_keys=False)
    return (
        f"---\n{header}---\n\n# {title}\n\n"
        "A fine-grained sketch-based image retrieval dataset converted by fgsbir-plugin.\n\n"
        "- config `sketches`: one row per sketch: `sketch` (image), `sketch_id`, `photo_id`, `category`.\n"
        "- config `photos`: the gallery, one row per photo: `photo` (image), `photo_id`, `category`.\n\n"
        "A sketch's photo is the `photos` row of the same split with the same `photo_id`.\n"
        "Check the original dataset's licence before publishing a converted copy.\n"
    )


def save_parquet(
    sketches: DatasetDict, photos: DatasetDict, folder: str | os.PathLike, *, title: str = "FG-SBIR dataset"
) -> Path:
    """Write ``(sketches, photos)`` as Parquet files with embedded image bytes plus a dataset card.

    Returns the folder. See the module docstring for the layout.
    """
    if config_of(sketches) != "sketches" or config_of(photos) != "photos":
        raise ValueError("pass the sketches DatasetDict first and the photos DatasetDict second")
    folder = _fresh_dir(folder)
    # Only local files: a remote URL in a path column must not trigger downloads while saving.
    if "remote_files" in inspect.signature(embed_table_storage).parameters:
        embed = functools.partial(embed_table_storage, local_files=True, remote_files=False)
    else:  # datasets < 4.8.5 embeds local files only
        embed = embed_table_storage
    written: dict[str, list[str]] = {}
    for name, dd in (("sketches", sketches), ("photos", photos)):
        written[name] = []
        for split in _split_order(dd):
            # Paths would point at this machine's files: embed their bytes, as datasets' push_to_hub does.
            ds = (
                dd[split].with_format("arrow").map(embed, batched=True, keep_in_memory=True).with_format(None)
            )
            target = folder / name / f"{split}-00000-of-00001.parquet"
            with atomic_path(target) as tmp:
                # A CRC-32 per data page: load_parquet checks them (readers that do not, ignore them).
                ds.to_parquet(str(tmp), write_page_checksum=True)
            written[name].append(split)
    atomic_write_bytes(folder / "README.md", _card(title, written).encode())
    return folder


def _read_checked(path: Path):
    """The Parquet table at ``path``, its page checksums verified (files written without them: unchecked)."""
    try:
        return pq.read_table(path, page_checksum_verification=True)
    except (PermissionError, FileNotFoundError):
        raise
    except (OSError, pa.ArrowException) as err:  # a failed CRC is an OSError; a damaged footer, ArrowInvalid
        raise ValueError(f"{path} is damaged ({str(err).splitlines()[0]}); export it again") from None


def load_parquet(folder: str | os.PathLike) -> tuple[DatasetDict, DatasetDict]:
    """Read a ``save_parquet`` folder back as ``(sketches, photos)``, in memory, no cache files."""
    folder = Path(folder)
    out = []
    for name, (_, feats) in _CONFIGS.items():
        files = sorted((folder / name).glob("*-00000-of-00001.parquet")) if (folder / name).is_dir() else []
        if not files:
            raise FileNotFoundError(
                f"{folder / name} holds no Parquet files; is {folder} a save_parquet folder?"
            )
        dd = DatasetDict()
        by_split = {f.name.split("-00000-of-")[0]: f for f in files}
        for split in [s for s in SPLITS if s in by_split] + sorted(s for s in by_split if s not in SPLITS):
            ds = Dataset(InMemoryTable(_read_checked(by_split[split])), split=split)
            if ds.features != feats:
                raise ValueError(
                    f"{by_split[split]} has features {ds.features}, not the {name} schema; re-export it"
                )
            dd[split] = ds
        out.append(dd)
    return out[0], out[1]


def _suffix(ref: dict) -> str:
    if ref.get("path") and ref.get("bytes") is None:
        return Path(ref["path"]).suffix.lower()
    fmt = Image.open(io.BytesIO(ref["bytes"])).format or "PNG"
    return {"JPEG": ".jpg", "TIFF": ".tif"}.get(fmt, f".{fmt.lower()}")


def export_imagefolder(dataset: DatasetDict, folder: str | os.PathLike) -> Path:
    """Write one DatasetDict (sketches or photos) as an ``imagefolder`` directory.

    Layout: ``<folder>/<split>/<index:06d>.<ext>`` holding each row's image bytes unchanged, and
    ``<folder>/<split>/metadata.jsonl`` with ``<column>_file_name`` and the id/category columns.
    Empty splits are left out (imagefolder cannot express them).
    """
    config = config_of(dataset)
    column, _ = _CONFIGS[config]
    folder = _fresh_dir(folder)
    for split in _split_order(dataset):
        ds = dataset[split]
        if len(ds) == 0:
            continue
        raw = ds.cast_column(column, ImageFeature(decode=False))
        lines = []
        for i, row in enumerate(raw):
            ref = row.pop(column)
            name = f"{i:06d}{_suffix(ref)}"
            data = ref["bytes"] if ref.get("bytes") is not None else Path(ref["path"]).read_bytes()
            atomic_write_bytes(folder / split / name, data)
            lines.append(json.dumps({f"{column}_file_name": name, **row}, ensure_ascii=False))
        atomic_write_bytes(folder / split / "metadata.jsonl", ("\n".join(lines) + "\n").encode())
    return folder


def _check_metadata_files(folder: Path) -> None:
    """Every ``metadata.jsonl`` under ``folder`` holds one JSON object per line.

    datasets' JSON-lines parser reports a broken line without naming its file, so each file is
    read once here first.
    """
    for path in sorted(folder.rglob("metadata.jsonl")):
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"{path} line {n} is not valid JSON ({exc}); fix that line or export the folder again"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path} line {n} is not a JSON object; fix that line or export the folder again"
                )


def load_imagefolder(folder: str | os.PathLike, **load_dataset_kwargs) -> DatasetDict:
    """``datasets.load_dataset("imagefolder", data_dir=folder)`` cast to the exact row schema."""
    _check_metadata_files(Path(folder))
    dd = load_dataset("imagefolder", data_dir=str(folder), **load_dataset_kwargs)
    cols = set(next(iter(dd.values())).column_names)
    name = "sketches" if "sketch" in cols else "photos"
    feats = _CONFIGS[name][1]
    return DatasetDict({s: ds.select_columns(list(feats)).cast(feats) for s, ds in dd.items()})
