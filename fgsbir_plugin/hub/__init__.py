"""Publishing to the Hugging Face Hub: ``fgsbir push`` (models) and ``fgsbir push-dataset``.

A pushed model loads back with ``import fgsbir_plugin; timm.create_model("hf-hub:org/name",
pretrained=True)``; a pushed dataset with ``datasets.load_dataset("org/name", "sketches")``.
"""

from __future__ import annotations

from .card import render_dataset_card, render_model_card
from .publish import (
    PublishError,
    RunFolder,
    build_dataset_folder,
    build_model_folder,
    push_dataset,
    push_model,
    read_run_folder,
    validate_repo_id,
)

__all__ = [
    "PublishError",
    "RunFolder",
    "build_dataset_folder",
    "build_model_folder",
    "push_dataset",
    "push_model",
    "read_run_folder",
    "render_dataset_card",
    "render_model_card",
    "validate_repo_id",
]
