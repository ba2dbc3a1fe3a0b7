"""Small helpers shared by every module: where the real data lives, atomic writes, fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

__all__ = [
    "default_data_dir",
    "atomic_path",
    "atomic_dir",
    "parked_dir",
    "atomic_write_bytes",
    "tensor_fingerprint",
    "sha256_file",
    "verify_sha256",
    "save_checked_tensors",
    "load_checked_tensors",
]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path | None:
    """The folder holding the real FG-SBIR datasets, or None when there is none.

    ``$FGSBIR_DATA`` wins; otherwise ``../shared/data`` next to the project checkout.
    """
    env = os.environ.get("FGSBIR_DATA")
    if env:
        return Path(env)
    candidate = _REPO_ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    If the body raises, the temporary file is removed and ``path`` is left as it was, so a
    reader never sees a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes it owner-only; give it an ordinary file's mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def parked_dir(directory: str | os.PathLike) -> Path:
    """Where :func:`atomic_dir` parks the previous ``directory`` while it renames the new one into place.

    A process killed between those two renames leaves only this folder, complete; readers fall
    back to it, and the next :func:`atomic_dir` on the same path puts it back first.
    """
    directory = Path(directory)
    return directory.with_name(f".{directory.name}.old")


@contextlib.contextmanager
def atomic_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``directory``; on success it replaces ``directory``.

    Every file written into it is fsynced, the old folder is parked (:func:`parked_dir`), the new
    one renamed into place, and the parked one removed. If the body raises, ``directory`` is left
    as it was.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    old = parked_dir(directory)
    if old.exists() and not directory.exists():
        os.replace(old, directory)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb+") as fh:
                    os.fsync(fh.fileno())
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only; give it an ordinary folder's mode
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def tensor_fingerprint(tensors: Mapping[str, torch.Tensor] | torch.Tensor) -> str:
    """A SHA-256 hex digest of tensors' names, dtypes, shapes and exact values.

    Equal for bit-identical weights, different for any other change; used to check that a saved
    search index matches the model and HOLEF matrix it is used with.
    """
    if isinstance(tensors, torch.Tensor):
        tensors = {"": tensors}
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous().reshape(-1)  # 0-d tensors cannot be viewed as bytes
        h.update(f"{name}|{t.dtype}|{tuple(tensors[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(folder: Path, expected: Mapping[str, str], record: Path, fix: str) -> None:
    """ValueError (one sentence naming the file and ``fix``) unless every file ``folder / name`` has the
    digest ``expected[name]`` recorded in ``record``."""
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{path} is missing although {record} lists it; {fix}.")
        if sha256_file(path) != digest:
            raise ValueError(
                f"{path} does not match the checksum recorded in {record} (the file is damaged or was "
                f"edited); {fix}."
            )


_TENSORS_DIGEST = (
    "fgsbir_sha256"  # safetensors metadata key: SHA-256 of the tensors serialised without metadata
)


def save_checked_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write ``tensors`` to a safetensors file, atomically, with their :func:`tensor_fingerprint` (SHA-256 of
    names, dtypes, shapes and values) in the file's own metadata, which :func:`load_checked_tensors` checks
    (one file: no record to fall out of step)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    digest = tensor_fingerprint(tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_TENSORS_DIGEST: digest})


def load_checked_tensors(path: str | os.PathLike, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; ValueError (one sentence naming the file and ``fix``) when it cannot
    be read or does not match the checksum :func:`save_checked_tensors` stored in it. A file without one
    (written elsewhere, or before checksums were stored) is read unchecked."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            expected = (fh.metadata() or {}).get(_TENSORS_DIGEST)
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except SafetensorError as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}); {fix}.") from None
    if expected is not None and tensor_fingerprint(tensors) != expected:
        raise ValueError(
            f"{path} does not match the checksum stored in it (the file is damaged or was edited); {fix}."
        )
    return tensors
