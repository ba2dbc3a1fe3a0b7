"""Publishing to the Hugging Face Hub: ``fgsbir push`` (models) and ``fgsbir push-dataset``.

A pushed model loads back with ``import fgsbir_plugin; timm.create_model("hf-hub:org/name",
pretrained=True)``; a pushed dataset with ``datasets.load_dataset("org/name", "sketches")``.

Modules: ``model`` (a run's model folder and its push), ``dataset`` (a converted dataset's folder
and its push), ``space`` (a run's model, a gallery and the search page as a Space), ``model_card`` / ``dataset_card`` / ``card`` (the README.md of each), ``staging``
(the local folder a push uploads, which ``--dry-run`` keeps), ``upload`` (the Hub API, the token,
one sentence per failure), ``cli`` (the sub-commands).
"""

from __future__ import annotations

import importlib

from .model import TrainedRun, build_model_folder, push_model, read_run_folder
from .model_card import render_model_card
from .upload import PublishError, validate_repo_id

# The dataset side imports `datasets`, which is slow to import and which pushing a model does not
# need, and the Space side imports faiss (the optional search extra); these names are imported on first use.
_LAZY = {
    "build_space_folder": "fgsbir_plugin.hub.space",
    "push_space": "fgsbir_plugin.hub.space",
    "DATASET_CONFIGS": "fgsbir_plugin.hub.dataset",
    "build_dataset_folder": "fgsbir_plugin.hub.dataset",
    "push_dataset": "fgsbir_plugin.hub.dataset",
    "push_to_hub": "fgsbir_plugin.hub.dataset",
    "render_dataset_card": "fgsbir_plugin.hub.dataset_card",
}

__all__ = [
    "PublishError",
    "TrainedRun",
    "build_model_folder",
    "push_model",
    "read_run_folder",
    "render_model_card",
    "validate_repo_id",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
