"""The gallery index file: one file, checksummed section by section, nothing unpickled.

Layout::

    b"FGSBIRIX"                      8 bytes magic
    header length                    8 bytes, unsigned little-endian
    sha256(header)                   32 bytes
    header                           UTF-8 JSON, keys sorted: format_version, metric, dim, spec, model
                                     name and fingerprint, W fingerprint, id mapping, search params,
                                     and the list of sections that follow with their sizes and sha256
    sections                         "faiss" (faiss.serialize_index bytes), then "W" (float64,
                                     little-endian, C order, d x d) for metric "holef"

This module writes and reads that layout and checks a header against what the caller expects
(dimension, metric, spec, HOLEF matrix, model); :class:`~fgsbir_plugin.search.GalleryIndex`
decides what goes into the header and sections.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._common import atomic_path, tensor_fingerprint
from .inputs import resolve_weight_matrix

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "EXPECT_KEYS",
    "weight_fingerprint",
    "model_identity",
    "write_index_file",
    "read_index_file",
    "read_weight_matrix",
    "check_expect",
]

MAGIC = b"FGSBIRIX"
FORMAT_VERSION = 1
KIND = "fgsbir_plugin.GalleryIndex"
EXPECT_KEYS = ("dim", "metric", "spec", "W", "model", "model_name", "model_fingerprint")
_PREFIX = len(MAGIC) + 8 + 32  # magic, header length, header sha256


def weight_fingerprint(W: np.ndarray) -> str:
    """SHA-256 of the HOLEF matrix values as float64 (so a float32 and a float64 copy of the same W agree)."""
    return tensor_fingerprint({"W": torch.from_numpy(np.ascontiguousarray(W, dtype=np.float64))})


def model_identity(model: torch.nn.Module) -> tuple[str, str]:
    """``(architecture name, sha256 of the state dict)`` identifying the weights that made the embeddings."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture") or type(model).__name__
    # 0-d tensors (BatchNorm's num_batches_tracked) are given one dimension because
    # tensor_fingerprint cannot byte-view a 0-d tensor
    state = {k: v.reshape(1) if v.dim() == 0 else v for k, v in model.state_dict().items()}
    return str(name), tensor_fingerprint(state)


# -- writing --------------------------------------------------------------------------------------


def write_index_file(
    path: str | os.PathLike, header: Mapping[str, Any], sections: Sequence[tuple[str, bytes]]
) -> Path:
    """Write ``header`` (JSON-serialisable) and the named ``sections`` to ``path`` atomically.

    The file's own fields (``format_version``, ``kind``, ``created``, ``sections``) are added here.
    """
    header = {
        **header,
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sections": [
            {"name": name, "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in sections
        ],
    }
    header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(MAGIC)
        fh.write(struct.pack("<Q", len(header_bytes)))
        fh.write(hashlib.sha256(header_bytes).digest())
        fh.write(header_bytes)
        for _, data in sections:
            fh.write(data)
    return path


# -- reading --------------------------------------------------------------------------------------


def read_index_file(path: Path) -> tuple[dict, dict[str, bytes]]:
    """``(header, {section name: bytes})`` of a file written by :func:`write_index_file`, every
    checksum verified; ValueError (one sentence) for a foreign, truncated or corrupted file."""
    if not path.is_file():
        raise FileNotFoundError(f"no gallery index at {path}; build one with `fgsbir index build`.")
    data = path.read_bytes()
    header, offset = _read_header(path, data)
    expected_size = offset + sum(int(s["nbytes"]) for s in header["sections"])
    if len(data) < expected_size:
        raise ValueError(
            f"{path} is truncated ({len(data)} of {expected_size} bytes); rebuild or re-copy the index."
        )
    if len(data) > expected_size:
        raise ValueError(
            f"{path} has {len(data) - expected_size} unexpected trailing bytes; rebuild or re-copy the index."
        )
    sections: dict[str, bytes] = {}
    for section in header["sections"]:
        chunk = data[offset : offset + int(section["nbytes"])]
        offset += int(section["nbytes"])
        if hashlib.sha256(chunk).hexdigest() != section["sha256"]:
            raise ValueError(
                f"{path} is corrupted (checksum mismatch in its {section['name']} section); rebuild or re-copy the index."
            )
        sections[section["name"]] = chunk
    return header, sections


def _read_header(path: Path, data: bytes) -> tuple[dict, int]:
    """The verified header of the file bytes ``data``, and the offset of its first section."""
    if len(data) < _PREFIX or data[: len(MAGIC)] != MAGIC:
        raise ValueError(
            f"{path} is not a gallery index file (wrong magic bytes or too short); pass a file written by GalleryIndex.save."
        )
    (header_len,) = struct.unpack("<Q", data[len(MAGIC) : len(MAGIC) + 8])
    header_sha = data[len(MAGIC) + 8 : _PREFIX]
    header_bytes = data[_PREFIX : _PREFIX + header_len]
    if len(header_bytes) != header_len:
        raise ValueError(f"{path} is truncated (its header is incomplete); rebuild or re-copy the index.")
    if hashlib.sha256(header_bytes).digest() != header_sha:
        raise ValueError(f"{path} is corrupted (header checksum mismatch); rebuild or re-copy the index.")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise ValueError(
            f"{path} has a header that is not a JSON object although its checksum matches; rebuild the index."
        )
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has index format version {header.get('format_version')}, this fgsbir-plugin reads "
            f"version {FORMAT_VERSION}; rebuild the index with this version."
        )
    problem = _header_problem(header)
    if problem is not None:
        # A valid checksum over a malformed header means the file was written by something else.
        raise ValueError(
            f"{path} has a malformed header ({problem}); rebuild the index with `fgsbir index build`."
        )
    return header, _PREFIX + header_len


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


# header field -> (what it must be, check); every field GalleryIndex.load and the CLI read
_HEADER_FIELDS = {
    "kind": (f"{KIND!r}", lambda v: v == KIND),
    "metric": ("a string", lambda v: isinstance(v, str)),
    "spec": ("a string", lambda v: isinstance(v, str)),
    "dim": ("a positive integer", lambda v: _is_count(v) and v > 0),
    "index_dim": ("a positive integer", lambda v: _is_count(v) and v > 0),
    "size": ("a count", _is_count),
    "next_label": ("a count", _is_count),
    "search_params": (
        "an object of integers",
        lambda v: isinstance(v, dict) and all(map(_is_count, v.values())),
    ),
    "model_name": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "model_fingerprint": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "W_fingerprint": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "mips": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "holef_alpha": ("a finite number", _is_number),
    "holef_max_sq_norm": ("a finite number or null", lambda v: v is None or _is_number(v)),
    "id_kind": ("'int', 'str' or null", lambda v: v in ("int", "str", None)),
    "extra": ("an object", lambda v: isinstance(v, dict)),
}
_OPTIONAL_FIELDS = {"extra"}


def _header_problem(header: Mapping[str, Any]) -> str | None:
    """None when ``header`` has every field a reader uses, of the right type, else what is wrong."""
    for key, (what, ok) in _HEADER_FIELDS.items():
        if key not in header:
            if key not in _OPTIONAL_FIELDS:
                return f"no {key!r}"
        elif not ok(header[key]):
            return f"{key!r} is not {what}"
    if header["id_kind"] == "str":
        labels, names = header.get("labels"), header.get("names")
        if not (
            isinstance(labels, list)
            and isinstance(names, list)
            and len(labels) == len(names)
            and all(map(_is_count, labels))
            and all(isinstance(n, str) for n in names)
            and len(set(labels)) == len(labels)
            and len(set(names)) == len(names)
        ):
            return "'labels' and 'names' are not lists of unique labels and unique string ids of one length"
    sections = header.get("sections")
    if not isinstance(sections, list) or not all(
        isinstance(s, dict)
        and isinstance(s.get("name"), str)
        and _is_count(s.get("nbytes"))
        and isinstance(s.get("sha256"), str)
        and len(s["sha256"]) == 64
        for s in sections
    ):
        return "'sections' is not a list of sections with a name, a size and a sha256"
    names = [s["name"] for s in sections]
    needed = {"faiss", "W"} if header["metric"] == "holef" else {"faiss"}
    if len(set(names)) != len(names) or not needed <= set(names) <= {"faiss", "W"}:
        return f"sections {names}, not {sorted(needed)} for metric {header['metric']!r}"
    if header["metric"] == "holef":
        size = next(s["nbytes"] for s in sections if s["name"] == "W")
        if size != 8 * header["dim"] ** 2:
            return f"a W section of {size} bytes, not {header['dim']} x {header['dim']} float64 values"
    return None


def read_weight_matrix(
    path: Path, header: Mapping[str, Any], sections: Mapping[str, bytes]
) -> np.ndarray | None:
    """The HOLEF matrix ``[dim, dim]`` (float64) of a ``holef`` index, checked against its fingerprint; else None."""
    if header["metric"] != "holef":
        return None
    dim = int(header["dim"])
    W = np.frombuffer(sections["W"], dtype="<f8").reshape(dim, dim).astype(np.float64)
    if weight_fingerprint(W) != header["W_fingerprint"]:
        raise ValueError(f"{path} is corrupted: its W does not match the W fingerprint in its header.")
    return W


# -- checking -------------------------------------------------------------------------------------


def check_expect(path: Path, header: Mapping[str, Any], expect: Mapping[str, Any]) -> None:
    """ValueError naming the first difference between the header and ``expect`` (see ``GalleryIndex.load``)."""
    unknown = set(expect) - set(EXPECT_KEYS)
    if unknown:
        raise TypeError(f"unknown expect keys {sorted(unknown)}; use any of {', '.join(EXPECT_KEYS)}.")
    hint = "rebuild it with `fgsbir index build` for this model"
    for key in ("dim", "metric", "spec"):
        if key in expect and expect[key] is not None and expect[key] != header[key]:
            raise ValueError(
                f"{path} was built with {key} {header[key]!r}, but {expect[key]!r} was expected; {hint}."
            )
    _check_model(path, header, expect, hint)
    if expect.get("W") is not None:
        if header["metric"] != "holef":
            raise ValueError(
                f"{path} uses metric {header['metric']!r}, not 'holef', so it has no W to compare; {hint}."
            )
        W = resolve_weight_matrix(expect["W"], int(header["dim"]))
        if weight_fingerprint(W) != header["W_fingerprint"]:
            raise ValueError(f"{path} was built with a different HOLEF matrix W than the one given; {hint}.")


def _check_model(path: Path, header: Mapping[str, Any], expect: Mapping[str, Any], hint: str) -> None:
    name, fingerprint = expect.get("model_name"), expect.get("model_fingerprint")
    if expect.get("model") is not None:
        name, fingerprint = model_identity(expect["model"])
    if name is not None and header["model_name"] is not None and name != header["model_name"]:
        raise ValueError(f"{path} was built with model {header['model_name']!r}, not {name!r}; {hint}.")
    if (
        fingerprint is not None
        and header["model_fingerprint"] is not None
        and fingerprint != header["model_fingerprint"]
    ):
        raise ValueError(
            f"{path} was built with other weights of model {header['model_name']!r} than the ones given; {hint}."
        )
