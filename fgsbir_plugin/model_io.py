"""Save and load a trained model as a timm ``local-dir:`` folder (``config.json`` + ``model.safetensors``).

The folder is exactly what timm publishes to the Hugging Face Hub, so the same bytes load back
with ``timm.create_model("local-dir:<folder>", pretrained=True)`` or, once pushed,
``timm.create_model("hf-hub:<org>/<name>", pretrained=True)``. No pickle is involved.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

__all__ = ["save_model", "load_model", "MODEL_FILES"]

MODEL_FILES = ("config.json", "model.safetensors")


def save_model(model: torch.nn.Module, directory: str | os.PathLike, model_args: dict | None = None) -> Path:
    """Write ``model`` to ``directory`` as ``config.json`` + ``model.safetensors``, atomically.

    The folder is written beside its destination under a temporary name and renamed into place,
    so an interrupted save never leaves a half-written model where a complete one is expected.
    ``model_args`` overrides or adds constructor arguments recorded in ``config.json``.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    old = _previous(directory)
    if old.exists() and not directory.exists():
        os.replace(old, directory)  # an earlier save was interrupted between its two renames
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        # Tensors are made contiguous (channels_last weights, views) because safetensors stores dense buffers.
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / MODEL_FILES[1]))
        save_config_for_hf(model, str(tmp / MODEL_FILES[0]), model_args=model_args)
        if directory.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return directory


def _previous(directory: Path) -> Path:
    """Where save_model parks the previous model folder while it renames the new one into place."""
    return directory.with_name(f".{directory.name}.old")


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a folder written by :func:`save_model` (or ``timm.models.save_for_hf``), in eval mode."""
    directory = Path(directory)
    if not directory.exists() and _previous(directory).is_dir():
        directory = _previous(directory)  # a save was interrupted after parking the previous, complete model
    missing = [name for name in MODEL_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a saved model folder (missing {', '.join(missing)}); "
            "pass the folder written by `fgsbir train` (its `model/` subfolder) or by save_model()."
        )
    import fgsbir_plugin  # noqa: F401  (the DSSA architectures must be registered before timm resolves them)

    model = timm.create_model(f"local-dir:{directory}", pretrained=True)
    return model.to(device).eval()
