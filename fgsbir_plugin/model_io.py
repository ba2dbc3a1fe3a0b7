"""Save and load a trained model as a timm ``local-dir:`` folder (``config.json`` + ``model.safetensors``).

The folder is exactly what timm publishes to the Hugging Face Hub, so the same bytes load back
with ``timm.create_model("local-dir:<folder>", pretrained=True)`` or, once pushed,
``timm.create_model("hf-hub:<org>/<name>", pretrained=True)``. No pickle is involved.
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

from . import models  # noqa: F401  (the DSSA architectures must be registered before timm resolves them)
from ._common import atomic_dir, parked_dir

__all__ = ["save_model", "load_model", "MODEL_FILES"]

MODEL_FILES = ("config.json", "model.safetensors")


def save_model(model: torch.nn.Module, directory: str | os.PathLike, model_args: dict | None = None) -> Path:
    """Write ``model`` to ``directory`` as ``config.json`` + ``model.safetensors``, atomically.

    The folder is written beside its destination under a temporary name and renamed into place,
    so an interrupted save never leaves a half-written model where a complete one is expected.
    ``model_args`` overrides or adds constructor arguments recorded in ``config.json``.
    """
    with atomic_dir(directory) as tmp:
        # Tensors are made contiguous (channels_last weights, views) because safetensors stores dense buffers.
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / MODEL_FILES[1]))
        save_config_for_hf(model, str(tmp / MODEL_FILES[0]), model_args=model_args)
    return Path(directory)


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a folder written by :func:`save_model` (or ``timm.models.save_for_hf``), in eval mode."""
    directory = Path(directory)
    if not directory.exists() and parked_dir(directory).is_dir():
        directory = parked_dir(directory)  # a save was interrupted after parking the previous, complete model
    missing = [name for name in MODEL_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a saved model folder (missing {', '.join(missing)}); "
            "pass the folder written by `fgsbir train` (its `model/` subfolder) or by save_model()."
        )
    model = timm.create_model(f"local-dir:{directory}", pretrained=True)
    return model.to(device).eval()
