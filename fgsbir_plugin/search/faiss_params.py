"""The faiss side of a GalleryIndex: metric names, index_factory specs, and their search parameters.

A GalleryIndex wraps one ``faiss.IndexIDMap2`` (the id mapping) around the index that
``faiss.index_factory`` builds from its spec. The helpers here build it, serialise it, and read or
set the parameters of the index inside: ``efSearch`` / ``efConstruction`` for HNSW, ``nprobe`` for
IVF. This module imports nothing heavy, so that the ``fgsbir`` command line can read the names
and defaults below while it parses its arguments.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

__all__ = [
    "METRICS",
    "SEARCH_PARAMS",
    "DEFAULT_EF_SEARCH",
    "DEFAULT_EF_CONSTRUCTION",
    "DEFAULT_NPROBE",
    "load_faiss",
    "is_positive_int",
    "check_spec",
    "padded_dim",
    "build_index",
    "serialize",
    "deserialize",
    "is_hnsw",
    "ivf_of",
    "default_search_params",
    "set_search_param",
    "min_training_points",
]

METRICS = ("cosine", "l2", "holef")
SEARCH_PARAMS = ("efSearch", "efConstruction", "nprobe")
DEFAULT_EF_SEARCH = 128
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_NPROBE = 16


def load_faiss():
    """The ``faiss`` module, or an ImportError that says how to install it."""
    try:
        # Lazy: faiss is the optional `search` extra, and the CLI imports this module at start-up.
        import faiss
    except ImportError as err:  # pragma: no cover - faiss is an optional extra
        raise ImportError(
            "gallery search needs faiss; install it with `pip install fgsbir-plugin[search]` (faiss-cpu)."
        ) from err
    return faiss


def is_positive_int(value: Any) -> bool:
    """True for an int (Python or numpy, not bool) of at least 1."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def check_spec(spec: Any) -> None:
    """ValueError unless ``spec`` is a non-empty index_factory string without ``IDMap``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"spec must be a faiss index_factory string such as 'Flat' or 'HNSW32', got {spec!r}."
        )
    if spec.replace(" ", "").upper().startswith("IDMAP"):
        raise ValueError(f"spec {spec!r} must leave out IDMap: GalleryIndex adds the id mapping itself.")


def padded_dim(spec: str, dim: int) -> int:
    """The index dimension: ``dim`` rounded up so every ``PQm`` in the spec divides it (zeros pad)."""
    step = math.lcm(*(int(m) for m in re.findall(r"PQ(\d+)", spec)))
    return -(-dim // step) * step


def faiss_reason(err: BaseException) -> str:
    """faiss's own sentence from one of its C++ errors, without the function signature and source line."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    found = re.search(r"\.(?:cpp|h):\d+: (?:Error: '.*?' failed: )?(.*)$", text)
    return (found.group(1) if found else text).rstrip(".")


def build_index(spec: str, index_dim: int, euclidean: bool, vectors: str | None = None):
    """An empty ``IndexIDMap2`` around ``index_factory(index_dim, spec)``, searching by squared L2
    (``euclidean``) or by inner product; ValueError naming faiss's reason when the spec is refused.
    ``vectors`` describes the indexed vectors in that message (default: "{index_dim}-d vectors")."""
    faiss = load_faiss()
    metric = faiss.METRIC_L2 if euclidean else faiss.METRIC_INNER_PRODUCT
    try:
        inner = faiss.index_factory(index_dim, spec, metric)
    except RuntimeError as err:
        raise ValueError(
            f"faiss cannot build index spec {spec!r} for {vectors or f'{index_dim}-d vectors'}: "
            f"{faiss_reason(err)}; see the faiss index_factory documentation."
        ) from None
    return faiss.IndexIDMap2(inner)


def serialize(index) -> bytes:
    return load_faiss().serialize_index(index).tobytes()


def deserialize(data, index_dim: int):
    """The ``IndexIDMap2`` of ``index_dim`` dimensions serialised in ``data`` (a uint8 numpy array),
    or None when ``data`` holds any other index."""
    faiss = load_faiss()
    index = faiss.deserialize_index(data)
    if not isinstance(index, faiss.IndexIDMap2) or index.d != index_dim:
        return None
    return index


def _inner(index):
    return load_faiss().downcast_index(index.index)


def is_hnsw(index) -> bool:
    return hasattr(_inner(index), "hnsw")


def ivf_of(index):
    """The IVF index inside ``index``, or None."""
    try:
        return load_faiss().extract_index_ivf(index.index)
    except RuntimeError:
        return None


def default_search_params(index) -> dict[str, int]:
    """The parameters a new index starts with: HNSW's efSearch/efConstruction, IVF's nprobe (<= nlist)."""
    defaults: dict[str, int] = {}
    if is_hnsw(index):
        defaults.update(efSearch=DEFAULT_EF_SEARCH, efConstruction=DEFAULT_EF_CONSTRUCTION)
    ivf = ivf_of(index)
    if ivf is not None:
        defaults["nprobe"] = min(DEFAULT_NPROBE, ivf.nlist)
    return defaults


def set_search_param(index, spec: str, name: str, value: Any) -> int:
    """Set one search parameter on ``index`` (built from ``spec``); returns the value set, as int."""
    if name not in SEARCH_PARAMS:
        raise TypeError(f"unknown search parameter {name!r}; use one of {', '.join(SEARCH_PARAMS)}.")
    if not is_positive_int(value):
        raise ValueError(f"search parameter {name} must be a positive integer, got {value!r}.")
    value = int(value)
    if name in ("efSearch", "efConstruction") and not is_hnsw(index):
        raise ValueError(f"{name} applies to HNSW specs only, and this index's spec is {spec!r}.")
    if name == "nprobe" and ivf_of(index) is None:
        raise ValueError(f"nprobe applies to IVF specs only, and this index's spec is {spec!r}.")
    if name == "efConstruction":
        _inner(index).hnsw.efConstruction = value
    else:
        load_faiss().ParameterSpace().set_index_parameter(index, name, value)
    return value


def min_training_points(index) -> int:
    """The fewest vectors faiss accepts for ``train()`` (0 when the index needs no training)."""
    if index.is_trained:
        return 0
    need = 1
    ivf = ivf_of(index)
    if ivf is not None:
        need = max(need, int(ivf.nlist))
    pq = getattr(_inner(index), "pq", None)
    if pq is not None:
        need = max(need, int(pq.ksub))
    return need
