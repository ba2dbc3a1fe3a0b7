"""Read numpy-only pickles (the QMUL-V2 ``*_Coordinate`` stroke files) without running code.

A pickle names the callables it wants invoked while loading; plain ``pickle.load`` imports
and calls whatever it names (``os.system``, ``builtins.eval``, ...). ``NumpyOnlyUnpickler``
resolves exactly the globals numpy itself writes for a plain array -- plus, for pickle
protocols 0 to 2, the ``_codecs.encode`` and empty ``bytes()`` calls those protocols use to store
bytes -- and refuses every other one before anything is called.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

__all__ = ["NumpyOnlyUnpickler", "load_numpy_pickle", "ALLOWED_GLOBALS"]

# ``ndarray.__reduce__`` hands back numpy's own array-rebuild function; taking it from there
# finds it under numpy 1 (numpy.core.multiarray) and numpy 2 (numpy._core.multiarray) alike
# without touching the deprecated ``numpy.core`` alias.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]


def _safe_dtype(*args, **kwargs) -> np.dtype:
    """``numpy.dtype`` that refuses object dtypes, whose arrays would hold arbitrary objects."""
    dt = np.dtype(*args, **kwargs)
    if dt.hasobject:
        raise pickle.UnpicklingError("the pickle asks for an object dtype, which a stroke file never holds")
    return dt


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as pickle protocols 0-2 call it, and only so: a str to bytes, as latin-1.

    Those protocols have no bytes opcode, so they store numpy's buffer as a str whose code points
    are the bytes and rebuild it with ``_codecs.encode(text, "latin1")``; any other codec or
    argument is refused.
    """
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"the pickle calls _codecs.encode with ({type(text).__name__}, {encoding!r}), not the "
            "(str, 'latin1') that pickle protocols 0-2 write for bytes"
        )
    return text.encode("latin1")


def _empty_bytes(*args) -> bytes:
    """``bytes()`` as pickle protocols 0-2 call it for an empty buffer (an empty array's data), and only so.

    Any argument is refused: ``bytes(n)`` would let a pickle allocate ``n`` bytes.
    """
    if args:
        raise pickle.UnpicklingError(
            f"the pickle calls bytes with {len(args)} argument(s), not the bare bytes() that pickle "
            "protocols 0-2 write for an empty buffer"
        )
    return b""


ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}
"""(module, name) -> the object it resolves to; everything else is refused."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array-rebuild globals (see ``ALLOWED_GLOBALS``)."""

    def __init__(self, file, *, source: str = "<bytes>"):
        # encoding="latin1" lets arrays pickled by Python 2 load (their buffers arrive as str).
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{self._source} asks to load '{module}.{name}', which is not one of the numpy array "
                "globals a stroke pickle may use; the file is not a plain stroke file (or was tampered "
                "with) -- do not open it with pickle.load, get a clean copy of the dataset instead"
            ) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"{self._source} uses persistent ids, which a stroke pickle never holds")


def load_numpy_pickle(path_or_bytes: str | os.PathLike | bytes):
    """Load a pickle that may only hold containers of plain numpy arrays.

    Args:
        path_or_bytes: a file path or the pickle's bytes.

    Returns:
        The unpickled object (for ``*_Coordinate`` files: ``dict[str, np.ndarray]``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the pickle names a global outside ``ALLOWED_GLOBALS`` or is not a readable pickle;
            nothing it names has been called.
    """
    if isinstance(path_or_bytes, bytes | bytearray):
        data, source = bytes(path_or_bytes), "the pickle"
    else:
        path = Path(path_or_bytes)
        if not path.is_file():
            raise FileNotFoundError(f"stroke pickle {path} does not exist; check the dataset folder")
        data, source = path.read_bytes(), str(path)
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data), source=source).load()
    except pickle.UnpicklingError as exc:
        raise ValueError(str(exc)) from None
    except (EOFError, IndexError, TypeError, AttributeError, ImportError, ValueError, MemoryError) as exc:
        raise ValueError(
            f"{source} is not a readable stroke pickle ({type(exc).__name__}: {exc}); "
            "the file may be truncated -- get a fresh copy"
        ) from None
