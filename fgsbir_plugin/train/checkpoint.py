"""Resumable training state as safetensors + JSON, written atomically; no pickle anywhere.

``state/`` in a run folder holds:

- ``model.safetensors``: the *current* weights of every trained module (the model, and any loss
  parameters under ``loss.``), not the best ones (those are in ``model/``);
- ``train_state.safetensors``: every tensor of the optimiser, gradient scaler and RNG states;
- ``train_state.json``: the rest of those states with each tensor replaced by a reference into the
  safetensors file, plus progress (epoch, step, position in the epoch), the best validation metric
  and the configuration.

Nested Python state (a torch optimiser ``state_dict`` with integer keys, tuples, numpy RNG arrays)
is flattened by :func:`flatten_state` into named tensors plus a JSON skeleton that
:func:`unflatten_state` turns back into the identical structure.

The folder is written under a temporary name and swapped in by renames; if the process dies
between the two renames, :func:`load_training_state` falls back to the previous folder, so a kill
at any moment leaves a loadable state. ``train_state.json`` records the SHA-256 of both safetensors
files and of its own state skeleton; loading checks them first, so a damaged or hand-edited state is
refused with one sentence instead of resuming from wrong numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._common import atomic_dir, parked_dir, sha256_file, verify_sha256

__all__ = [
    "flatten_state",
    "unflatten_state",
    "capture_rng_state",
    "restore_rng_state",
    "rng_state_to_json",
    "rng_state_from_json",
    "save_training_state",
    "load_training_state",
    "has_training_state",
]

_MODEL_FILE = "model.safetensors"
_TENSORS_FILE = "train_state.safetensors"
_JSON_FILE = "train_state.json"
_FORMAT = "fgsbir-train-state/2"  # /2: with checksums
_FIX = "resume from a backup of the run folder or start a new run"


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split ``obj`` into (named CPU tensors, a JSON-serialisable skeleton referencing them).

    Handles dicts (any int/str keys, order kept), lists, tuples, tensors, numpy arrays and scalars,
    and JSON scalars; anything else raises TypeError naming its path.
    """
    tensors: dict[str, torch.Tensor] = {}

    def enc(o: Any, path: str) -> Any:
        if isinstance(o, torch.Tensor):
            tensors[path] = o.detach().to("cpu").clone().contiguous()
            return {"__tensor__": path}
        if isinstance(o, np.ndarray):
            # safetensors has no uint32; the numpy RNG key is uint32, so widen and remember the dtype.
            tensors[path] = torch.from_numpy(np.ascontiguousarray(o).astype(np.int64))
            return {"__ndarray__": path, "dtype": str(o.dtype)}
        if isinstance(o, dict):
            for k in o:
                if not isinstance(k, str | int) or isinstance(k, bool):
                    raise TypeError(f"state key {k!r} at {path or '<root>'} is not a str or int.")
            return {"__dict__": [[k, enc(v, f"{path}.{k}" if path else str(k))] for k, v in o.items()]}
        if isinstance(o, tuple):
            return {"__tuple__": [enc(v, f"{path}.{i}") for i, v in enumerate(o)]}
        if isinstance(o, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(o)]
        if isinstance(o, np.generic):
            return o.item()
        if o is None or isinstance(o, bool | int | float | str):
            return o
        raise TypeError(f"cannot store {type(o).__name__} at {path or '<root>'} in a training state.")

    skeleton = enc(obj, prefix)
    return tensors, skeleton


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            return tensors[skeleton["__ndarray__"]].numpy().astype(skeleton["dtype"])
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        raise ValueError(
            f"unrecognised training-state entry {sorted(skeleton)}; the state folder is corrupt."
        )
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def capture_rng_state() -> dict[str, Any]:
    """The Python, numpy and torch (CPU and, when present, CUDA) random states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured (CUDA only when both sides have it)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].to(torch.uint8))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in cuda])


def rng_state_to_json(rng: dict[str, Any]) -> dict[str, Any]:
    """A :func:`capture_rng_state` result as plain JSON data (to gather it from every DDP process)."""
    tensors, skeleton = flatten_state(rng)
    return {
        "skeleton": skeleton,
        "tensors": {k: v.tolist() for k, v in tensors.items()},
        "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in tensors.items()},
    }


def rng_state_from_json(data: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`rng_state_to_json`."""
    tensors = {
        k: torch.tensor(v, dtype=getattr(torch, data["dtypes"][k])) for k, v in data["tensors"].items()
    }
    return unflatten_state(data["skeleton"], tensors)


def _skeleton_digest(skeleton: Any) -> str:
    return hashlib.sha256(json.dumps(skeleton, sort_keys=True).encode("utf-8")).hexdigest()


def save_training_state(
    directory: str | os.PathLike, model_state: dict[str, torch.Tensor], state: dict
) -> Path:
    """Write ``state/`` atomically: ``model_state`` (name -> tensor) and a nested ``state`` dict."""
    with atomic_dir(directory) as tmp:
        weights = {k: v.detach().to("cpu").clone().contiguous() for k, v in model_state.items()}
        save_file(weights, str(tmp / _MODEL_FILE))
        tensors, skeleton = flatten_state(state)
        save_file(tensors, str(tmp / _TENSORS_FILE))
        payload = {
            "format": _FORMAT,
            "sha256": {name: sha256_file(tmp / name) for name in (_MODEL_FILE, _TENSORS_FILE)},
            "state_sha256": _skeleton_digest(skeleton),
            "state": skeleton,
        }
        (tmp / _JSON_FILE).write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return Path(directory)


def _complete(directory: Path) -> bool:
    return all((directory / n).is_file() for n in (_MODEL_FILE, _TENSORS_FILE, _JSON_FILE))


def has_training_state(directory: str | os.PathLike) -> bool:
    """True when ``directory`` (or the previous copy kept during a swap) holds a complete state."""
    directory = Path(directory)
    return _complete(directory) or _complete(parked_dir(directory))


def _read_payload(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); {_FIX}.") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} has format {found!r}, expected {_FORMAT!r}; {_FIX}.")
    digests = payload.get("sha256")
    if not isinstance(digests, dict) or set(digests) != {_MODEL_FILE, _TENSORS_FILE}:
        raise ValueError(f"{path} does not record the checksums of its files; {_FIX}.")
    if payload.get("state_sha256") != _skeleton_digest(payload.get("state")):
        raise ValueError(
            f"{path} does not match its own checksum (the file is damaged or was edited); {_FIX}."
        )
    return payload


def load_training_state(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read ``state/`` back: (model_state, state). Falls back to the copy kept by an interrupted swap.

    Every file is checked against the checksums recorded when it was written; a mismatch or a
    damaged file is a ValueError of one sentence naming the file.
    """
    directory = Path(directory)
    if not _complete(directory):
        old = parked_dir(directory)
        if not _complete(old):
            raise FileNotFoundError(
                f"no training state in {directory}; --resume needs a run folder written by `fgsbir train`."
            )
        directory = old
    record = directory / _JSON_FILE
    payload = _read_payload(record)
    verify_sha256(directory, payload["sha256"], record, _FIX)
    try:
        tensors = load_file(str(directory / _TENSORS_FILE))
        model_state = load_file(str(directory / _MODEL_FILE))
        state = unflatten_state(payload["state"], tensors)
    except (SafetensorError, KeyError, TypeError) as err:
        raise ValueError(f"the training state in {directory} cannot be read ({err}); {_FIX}.") from None
    return model_state, state
