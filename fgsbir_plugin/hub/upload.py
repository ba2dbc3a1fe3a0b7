"""Talking to the Hugging Face Hub: repo ids, the token, one commit per push, one sentence per failure.

The token comes from the caller, ``HF_TOKEN`` or the standard ``huggingface_hub`` login and is never
printed, logged or written: every message that could carry it passes through :func:`scrub`.
``huggingface_hub.HfApi`` and ``huggingface_hub.get_token`` are looked up on the module at call time,
so a test can stand in for the Hub by replacing them there.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import validate_repo_id as _hub_validate_repo_id

from .. import __version__

__all__ = [
    "PublishError",
    "validate_repo_id",
    "resolve_token",
    "token_if_any",
    "scrub",
    "upload_folder",
    "build_and_upload",
]


class PublishError(RuntimeError):
    """A push failed for a reason outside the user's input (network, Hub, permissions); one sentence."""


def validate_repo_id(repo_id: str) -> str:
    """Check that ``repo_id`` is ``owner/name`` with characters the Hub accepts; return it unchanged."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(
            f"repo id {repo_id!r} must have the form owner/name (your user or organisation, a slash, the repo "
            "name), e.g. my-lab/dssa-chairv2."
        )
    try:
        _hub_validate_repo_id(repo_id)
    except HFValidationError:
        raise ValueError(
            f"repo id {repo_id!r} is not a valid Hub name: use letters, digits, '-', '_' and '.', at most 96 "
            "characters, not starting or ending with '-' or '.', and no '--' or '..'."
        ) from None
    return repo_id


def resolve_token(token: str | None) -> str:
    """``token``, else the ``HF_TOKEN`` / stored login; PublishError saying how to log in when there is none."""
    token = token or huggingface_hub.get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token found: set HF_TOKEN to a token with write access or run `hf auth login`, "
            "or use --dry-run DIR to write the folder without uploading."
        )
    return token


def token_if_any() -> str | None:
    """The stored token, or None; a dry run uses it only to keep it out of the card."""
    try:
        return huggingface_hub.get_token()
    except Exception:  # a broken login must not stop a dry run, which needs no token
        return None


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _network_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
    ):
        # Optional: huggingface_hub talks through whichever HTTP client is installed, so each is probed.
        try:
            types.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def _explain_http(err: HfHubHTTPError, repo_id: str, kind: str, action: str) -> PublishError:
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


def explain(err: BaseException, repo_id: str, kind: str, action: str) -> PublishError:
    """Turn a huggingface_hub / transport exception into one sentence for the user."""
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
        return _explain_http(err, repo_id, kind, action)
    if isinstance(err, _network_error_types()):
        return PublishError(
            f"could not reach the Hugging Face Hub while {action} ({type(err).__name__}); check the network "
            "connection or proxy settings and try again, or use --dry-run DIR to write the folder only."
        )
    return PublishError(f"{action} failed: {type(err).__name__}: {err}")


def upload_folder(
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
    is only replaced when ``overwrite`` is set. ``api`` is an ``huggingface_hub.HfApi``-like object.
    """
    kind = repo_type if repo_type in ("dataset", "space") else "model"
    # The Hub asks which SDK runs a new Space; the search page is a Gradio app.
    space_args = {"space_sdk": "gradio"} if repo_type == "space" else {}
    api = api or huggingface_hub.HfApi(token=token, library_name="fgsbir-plugin", library_version=__version__)
    action = "creating the repo"
    try:
        api.create_repo(
            repo_id, repo_type=repo_type, private=private, exist_ok=True, token=token, **space_args
        )
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
    except (HfHubHTTPError, *_network_error_types()) as err:
        raise PublishError(scrub(str(explain(err, repo_id, kind, action)), [token])) from None
    return str(getattr(info, "commit_url", None) or info)


def build_and_upload(
    build: Callable[[Path, list[str | None]], Path],
    *,
    dry_run: str | os.PathLike | None,
    token: str | None,
    **upload_args,
) -> str:
    """Write the folder to publish with ``build(folder, secrets)`` (``secrets``: the token, which the folder
    must not contain): into ``dry_run``, touching no network, and return that folder; else into a temporary
    folder that :func:`upload_folder` publishes with ``upload_args``, and return the commit URL."""
    if dry_run is not None:
        return str(build(Path(dry_run), [token or token_if_any()]))
    token = resolve_token(token)
    with tempfile.TemporaryDirectory(prefix=f"fgsbir-push-{upload_args['repo_type']}-") as tmp:
        return upload_folder(build(Path(tmp) / "repo", [token]), token=token, **upload_args)
