"""Publish a converted dataset to the Hugging Face Hub (``fgsbir push-dataset``, ``push_to_hub``).

The Parquet layout (``{sketches,photos}/{split}-*.parquet`` with the image bytes embedded) is
``fgsbir_plugin.data.export.save_parquet``'s; this module adds the full dataset card and the upload.
Users then load the repo with ``datasets.load_dataset(repo_id, "sketches")``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from datasets import DatasetDict, Image, Value

from ..data.export import save_parquet
from ..data.load import load_fgsbir_pair
from .dataset_card import render_dataset_card
from .staging import staged_output
from .upload import build_and_upload, resolve_token, validate_repo_id

__all__ = ["DATASET_CONFIGS", "build_dataset_folder", "push_dataset", "push_to_hub"]

# The two configurations of a converted dataset, each a DatasetDict with the same split names.
DATASET_CONFIGS = ("sketches", "photos")


def _load_converted(name: str, data_dir, **reader_kwargs) -> dict:
    """``{"sketches": DatasetDict, "photos": DatasetDict}`` of a dataset, read once through load_fgsbir."""
    sketches, photos = load_fgsbir_pair(name, data_dir, **reader_kwargs)
    return {"sketches": sketches, "photos": photos}


def _describe(feature) -> str:
    if isinstance(feature, Image):
        return "image (the encoded file's bytes, embedded in the Parquet file)"
    if isinstance(feature, Value):
        return feature.dtype
    return type(feature).__name__


def _configs_of(card_path: Path) -> list:
    """The ``configs`` YAML that save_parquet wrote into its README.md (the layout's one description)."""
    text = card_path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError(f"{card_path} has no YAML front matter; the dataset export changed its layout.")
    return yaml.safe_load(text.split("---\n", 2)[1])["configs"]


def _check_configurations(dicts: Mapping) -> None:
    if set(dicts) != set(DATASET_CONFIGS):
        raise ValueError(
            f"a dataset to publish needs exactly the configurations {list(DATASET_CONFIGS)}, got {sorted(dicts)}."
        )
    if set(dicts["sketches"]) != set(dicts["photos"]):
        raise ValueError(
            f"sketch splits {sorted(dicts['sketches'])} and photo splits {sorted(dicts['photos'])} differ; "
            "every split needs both its sketches and its gallery."
        )


def build_dataset_folder(
    dicts: Mapping,
    out_dir: str | os.PathLike,
    *,
    repo_id: str,
    name: str,
    license: str = "other",
    source: str | None = None,
) -> Path:
    """Write the folder a dataset push uploads: ``{sketches,photos}/{split}-*.parquet`` and ``README.md``.

    ``dicts`` maps ``"sketches"`` and ``"photos"`` to ``datasets.DatasetDict`` objects with the row
    schema of ``fgsbir_plugin/data/schema.py``. The Parquet files (images embedded) are written by
    ``fgsbir_plugin.data.export.save_parquet``; its README.md is replaced by the full dataset card,
    which keeps the ``configs`` YAML so ``datasets.load_dataset(repo_or_folder, "sketches")`` works.
    ``out_dir`` must not exist or be empty; the folder appears there complete or not at all.
    """
    validate_repo_id(repo_id)
    _check_configurations(dicts)
    with staged_output(out_dir) as folder:
        save_parquet(dicts["sketches"], dicts["photos"], folder, title=name)
        sizes = {c: {split: len(ds) for split, ds in dicts[c].items()} for c in DATASET_CONFIGS}
        schemas = {
            c: {col: _describe(f) for col, f in next(iter(dicts[c].values())).features.items()}
            for c in DATASET_CONFIGS
        }
        card = render_dataset_card(
            repo_id=repo_id,
            name=name,
            split_sizes=sizes,
            schemas=schemas,
            configs=_configs_of(folder / "README.md"),
            license=license,
            source=source,
        )
        (folder / "README.md").write_text(card, encoding="utf-8")
    return Path(out_dir)


def push_dataset(
    name: str,
    repo_id: str,
    *,
    data_dir: str | os.PathLike | None = None,
    dicts: Mapping | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    overwrite: bool = False,
    license: str = "other",
    source: str | None = None,
    dry_run: str | os.PathLike | None = None,
    token: str | None = None,
    api=None,
    **reader_kwargs,
) -> str:
    """Publish a converted dataset as Parquet with embedded images; return the commit URL (or dry-run folder).

    The dataset is read with ``load_fgsbir`` (``name``, ``data_dir``, ``reader_kwargs``) unless
    ``dicts`` (``{"sketches": DatasetDict, "photos": DatasetDict}``) is given. Only publish data you
    have the right to redistribute.
    """
    validate_repo_id(repo_id)
    if dry_run is None:
        token = resolve_token(token)  # before the (possibly long) read, so a missing token fails fast
    if dicts is None:
        dicts = _load_converted(name, data_dir, **reader_kwargs)
    card_args = dict(repo_id=repo_id, name=name, license=license, source=source)
    return build_and_upload(
        lambda folder, _secrets: build_dataset_folder(dicts, folder, **card_args),
        dry_run=dry_run,
        token=token,
        repo_id=repo_id,
        repo_type="dataset",
        private=private,
        revision=revision,
        commit_message=commit_message or f"Upload {name} with fgsbir push-dataset",
        overwrite=overwrite,
        marker="README.md",
        # Files of an earlier upload (other splits, other shard names) would match the same globs.
        delete_patterns=[f"{config}/*.parquet" for config in DATASET_CONFIGS],
        api=api,
    )


def push_to_hub(
    sketches: DatasetDict,
    photos: DatasetDict,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    overwrite: bool = False,
    api=None,
) -> str:
    """Publish ``(sketches, photos)`` as a Hub dataset repo with configs "sketches" and "photos".

    The same upload as ``fgsbir push-dataset`` (:func:`push_dataset`): the ``save_parquet`` folder
    plus a dataset card, the token from ``token``/``HF_TOKEN``/the huggingface_hub login (never
    printed), an existing dataset replaced only with ``overwrite``. Users then load it with
    ``datasets.load_dataset(repo_id, "sketches")``. Only publish data you have the right to
    redistribute.

    Args:
        api: an ``huggingface_hub.HfApi``-like object (default: ``HfApi(token=token)``).

    Returns:
        The commit URL.
    """
    return push_dataset(
        repo_id,
        repo_id,
        dicts={"sketches": sketches, "photos": photos},
        token=token,
        private=private,
        revision=revision,
        commit_message=commit_message,
        overwrite=overwrite,
        api=api,
    )
