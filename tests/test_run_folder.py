from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from fgsbir_plugin.holef import HOLEFDistance
from fgsbir_plugin.run_folder import RunFolder
from fgsbir_plugin.runtime import describe_device, resolve_device


def _model_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_resolve_accepts_a_run_folder_or_its_model_folder(tmp_path):
    model_dir = _model_folder(tmp_path / "run" / "model")
    run, found = RunFolder.resolve(tmp_path / "run")
    assert (run.path, found) == (tmp_path / "run", model_dir)
    run, found = RunFolder.resolve(model_dir)
    assert (run.path, found) == (tmp_path / "run", model_dir)
    other = _model_folder(tmp_path / "exported")
    run, found = RunFolder.resolve(other)
    assert (run.path, found) == (other, other)


def test_resolve_rejects_a_folder_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        RunFolder.resolve(tmp_path)


def test_holds_run_and_stale_state_folders(tmp_path):
    run = RunFolder(tmp_path)
    assert not run.holds_run()
    run.state_dir.mkdir()
    (tmp_path / ".state.abc123").mkdir()
    (tmp_path / ".state.old").mkdir()
    assert run.holds_run()
    assert run.stale_state_folders() == [tmp_path / ".state.abc123"]


def test_read_run_config_names_the_file_when_it_is_not_json(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(FileNotFoundError, match="run_config.json"):
        run.read_run_config()
    run.run_config_path.write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        run.read_run_config()
    run.run_config_path.write_text(json.dumps({"data": "synthetic"}))
    assert run.read_run_config() == {"data": "synthetic"}


@pytest.mark.parametrize("nonnegative", [False, True])
def test_load_distance_reads_the_holef_file_beside_a_plain_model(tmp_path, nonnegative):
    saved = HOLEFDistance(4, nonnegative=nonnegative)
    with torch.no_grad():
        next(saved.parameters()).add_(0.25)
    save_file(dict(saved.state_dict()), str(RunFolder(tmp_path).holef_path))
    plain = torch.nn.Linear(3, 4)
    distance = RunFolder(tmp_path).load_distance(plain)
    assert distance.nonnegative == nonnegative
    assert torch.equal(distance.weight_matrix(), saved.weight_matrix())
    assert RunFolder(tmp_path / "none").load_distance(plain) is None
    plain.distance = saved
    assert RunFolder(tmp_path / "none").load_distance(plain) is saved


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    assert describe_device("cpu").startswith("CPU: ")
    # the instruction set torch's CPU kernels use is recorded: training floats differ between them
    assert torch.backends.cpu.get_cpu_capability() in describe_device("cpu")
