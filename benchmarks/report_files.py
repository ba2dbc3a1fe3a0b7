"""Where a benchmark's report goes: ``<name>.json`` and ``<name>.md`` beside it, each written atomically.

Every benchmark script writes its figures this way, so a killed run leaves the previous report whole
rather than a half-written one, and the JSON always ends with a newline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fgsbir_plugin._common import atomic_write_bytes


def write_json(path: str | Path, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as JSON (``indent``, trailing newline) to ``path`` atomically, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=indent) + "\n").encode())
    return path


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    """Write a mapping as JSON with one top-level key per line and each value compact (no spaces, lists on
    one line), atomically: the accuracy cells, whose long per-query lists would otherwise take a line per
    number (about twice the bytes; every tracked file travels to a lent GPU, within 64 MiB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = ",\n".join(f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in record.items())
    atomic_write_bytes(path, ("{\n" + body + "\n}\n").encode())
    return path


def write_report(json_path: str | Path, report: Any, markdown: str, *, indent: int = 2) -> tuple[Path, Path]:
    """Write ``report`` to ``json_path`` and ``markdown`` to the ``.md`` beside it, each atomically; both paths."""
    json_path = write_json(json_path, report, indent=indent)
    md_path = json_path.with_suffix(".md")
    atomic_write_bytes(md_path, markdown.encode())
    return json_path, md_path
