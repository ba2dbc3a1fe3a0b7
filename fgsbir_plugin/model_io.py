"""Save and load a trained model as a timm ``local-dir:`` folder (``config.json`` + ``model.safetensors``).

The folder is exactly what timm publishes to the Hugging Face Hub, so the same bytes load back
with ``timm.create_model("local-dir:<folder>", pretrained=True)`` or, once pushed,
``timm.create_model("hf-hub:<org>/<name>", pretrained=True)``. No pickle is involved.

:func:`save_model` adds ``checksums.json`` (the SHA-256 of both files), which timm ignores and
:func:`load_model` checks when it is there, so a damaged model folder is refused in one sentence
rather than loaded with wrong weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

from . import models  # noqa: F401  (the DSSA architectures must be registered before timm resolves them)
from ._common import atomic_dir, parked_dir, sha256_file, verify_sha256

__all__ = ["save_model", "load_model", "MODEL_FILES", "CHECKSUMS"]

MODEL_FILES = ("config.json", "model.safetensors")
CHECKSUMS = "checksums.json"
_FIX = "copy the model folder again from its source or retrain"


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
        digests = {name: sha256_file(tmp / name) for name in MODEL_FILES}
        (tmp / CHECKSUMS).write_text(json.dumps({"sha256": digests}, indent=1) + "\n", encoding="utf-8")
    return Path(directory)


def _verify(directory: Path) -> None:
    record = directory / CHECKSUMS
    if not record.is_file():
        return  # a folder from timm's save_for_hf or the Hub: no record to check against
    try:
        digests = json.loads(record.read_text(encoding="utf-8"))["sha256"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ValueError(f"{record} is damaged; {_FIX}.") from None
    if not isinstance(digests, dict) or not set(MODEL_FILES) <= set(digests):
        raise ValueError(f"{record} does not list the model's files; {_FIX}.")
    verify_sha256(directory, {k: digests[k] for k in MODEL_FILES}, record, _FIX)


def _architecture(directory: Path) -> str:
    try:
        return str(json.loads((directory / MODEL_FILES[0]).read_text(encoding="utf-8")).get("architecture"))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ValueError(f"{directory / MODEL_FILES[0]} is not a JSON object; {_FIX}.") from None


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
    _verify(directory)
    arch = _architecture(directory)
    try:
        model = timm.create_model(f"local-dir:{directory}", pretrained=True)
    except RuntimeError as err:
        text = str(err).strip()
        if "Unknown model" in text:
            raise ValueError(
                f"{directory} holds a `{arch}` model, which is not registered with timm; import the package "
                "that defines it (or install the fgsbir-plugin version that trained it) and retry."
            ) from None
        detail = [line.strip() for line in text.splitlines() if "size mismatch" in line or "key(s)" in line]
        if detail:
            raise ValueError(
                f"the weights in {directory / MODEL_FILES[1]} do not fit the `{arch}` architecture of "
                f"{directory / MODEL_FILES[0]} ({detail[0][:200]}); {_FIX}."
            ) from None
        raise
    except SafetensorError as err:
        raise ValueError(f"{directory / MODEL_FILES[1]} cannot be read ({err}); {_FIX}.") from None
    return model.to(device).eval()
