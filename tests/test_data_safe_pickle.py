"""The stroke-pickle loader runs no code and reads what numpy writes, under numpy 1 and 2 names."""

from __future__ import annotations

import builtins
import os
import pickle

import numpy as np
import pytest

from fgsbir_plugin.data.safe_pickle import load_numpy_pickle


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsEval:
    def __reduce__(self):
        return (builtins.eval, ("__import__('builtins').__setattr__('FGSBIR_PWNED', 1)",))


def test_shell_payload_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"/train/a_1": _RunsShell(marker)}, protocol=3)
    path = tmp_path / "Evil_Coordinate"
    path.write_bytes(payload)
    with pytest.raises(
        ValueError, match=r"asks to load '(posix|nt|os)\.system'.*do not open it with pickle\.load"
    ):
        load_numpy_pickle(path)
    assert not marker.exists()


def test_eval_payload_does_not_run():
    payload = pickle.dumps([np.zeros((2, 3)), _RunsEval()], protocol=4)
    with pytest.raises(ValueError, match=r"'builtins\.eval'"):
        load_numpy_pickle(payload)
    assert not hasattr(builtins, "FGSBIR_PWNED")


def test_numpy_arrays_round_trip_with_both_module_names():
    data = {
        "/train/x_1": np.arange(12, dtype=np.float64).reshape(4, 3),
        "/test/y_2": np.ones((1, 3), np.int32),
    }
    current = pickle.dumps(data, protocol=3)
    # The shared files name numpy 1's module; protocol 3 writes globals as text, so swap it in.
    legacy = current.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in legacy
    for blob in (current, legacy, pickle.dumps(data, protocol=4)):
        out = load_numpy_pickle(blob)
        assert out.keys() == data.keys()
        for k in data:
            np.testing.assert_array_equal(out[k], data[k])
            assert out[k].dtype == data[k].dtype


def test_object_arrays_are_refused():
    blob = pickle.dumps(np.array([1, "a"], dtype=object), protocol=3)
    with pytest.raises(ValueError, match="object dtype"):
        load_numpy_pickle(blob)


def test_truncated_and_missing_files(tmp_path):
    blob = pickle.dumps({"/train/a_1": np.zeros((5, 3))}, protocol=3)
    with pytest.raises(ValueError, match="truncated"):
        load_numpy_pickle(blob[: len(blob) // 2])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_numpy_pickle(tmp_path / "nope")
