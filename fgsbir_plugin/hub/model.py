"""Publish a trained run's model to the Hugging Face Hub (``fgsbir push``).

The folder uploaded for a model is exactly what timm reads back: ``config.json`` (architecture,
model_args, pretrained_cfg) and ``model.safetensors``, both written by ``timm.models.save_for_hf``
with safetensors only, plus ``README.md``, the model card. A HOLEF model's W is a parameter of
``model.distance``, so it is in the same state dict and the same file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch
from timm.models import save_for_hf

from ..embedding import embedding_dim
from ..model_io import MODEL_FILES, load_model
from ..run_folder import MODEL_CONFIG, RunFolder
from .model_card import render_model_card
from .staging import check_fresh_output, staged_output
from .upload import build_and_upload, scrub, validate_repo_id

__all__ = ["TrainedRun", "read_run_folder", "build_model_folder", "push_model"]

_WEIGHTS = "model.safetensors"  # the weights file of a timm model folder (one of model_io.MODEL_FILES)


@dataclass(frozen=True)
class TrainedRun:
    """What publishing reads from a run folder: where the model is, and the run's JSON records."""

    folder: RunFolder
    model_dir: Path
    run_config: dict
    evals: list[dict] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.folder.path


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}); fix it or rerun the command that wrote it."
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} must hold a JSON object, not {type(data).__name__}; rerun the command that wrote it."
        )
    return data


def read_run_folder(path: str | os.PathLike) -> TrainedRun:
    """Read a run folder written by ``fgsbir train`` (``model/``, ``run_config.json``, ``eval_*.json``).

    ``path`` may also be the run's ``model/`` folder itself; the records are then read from its parent
    (:meth:`RunFolder.resolve`).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} is not a folder; pass the run folder written by `fgsbir train` (e.g. runs/x)."
        )
    try:
        run, model_dir = RunFolder.resolve(path)
    except FileNotFoundError:  # no config.json anywhere: name what the model folder lacks, below
        run = RunFolder(path)
        model_dir = run.model_dir
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{run.path} is not a trained run folder: {model_dir} lacks {', '.join(missing)}; "
            "pass the folder written by `fgsbir train` (it holds model/config.json and model/model.safetensors)."
        )
    if not run.run_config_path.is_file():
        raise FileNotFoundError(
            f"{run.path} has no {RunFolder.RUN_CONFIG}, which the model card needs to state how the model was "
            "trained; pass the run folder written by `fgsbir train`."
        )
    run_config = run.read_run_config()
    evals = [_read_json(p) for p in run.eval_report_paths()]
    return TrainedRun(folder=run, model_dir=model_dir, run_config=run_config, evals=evals)


def _check_same_weights(run: TrainedRun, folder: Path) -> None:
    """ValueError unless ``folder``'s tensors are bit-identical to the run's (names, dtypes, values)."""
    original = safetensors.torch.load_file(str(run.model_dir / _WEIGHTS))
    written = safetensors.torch.load_file(str(folder / _WEIGHTS))
    same = original.keys() == written.keys() and all(
        original[k].dtype == written[k].dtype and torch.equal(original[k], written[k]) for k in original
    )
    if not same:
        raise ValueError(
            f"the weights in {run.model_dir} changed when the model was rebuilt (the architecture's code differs "
            "from the one that trained it); retrain or use the fgsbir-plugin version that wrote the run."
        )


def build_model_folder(
    run: str | os.PathLike | TrainedRun,
    out_dir: str | os.PathLike,
    *,
    repo_id: str,
    license: str = "other",
    dataset_repo_id: str | None = None,
    secrets: Iterable[str | None] = (),
) -> Path:
    """Write the folder a model push uploads: ``config.json``, ``model.safetensors``, ``README.md``.

    The model is loaded from the run and written again with ``timm.models.save_for_hf`` (safetensors
    only), then the written tensors are checked to be bit-identical to the run's. ``out_dir`` must
    not exist or be empty; the folder appears there complete or not at all. ``secrets`` are strings
    (the token) that must never appear in the card; any occurrence is replaced by ``***``.
    """
    validate_repo_id(repo_id)
    if dataset_repo_id is not None:
        validate_repo_id(dataset_repo_id)
    run = run if isinstance(run, TrainedRun) else read_run_folder(run)
    out_dir = check_fresh_output(out_dir)
    model = load_model(run.model_dir)  # checks the folder's checksums
    with staged_output(out_dir) as tmp:
        save_for_hf(model, str(tmp), safe_serialization=True)
        _check_same_weights(run, tmp)
        hf_config = _read_json(tmp / MODEL_CONFIG)
        if isinstance(hf_config.get("pretrained_cfg"), dict):
            # The trained weights' licence, as the card states it, not the architecture default's.
            hf_config["pretrained_cfg"]["license"] = license
            (tmp / MODEL_CONFIG).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        # timm's config.json records num_features (the trunk's channels) but not the embedding width.
        card_config = {"head_hidden_size": embedding_dim(model), **hf_config}
        card = render_model_card(
            repo_id=repo_id,
            hf_config=card_config,
            run_config=run.run_config,
            evals=run.evals,
            license=license,
            dataset_repo_id=dataset_repo_id,
        )
        (tmp / "README.md").write_text(scrub(card, secrets), encoding="utf-8")
    return out_dir


def push_model(
    run: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    overwrite: bool = False,
    license: str = "other",
    dataset_repo_id: str | None = None,
    dry_run: str | os.PathLike | None = None,
    token: str | None = None,
    api=None,
) -> str:
    """Publish a run's model to ``repo_id``; return the commit URL (or the dry-run folder).

    ``dry_run=DIR`` writes the folder that would be uploaded and touches no network. ``api`` is an
    ``huggingface_hub.HfApi``-like object (tests pass a stand-in).
    """
    validate_repo_id(repo_id)
    trained = read_run_folder(run)
    card_args = dict(repo_id=repo_id, license=license, dataset_repo_id=dataset_repo_id)
    return build_and_upload(
        lambda folder, secrets: build_model_folder(trained, folder, secrets=secrets, **card_args),
        dry_run=dry_run,
        token=token,
        repo_id=repo_id,
        repo_type="model",
        private=private,
        revision=revision,
        commit_message=commit_message or f"Upload {trained.path.name} with fgsbir push",
        overwrite=overwrite,
        marker=_WEIGHTS,
        # A pickled copy from an earlier push would sit beside the safetensors weights; drop it.
        delete_patterns=["*.bin", "*.pth"],
        api=api,
    )
