"""The dataset card (README.md of a dataset repo): the rights notice, split sizes, the row schema.

The ``configs`` YAML that lets ``datasets.load_dataset(repo, "sketches")`` find the Parquet files
comes from the export (``fgsbir_plugin.data.export``) and is carried over unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .. import __version__
from ..data.schema import SPLITS
from .card import front_matter, load_template

__all__ = ["render_dataset_card"]

# The Hub's size_categories buckets: (exclusive upper bound on the row count, label).
_SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (math.inf, "n>100K"),
)


def _size_category(split_sizes: Mapping[str, Mapping[str, int]]) -> str:
    total = sum(n for sizes in split_sizes.values() for n in sizes.values())
    return next(label for bound, label in _SIZE_CATEGORIES if total < bound)


def _splits_table(split_sizes: Mapping[str, Mapping[str, int]]) -> str:
    """Rows per configuration and split, the splits in train/validation/test order, then the others."""
    present = {s for sizes in split_sizes.values() for s in sizes}
    splits = [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))
    table = ["| configuration | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for config, sizes in split_sizes.items():
        table.append(f"| `{config}` | " + " | ".join(str(sizes.get(s, 0)) for s in splits) + " |")
    return "\n".join(table)


def _schema_section(schemas: Mapping[str, Mapping[str, str]]) -> str:
    lines = []
    for config, columns in schemas.items():
        lines.append(f"`{config}`:\n")
        lines += [f"- `{col}`: {desc}" for col, desc in columns.items()]
        lines.append("")
    return "\n".join(lines).strip()


def render_dataset_card(
    *,
    repo_id: str,
    name: str,
    split_sizes: Mapping[str, Mapping[str, int]],
    schemas: Mapping[str, Mapping[str, str]],
    configs: Sequence[Mapping],
    license: str = "other",
    source: str | None = None,
) -> str:
    """The README.md of a dataset repo.

    ``split_sizes[config][split]`` is a row count, ``schemas[config][column]`` a type description,
    ``configs`` the Hub ``configs`` YAML list (config_name, data_files) of the Parquet layout.
    """
    metadata = {
        "license": license,
        "pretty_name": name,
        "task_categories": ["image-feature-extraction"],
        "tags": ["sketch-based-image-retrieval", "fine-grained-retrieval", "sketch", "fgsbir-plugin"],
        "size_categories": [_size_category(split_sizes)],
        "configs": [dict(c) for c in configs],
    }
    licence_line = (
        f"The licence declared for this repository is `{license}`."
        if license != "other"
        else "See the original dataset's terms for the licence."
    )
    return load_template("dataset_card.md").substitute(
        front_matter=front_matter(metadata),
        title=f"{name} (FG-SBIR, Parquet)",
        name=name,
        licence_line=licence_line,
        splits_table=_splits_table(split_sizes),
        schema_section=_schema_section(schemas),
        repo_id=repo_id,
        source_section=source or f"Converted from the original `{name}` release with `fgsbir push-dataset`.",
        plugin_version=__version__,
    )
