"""Gallery search with faiss: cosine, squared L2, and exact HOLEF as a maximum-inner-product search.

``GalleryIndex`` (:mod:`.index`) is the index; :mod:`.holef_mips` holds the HOLEF algebra,
:mod:`.faiss_params` the faiss side, :mod:`.photo_ids` the id mapping, :mod:`.index_file` the file
format, and :mod:`.knn` a pytorch-metric-learning ``knn_func``.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "GalleryIndex": ".index",
    "GalleryKNN": ".knn",
    "holef_gallery_vectors": ".holef_mips",
    "holef_query_vectors": ".holef_mips",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    # Lazy: a user of one part (the HOLEF algebra, the knn_func) need not pay for the others (faiss).
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
