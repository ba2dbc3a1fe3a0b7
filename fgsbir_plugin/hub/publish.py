"""Publish a trained run (and, optionally, a converted dataset) to the Hugging Face Hub.

The folder uploaded for a model is exactly what timm reads back: ``config.json`` (architecture,
model_args, pretrained_cfg) and ``model.safetensors``, both written by ``timm.models.save_for_hf``
with safetensors only, plus ``README.md``, the model card. A HOLEF model's W is a parameter of
``model.distance``, so it is in the same state dict and the same file.

Every push is built as a local folder first; ``dry_run=DIR`` stops there and leaves that folder,
so what a dry run shows is byte for byte what a real push uploads. The token comes from
``HF_TOKEN`` or the standard ``huggingface_hub`` login and is never printed, logged or written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PublishError",
    "RunFolder",
    "read_run_folder",
    "validate_repo_id",
    "build_model_folder",
    "push_model",
    "build_dataset_folder",
    "push_dataset",
    "DATASET_CONFIGS",
]

# The two configurations of a converted dataset, each a DatasetDict with the same split names.
DATASET_CONFIGS = ("sketches", "photos")


class PublishError(RuntimeError):
    """A push failed for a reason outside the user's input (network, Hub, permissions); one sentence."""


@dataclass(frozen=True)
class RunFolder:
    """What a run folder holds for publishing: the model folder and the run's JSON records."""

    path: Path
    model_dir: Path
    run_config: dict
    evals: list[dict] = field(default_factory=list)


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


def read_run_folder(path: str | os.PathLike) -> RunFolder:
    """Read a run folder written by ``fgsbir train`` (``model/``, ``run_config.json``, ``eval_*.json``).

    ``path`` may also be the run's ``model/`` folder itself; the records are then read from its parent.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} is not a folder; pass the run folder written by `fgsbir train` (e.g. runs/x)."
        )
    if (path / "config.json").is_file() and not (path / "model").is_dir():
        path = path.parent
    model_dir = path / "model"
    missing = [name for name in ("config.json", "model.safetensors") if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a trained run folder: {model_dir} lacks {', '.join(missing)}; "
            "pass the folder written by `fgsbir train` (it holds model/config.json and model/model.safetensors)."
        )
    if not (path / "run_config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no run_config.json, which the model card needs to state how the model was trained; "
            "pass the run folder written by `fgsbir train`."
        )
    run_config = _read_json(path / "run_config.json")
    evals = [_read_json(p) for p in sorted(path.glob("eval_*.json"))]
    return RunFolder(path=path, model_dir=model_dir, run_config=run_config, evals=evals)


def validate_repo_id(repo_id: str) -> str:
    """Check that ``repo_id`` is ``owner/name`` with characters the Hub accepts; return it unchanged."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as _validate

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(
            f"repo id {repo_id!r} must have the form owner/name (your user or organisation, a slash, the repo "
            "name), e.g. my-lab/dssa-chairv2."
        )
    try:
        _validate(repo_id)
    except HFValidationError:
        raise ValueError(
            f"repo id {repo_id!r} is not a valid Hub name: use letters, digits, '-', '_' and '.', at most 96 "
            "characters, not starting or ending with '-' or '.', and no '--' or '..'."
        ) from None
    return repo_id


def _fresh_output(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir} already exists and is not an empty folder; pass a new --dry-run folder so nothing is overwritten."
        )


def _place(tmp: Path, out_dir: Path) -> Path:
    """Move the finished folder ``tmp`` to ``out_dir`` in one rename (``out_dir`` absent or empty)."""
    if out_dir.exists():
        out_dir.rmdir()
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the result is an ordinary folder
    os.replace(tmp, out_dir)
    return out_dir


def _scrub(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _load_for_export(model_dir: Path):
    from ..model_io import load_model

    try:
        return load_model(model_dir)
    except RuntimeError as err:
        # timm raises RuntimeError("Unknown model (...)") when the architecture is not registered.
        if "Unknown model" not in str(err):
            raise
        arch = _read_json(model_dir / "config.json").get("architecture", "?")
        raise ValueError(
            f"{model_dir} holds a `{arch}` model, which is not registered with timm; import the package that "
            "defines it (or install the fgsbir-plugin version that trained it) and retry."
        ) from None


def build_model_folder(
    run: str | os.PathLike | RunFolder,
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
    import safetensors.torch
    import torch
    from timm.models import save_for_hf

    from .card import render_model_card

    validate_repo_id(repo_id)
    if dataset_repo_id is not None:
        validate_repo_id(dataset_repo_id)
    run = run if isinstance(run, RunFolder) else read_run_folder(run)
    out_dir = Path(out_dir)
    _fresh_output(out_dir)
    model = _load_for_export(run.model_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_for_hf(model, str(tmp), safe_serialization=True)
        original = safetensors.torch.load_file(str(run.model_dir / "model.safetensors"))
        written = safetensors.torch.load_file(str(tmp / "model.safetensors"))
        same = original.keys() == written.keys() and all(
            original[k].dtype == written[k].dtype and torch.equal(original[k], written[k]) for k in original
        )
        if not same:
            raise ValueError(
                f"the weights in {run.model_dir} changed when the model was rebuilt (the architecture's code differs "
                "from the one that trained it); retrain or use the fgsbir-plugin version that wrote the run."
            )
        hf_config = _read_json(tmp / "config.json")
        card = render_model_card(
            repo_id=repo_id,
            hf_config=hf_config,
            run_config=run.run_config,
            evals=run.evals,
            license=license,
            dataset_repo_id=dataset_repo_id,
        )
        (tmp / "README.md").write_text(_scrub(card, secrets), encoding="utf-8")
        return _place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# ---------------------------------------------------------------------------------------------
# Talking to the Hub: one clear sentence per failure, never the token.


def _resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token found: set HF_TOKEN to a token with write access or run `hf auth login`, "
            "or use --dry-run DIR to write the folder without uploading."
        )
    return token


def _network_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
    ):
        try:
            types.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def _explain(err: BaseException, repo_id: str, kind: str, action: str) -> PublishError:
    """Turn a huggingface_hub / transport exception into one sentence for the user."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    if isinstance(err, OfflineModeIsEnabled):
        return PublishError(
            "HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it, or use --dry-run DIR to write the folder only."
        )
    if isinstance(err, RepositoryNotFoundError):
        return PublishError(
            f"the {kind} repo {repo_id} was not found or your token cannot see it; check the owner part of "
            "--repo-id and that the token belongs to a user with access."
        )
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            return PublishError(
                f"the Hub rejected your token while {action} (401 Unauthorized); log in again with "
                "`hf auth login` or set HF_TOKEN to a valid token."
            )
        if status == 403:
            return PublishError(
                f"your token may not write to {repo_id} (403 Forbidden): the name belongs to a user or organisation "
                "you cannot write to, or the token is read-only; use a write token or a repo id in your own namespace."
            )
        if status == 409:
            return PublishError(
                f"the name {repo_id} clashes with an existing {kind} repo or an operation in progress (409 Conflict); "
                "choose another --repo-id or retry in a minute."
            )
        detail = getattr(err, "server_message", None) or "no detail given"
        return PublishError(f"the Hub answered HTTP {status} while {action} for {repo_id}: {detail}.")
    if isinstance(err, _network_error_types()):
        return PublishError(
            f"could not reach the Hugging Face Hub while {action} ({type(err).__name__}); check the network "
            "connection or proxy settings and try again, or use --dry-run DIR to write the folder only."
        )
    return PublishError(f"{action} failed: {type(err).__name__}: {err}")


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError, *_network_error_types())


def _upload(
    folder: Path,
    *,
    repo_id: str,
    repo_type: str,
    token: str,
    private: bool,
    revision: str | None,
    commit_message: str,
    overwrite: bool,
    marker: str,
    delete_patterns: list[str] | None,
    api=None,
) -> str:
    """Create the repo if needed and upload ``folder`` as one commit; return the commit URL.

    ``marker`` is a file whose presence means the repo already holds a published artefact, which
    is only replaced when ``overwrite`` is set.
    """
    from huggingface_hub import HfApi

    from .. import __version__

    kind = "dataset" if repo_type == "dataset" else "model"
    api = api or HfApi(token=token, library_name="fgsbir-plugin", library_version=__version__)
    action = "creating the repo"
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, token=token)
        action = "reading the repo"
        if private and not api.repo_info(repo_id, repo_type=repo_type, token=token).private:
            raise PublishError(
                f"{repo_id} already exists and is public, and --private does not change an existing repo's "
                "visibility; make it private on the Hub first, or drop --private."
            )
        if revision:
            action = f"creating the branch {revision}"
            api.create_branch(repo_id, repo_type=repo_type, branch=revision, exist_ok=True, token=token)
        action = "checking for an earlier upload"
        if not overwrite and api.file_exists(
            repo_id, marker, repo_type=repo_type, revision=revision, token=token
        ):
            where = f" on {revision}" if revision else ""
            raise PublishError(
                f"{repo_id} already holds a published {kind}{where}; pass --overwrite to push a new commit over it "
                "(the old one stays in the repo's history), or choose another --repo-id."
            )
        action = "uploading"
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type=repo_type,
            folder_path=str(folder),
            revision=revision,
            commit_message=commit_message,
            delete_patterns=delete_patterns,
            token=token,
        )
    except PublishError:
        raise
    except _hub_errors() as err:
        raise PublishError(_scrub(str(_explain(err, repo_id, kind, action)), [token])) from None
    return str(getattr(info, "commit_url", None) or info)


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
    run_folder = read_run_folder(run)
    if dry_run is not None:
        secrets = [token or _token_if_any()]
        return str(
            build_model_folder(
                run_folder,
                dry_run,
                repo_id=repo_id,
                license=license,
                dataset_repo_id=dataset_repo_id,
                secrets=secrets,
            )
        )
    token = _resolve_token(token)
    with tempfile.TemporaryDirectory(prefix="fgsbir-push-") as tmp:
        folder = build_model_folder(
            run_folder,
            Path(tmp) / "repo",
            repo_id=repo_id,
            license=license,
            dataset_repo_id=dataset_repo_id,
            secrets=[token],
        )
        return _upload(
            folder,
            repo_id=repo_id,
            repo_type="model",
            token=token,
            private=private,
            revision=revision,
            commit_message=commit_message or f"Upload {run_folder.path.name} with fgsbir push",
            overwrite=overwrite,
            marker="model.safetensors",
            # A pickled copy from an earlier push would sit beside the safetensors weights; drop it.
            delete_patterns=["*.bin", "*.pth"],
            api=api,
        )


def _token_if_any() -> str | None:
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:  # a broken login must not stop a dry run, which needs no token
        return None


# ---------------------------------------------------------------------------------------------
# Datasets: the Parquet layout is fgsbir_plugin.data.export's; this adds the card and the upload.


def _data_module(name: str):
    """``fgsbir_plugin.data.<name>``, imported on use so that publishing models never needs the readers."""
    import importlib

    try:
        return importlib.import_module(f"fgsbir_plugin.data.{name}")
    except ImportError as err:
        raise PublishError(
            f"publishing a dataset needs fgsbir_plugin.data.{name}, which this installation cannot import ({err}); "
            "install the complete fgsbir-plugin package."
        ) from None


def _load_converted(name: str, data_dir, **reader_kwargs) -> dict:
    """``{"sketches": DatasetDict, "photos": DatasetDict}`` of a dataset, read once through load_fgsbir."""
    sketches, photos = _data_module("load").load_fgsbir_pair(name, data_dir, **reader_kwargs)
    return {"sketches": sketches, "photos": photos}


def _describe(feature) -> str:
    from datasets import Image, Value

    if isinstance(feature, Image):
        return "image (the encoded file's bytes, embedded in the Parquet file)"
    if isinstance(feature, Value):
        return feature.dtype
    return type(feature).__name__


def _configs_of(card_path: Path) -> list:
    """The ``configs`` YAML that save_parquet wrote into its README.md (the layout's one description)."""
    import yaml

    text = card_path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError(f"{card_path} has no YAML front matter; the dataset export changed its layout.")
    return yaml.safe_load(text.split("---\n", 2)[1])["configs"]


def build_dataset_folder(
    dicts: Mapping,
    out_dir: str | os.PathLike,
    *,
    repo_id: str,
    name: str,
    license: str = "other",
    source: str | None = None,
) -> Path:
    """Write the folder a dataset push uploads: ``{sketches,photos}/{split}-*.parquet`` and ``README.md``.

    ``dicts`` maps ``"sketches"`` and ``"photos"`` to ``datasets.DatasetDict`` objects with the row
    schema of ``fgsbir_plugin/data/schema.py``. The Parquet files (images embedded) are written by
    ``fgsbir_plugin.data.export.save_parquet``; its README.md is replaced by the full dataset card,
    which keeps the ``configs`` YAML so ``datasets.load_dataset(repo_or_folder, "sketches")`` works.
    """
    from .card import render_dataset_card

    validate_repo_id(repo_id)
    if set(dicts) != set(DATASET_CONFIGS):
        raise ValueError(
            f"a dataset to publish needs exactly the configurations {list(DATASET_CONFIGS)}, got {sorted(dicts)}."
        )
    if set(dicts["sketches"]) != set(dicts["photos"]):
        raise ValueError(
            f"sketch splits {sorted(dicts['sketches'])} and photo splits {sorted(dicts['photos'])} differ; "
            "every split needs both its sketches and its gallery."
        )
    save_parquet = _data_module("export").save_parquet
    out_dir = Path(out_dir)
    _fresh_output(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        folder = save_parquet(dicts["sketches"], dicts["photos"], tmp / "repo", title=name)
        sizes = {c: {split: len(ds) for split, ds in dicts[c].items()} for c in DATASET_CONFIGS}
        schemas = {
            c: {col: _describe(f) for col, f in next(iter(dicts[c].values())).features.items()}
            for c in DATASET_CONFIGS
        }
        card = render_dataset_card(
            repo_id=repo_id,
            name=name,
            split_sizes=sizes,
            schemas=schemas,
            configs=_configs_of(folder / "README.md"),
            license=license,
            source=source,
        )
        (folder / "README.md").write_text(card, encoding="utf-8")
        return _place(folder, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def push_dataset(
    name: str,
    repo_id: str,
    *,
    data_dir: str | os.PathLike | None = None,
    dicts: Mapping | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    overwrite: bool = False,
    license: str = "other",
    source: str | None = None,
    dry_run: str | os.PathLike | None = None,
    token: str | None = None,
    api=None,
    **reader_kwargs,
) -> str:
    """Publish a converted dataset as Parquet with embedded images; return the commit URL (or dry-run folder).

    The dataset is read with ``load_fgsbir`` (``name``, ``data_dir``, ``reader_kwargs``) unless
    ``dicts`` (``{"sketches": DatasetDict, "photos": DatasetDict}``) is given. Only publish data you
    have the right to redistribute.
    """
    validate_repo_id(repo_id)
    if dry_run is None:
        token = _resolve_token(token)  # before the (possibly long) read, so a missing token fails fast
    if dicts is None:
        dicts = _load_converted(name, data_dir, **reader_kwargs)
    card_args = dict(repo_id=repo_id, name=name, license=license, source=source)
    if dry_run is not None:
        return str(build_dataset_folder(dicts, dry_run, **card_args))
    with tempfile.TemporaryDirectory(prefix="fgsbir-push-dataset-") as tmp:
        folder = build_dataset_folder(dicts, Path(tmp) / "repo", **card_args)
        return _upload(
            folder,
            repo_id=repo_id,
            repo_type="dataset",
            token=token,
            private=private,
            revision=revision,
            commit_message=commit_message or f"Upload {name} with fgsbir push-dataset",
            overwrite=overwrite,
            marker="README.md",
            # Files of an earlier upload (other splits, other shard names) would match the same globs.
            delete_patterns=[f"{config}/*.parquet" for config in DATASET_CONFIGS],
            api=api,
        )
