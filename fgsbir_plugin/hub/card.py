"""What the model and dataset cards (the README.md of a Hub repo) share: templates, tables, front matter.

The prose lives in ``templates/model_card.md`` and ``templates/dataset_card.md`` (``string.Template``
files shipped with the package); ``model_card`` and ``dataset_card`` compute the pieces that depend
on the run or the dataset.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping
from importlib import resources

import yaml

__all__ = ["load_template", "is_local_path", "table_cell", "format_number", "front_matter"]

# Absolute local paths (POSIX, home-relative, Windows drive) say nothing to a reader of a public card
# and can leak a user name, so they are replaced in the rendered tables.
_LOCAL_PATH = re.compile(r"^(/|~|[A-Za-z]:[\\/])")


def load_template(name: str) -> string.Template:
    """The card template ``name`` (e.g. ``"model_card.md"``) shipped in ``fgsbir_plugin/hub/templates``."""
    text = resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")
    return string.Template(text)


def is_local_path(value: str) -> bool:
    """True for an absolute local path (POSIX, ``~``, a Windows drive), which a public card must not show."""
    return bool(_LOCAL_PATH.match(value))


def table_cell(value) -> str:
    """One Markdown table cell: strings verbatim, everything else as compact JSON, pipes escaped."""
    if isinstance(value, str):
        text = "<local path>" if is_local_path(value) else value
    else:
        text = json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return "`" + text.replace("|", "\\|").replace("`", "'").replace("\n", " ") + "`"


def format_number(value, digits: int = 2) -> str:
    """A metric for a table: floats with ``digits`` decimals, ints as they are, None as ``n/a``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def front_matter(metadata: Mapping) -> str:
    """The YAML between the card's ``---`` lines, keys in the given order."""
    return yaml.safe_dump(dict(metadata), sort_keys=False, allow_unicode=True).strip()
