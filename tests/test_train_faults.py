"""Faults around a training run: resume as documented, the run-folder lock, divergence, damaged or
edited state and model folders, bad config files, a full disk, and the CLI's one-sentence errors.

Each test makes one fault and checks the answer: exit status 2, one line naming the file and the fix,
and nothing half-written (the previous state still loads).
"""

import errno
import functools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from _train_fixtures import tiny_config
from safetensors.torch import load_file, save_file

import fgsbir_cli
from fgsbir_plugin._common import sha256_file
from fgsbir_plugin.model_io import CHECKSUMS, load_model
from fgsbir_plugin.run_folder import RunFolder, RunLocked
from fgsbir_plugin.train import checkpoint, loop
from fgsbir_plugin.train.checkpoint import load_training_state
from fgsbir_plugin.train.config import TrainConfig, load_config_file
from fgsbir_plugin.train.engine import train
from fgsbir_plugin.train.loop import TrainingDiverged

TESTS = Path(__file__).parent
SUBPROCESS_PATH = os.pathsep.join([str(TESTS.parent), str(TESTS)])


_cfg = functools.partial(tiny_config, save_every=2)


@pytest.fixture
def fgsbir(monkeypatch, capsys, tiny):
    """``fgsbir ...`` in-process, with every dataset name read as the tiny generated dataset."""
    import fgsbir_plugin.train.session as session

    monkeypatch.setattr(session, "load_datasets", lambda cfg: tiny)

    def run(*argv):
        status = fgsbir_cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fgsbir ") and lines[0].endswith("."), err
    return lines[0]


_TRAIN_FLAGS = ("--data", "tiny", "--model", "test_resnet", "--image-size", "28", "--batch-size", "4")
_TRAIN_FLAGS += ("--epochs", "2", "--lr", "1e-3", "--no-progress", "--save-every", "2", "--device", "cpu")


def _finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t.float()).all()) for t in tensors.values())


# -- resume, as the README and --stop-after-steps print it ---------------------------------------------


def test_the_printed_resume_command_works_as_written(tmp_path, fgsbir):
    run = tmp_path / "r"
    status, out, err = fgsbir("train", *_TRAIN_FLAGS, "--out", run, "--stop-after-steps", "3")
    assert status == 0, err
    command = re.search(r"continue with: (fgsbir train .*)$", out.strip()).group(1)
    assert command == f"fgsbir train --out {run} --resume"
    status, out, err = fgsbir(*command.split()[1:])
    assert status == 0, err
    assert "trained 12 steps; model in" in out


# -- the lock -----------------------------------------------------------------------------------------


def test_a_second_training_into_a_held_folder_is_refused(tmp_path, fgsbir, tiny):
    run = RunFolder(tmp_path / "r")
    with run.lock():
        with pytest.raises(RunLocked, match="is being written by a running training \\(pid"):
            train(_cfg(run.path), datasets=tiny)
        status, _, err = fgsbir("train", *_TRAIN_FLAGS, "--out", run.path)
        assert status == 2 and "choose another --out" in _one_line(err)
    assert not run.holds_run()  # the refused runs wrote nothing
    train(_cfg(run.path, epochs=1), datasets=tiny)  # released: the folder is usable


def test_a_refused_start_leaves_no_folder(tmp_path, tiny):
    with pytest.raises(ValueError, match="lr = -1"):
        train(_cfg(tmp_path / "bad", lr=-1), datasets=tiny)
    with pytest.raises(FileNotFoundError, match="no run to resume"):
        train(TrainConfig(out=str(tmp_path / "nothing"), resume=True), datasets=tiny)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "nothing").exists()


def test_a_start_refused_after_the_lock_leaves_no_folder_but_keeps_what_was_there(tmp_path, fgsbir):
    """An unknown model, or a batch the data cannot fill, is found once the folder is locked: the folders the
    lock created go again; a folder that existed, or that holds anything besides the lock, stays."""
    status, _, err = fgsbir(
        "train", *_TRAIN_FLAGS, "--out", tmp_path / "new" / "r", "--model", "no_such_model"
    )
    assert status == 2 and "unknown model" in _one_line(err)
    status, _, err = fgsbir("train", *_TRAIN_FLAGS, "--out", tmp_path / "new" / "r", "--batch-size", "64")
    assert status == 2 and "lower --batch-size" in _one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    status, _, _ = fgsbir("train", *_TRAIN_FLAGS, "--out", tmp_path / "mine", "--model", "no_such_model")
    assert status == 2 and (tmp_path / "mine").is_dir()
    run = RunFolder(tmp_path / "kept")
    with pytest.raises(RuntimeError, match="late"):
        with run.lock():
            (run.path / "notes.txt").write_text("kept")
            raise RuntimeError("late")
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", "notes.txt"]


# -- divergence ---------------------------------------------------------------------------------------


def test_a_diverging_run_stops_without_a_validation_split(tmp_path, fgsbir):
    run = tmp_path / "r"
    status, _, err = fgsbir(
        "train", *_TRAIN_FLAGS, "--out", run, "--lr", "1e30", "--optimizer", "sgd", "--validation-size", "0"
    )
    assert status == 2 and "training diverged at step" in _one_line(err)
    for path in run.rglob("*.safetensors"):
        assert _finite(load_file(str(path))), path
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]  # strict JSON
    assert records[-1]["event"] == "diverged"


def test_a_diverging_run_keeps_the_last_finite_state(tmp_path, tiny, monkeypatch):
    real = loop.train_step
    calls = {"n": 0}

    def nan_at_step_five(*args):
        calls["n"] += 1
        return float("nan") if calls["n"] == 5 else real(*args)

    monkeypatch.setattr(loop, "train_step", nan_at_step_five)
    with pytest.raises(TrainingDiverged, match="step 4 \\(the loss is nan\\)"):
        train(_cfg(tmp_path / "r"), datasets=tiny)
    weights, state = load_training_state(tmp_path / "r" / "state")
    assert state["progress"]["step"] == 4 and _finite(weights)
    log = (tmp_path / "r" / "log.jsonl").read_text()
    assert "NaN" not in log and json.loads(log.splitlines()[-1])["event"] == "diverged"


def test_a_non_finite_weight_is_named_before_anything_is_saved(tmp_path, tiny, monkeypatch):
    real = loop._optimizer_step

    def step_then_spoil(s):
        real(s)
        if s.progress["step"] == 2:  # the step at which save_every=2 saves the state
            name, param = list(s.pair.named_parameters())[3]
            step_then_spoil.name = name
            param.data[0] = float("inf")

    monkeypatch.setattr(loop, "_optimizer_step", step_then_spoil)
    with pytest.raises(TrainingDiverged, match="at step 2 \\(weight (\\S+) is not finite\\)") as err:
        train(_cfg(tmp_path / "r"), datasets=tiny)
    assert step_then_spoil.name in str(err.value)
    assert not (tmp_path / "r" / "state").exists()  # nothing non-finite was written


def test_log_records_are_strict_json(tmp_path):
    from fgsbir_plugin.train.run_log import RunLog

    log = RunLog(RunFolder(tmp_path), csv_too=True, tensorboard=False, enabled=True)
    log.write({"event": "train", "step": 1, "loss": float("nan"), "val": {"acc@1": float("inf")}})
    assert json.loads((tmp_path / "log.jsonl").read_text()) == {
        "event": "train",
        "step": 1,
        "loss": None,
        "val": {"acc@1": None},
    }


def test_a_resume_hides_the_killed_run_s_later_tensorboard_events(tmp_path, tiny):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "r"
    train(_cfg(run, stop_after_steps=4, tensorboard=True), datasets=tiny)  # state saved at step 4
    # What a run killed at step 7 leaves behind: events of steps the resumed run logs again.
    orphans = SummaryWriter(str(run / "tensorboard"))
    for step in (5, 6, 7):
        orphans.add_scalar("train/loss", 99.0, step)
    orphans.close()
    summary = train(_cfg(run, resume=True, tensorboard=True), datasets=tiny)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, summary["step"] + 1))
    assert 99.0 not in {e.value for e in loss}


# -- the state and model folders: checksums and sanity ---------------------------------------------


@pytest.fixture
def stopped_run(tmp_path, tiny):
    """A run stopped after 3 steps (state saved at step 3), ready to resume."""
    run = tmp_path / "r"
    train(_cfg(run, stop_after_steps=3), datasets=tiny)
    return run


def _edit_state_json(state_dir: Path, edit, forge_checksum: bool) -> None:
    """Edit train_state.json's state; with ``forge_checksum``, record a matching checksum too."""
    path = state_dir / "train_state.json"
    payload = json.loads(path.read_text())
    edit(payload["state"])
    if forge_checksum:
        payload["state_sha256"] = checkpoint._skeleton_digest(payload["state"])
    path.write_text(json.dumps(payload))


def _set_step(step: int):
    def edit(state):
        progress = next(value for key, value in state["__dict__"] if key == "progress")
        next(pair for pair in progress["__dict__"] if pair[0] == "step")[1] = step

    return edit


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _resume_error(run: Path, tiny) -> str:
    """The error of ``fgsbir train --out RUN --resume`` (every setting from the run folder)."""
    with pytest.raises(ValueError) as info:
        train(TrainConfig(out=str(run), resume=True, progress=False), datasets=tiny)
    return str(info.value)


def test_a_flipped_byte_in_the_state_is_refused(stopped_run, tiny):
    weights = stopped_run / "state" / "model.safetensors"
    _flip_byte(weights, weights.stat().st_size - 3)
    assert "model.safetensors does not match the checksum" in _resume_error(stopped_run, tiny)


def test_truncated_and_empty_state_files_are_refused(stopped_run, tiny):
    tensors = stopped_run / "state" / "train_state.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])
    assert "train_state.safetensors does not match the checksum" in _resume_error(stopped_run, tiny)
    tensors.write_bytes(b"")
    assert "does not match the checksum" in _resume_error(stopped_run, tiny)


def test_hand_edited_progress_is_refused(stopped_run, tiny):
    _edit_state_json(stopped_run / "state", _set_step(10**6), forge_checksum=False)
    assert "does not match its own checksum" in _resume_error(stopped_run, tiny)


@pytest.mark.parametrize("step", [10**6, -50])
def test_forged_progress_counters_are_refused(stopped_run, tiny, step):
    _edit_state_json(stopped_run / "state", _set_step(step), forge_checksum=True)
    message = _resume_error(stopped_run, tiny)
    assert f"step = {step}" in message and "between 0 and 12" in message


def test_a_state_without_its_optimizer_is_refused(stopped_run, tiny):
    def drop_optimizer(state):
        state["__dict__"] = [kv for kv in state["__dict__"] if kv[0] != "optimizer"]

    _edit_state_json(stopped_run / "state", drop_optimizer, forge_checksum=True)
    assert "lacks optimizer" in _resume_error(stopped_run, tiny)


@pytest.mark.parametrize("change", [{"model": "resnet10t"}, {"margin": 0.5}])
def test_a_changed_run_config_is_refused(stopped_run, tiny, change):
    path = stopped_run / "run_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    message = _resume_error(stopped_run, tiny)
    assert "run_config.json does not match the settings saved in" in message and next(iter(change)) in message


def test_damaged_model_folders_are_refused(tmp_path, tiny):
    run = tmp_path / "r"
    train(_cfg(run, epochs=1), datasets=tiny)
    model_dir = run / "model"
    assert (model_dir / CHECKSUMS).is_file()
    load_model(model_dir)
    weights = model_dir / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="model.safetensors does not match the checksum"):
        load_model(model_dir)
    # Without the checksum record (a folder from elsewhere), safetensors' own checks still answer.
    (model_dir / CHECKSUMS).unlink()
    with pytest.raises(ValueError, match="model.safetensors cannot be read"):
        load_model(model_dir)
    weights.write_bytes(good)
    _flip_byte(weights, 10)  # inside the JSON header
    with pytest.raises(ValueError, match="cannot be read"):
        load_model(model_dir)
    weights.write_bytes(good)
    tensors = load_file(str(weights))
    name = next(k for k, v in tensors.items() if v.ndim == 4)
    tensors[name] = torch.zeros(1, *tensors[name].shape[1:])
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match="do not fit the `test_resnet` architecture"):
        load_model(model_dir)
    weights.write_bytes(good)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "architecture": "no_such_net"}))
    with pytest.raises(ValueError, match="holds a `no_such_net` model, which is not registered with timm"):
        load_model(model_dir)


def test_embed_reports_a_damaged_model_in_one_sentence(tmp_path, tiny, fgsbir):
    run = tmp_path / "r"
    train(_cfg(run, epochs=1), datasets=tiny)
    _flip_byte(run / "model" / "model.safetensors", 200)
    (tmp_path / "imgs").mkdir()
    tiny[1]["test"][0]["photo"].save(tmp_path / "imgs" / "a.png")
    status, _, err = fgsbir(
        "embed", "--checkpoint", run, "--images", tmp_path / "imgs", "--out", tmp_path / "e.safetensors"
    )
    assert status == 2 and "does not match the checksum" in _one_line(err)
    assert not (tmp_path / "e.safetensors").exists()


def test_a_damaged_holef_file_beside_the_model_is_refused(tmp_path, tiny, fgsbir):
    # A plain timm trunk trained with HOLEF keeps W beside model/; its checksum is stored in the file itself.
    run = RunFolder(tmp_path / "h")
    train(_cfg(run.path, loss="holef", miner="semi-hard", epochs=1), datasets=tiny)
    model = load_model(run.model_dir)
    good = run.holef_path.read_bytes()
    assert run.load_distance(model) is not None
    _flip_byte(run.holef_path, len(good) - 3)  # inside W's values: safetensors itself cannot tell
    with pytest.raises(
        ValueError, match="holef_distance.safetensors does not match the checksum stored in it"
    ):
        run.load_distance(model)
    small = '{"num_photos": 4, "sketches_per_photo": 1, "image_size": 32}'
    status, _, err = fgsbir(
        "eval", "--checkpoint", run.path, "--data", "synthetic", "--data-kwargs", small, "--device", "cpu"
    )
    assert status == 2 and "does not match the checksum stored in it" in _one_line(err)
    run.holef_path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        run.load_distance(model)
    # A file without a stored checksum (written by hand or elsewhere) is read as it is.
    run.holef_path.write_bytes(good)
    W = load_file(str(run.holef_path))
    save_file(W, str(run.holef_path))
    assert torch.equal(run.load_distance(model).state_dict()["weight"], W["weight"])


# -- config files and the environment ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("c.yaml", "lr: !!python/object/apply:os.system ['echo hi']\n", "is not valid YAML"),
        ("c.yaml", "lr: [1, 2\n", "is not valid YAML"),
        ("c.toml", "lr = = 1\n", "is not valid TOML"),
        ("c.json", "{lr: 1}", "is not valid JSON"),
    ],
)
def test_bad_config_files_are_one_sentence(tmp_path, fgsbir, name, text, expected):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=expected):
        load_config_file(tmp_path / name)
    status, _, err = fgsbir("train", "--config", tmp_path / name, "--data", "x", "--out", tmp_path / "r")
    assert status == 2 and name in _one_line(err)


def test_a_full_disk_leaves_the_previous_state(tmp_path, fgsbir, monkeypatch):
    real, calls = checkpoint.save_file, {"n": 0}

    def disk_fills_on_the_second_save(tensors, path):
        calls["n"] += 1
        if calls["n"] == 3:  # the first file of the second save
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", disk_fills_on_the_second_save)
    run = tmp_path / "r"
    status, _, err = fgsbir("train", *_TRAIN_FLAGS, "--out", run)
    line = _one_line(err)
    assert status == 2 and "No space left on device" in line and "--resume" in line
    _, state = load_training_state(run / "state")
    assert state["progress"]["step"] == 2
    assert not [p for p in run.iterdir() if p.name.startswith(".state.")]


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    import fgsbir_plugin.train.evaluate as evaluate

    def broken(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(evaluate, "run_eval", broken)
    with pytest.raises(KeyError, match="a bug"):
        fgsbir_cli.main(["eval", "--checkpoint", str(tmp_path), "--data", "tiny"])


def test_describe_error_is_one_line():
    err = OSError(errno.EACCES, "Permission denied", "/x/y")
    assert fgsbir_cli.describe_error(err) == "Permission denied (/x/y); check the permissions of the path."
    assert fgsbir_cli.describe_error(ValueError("two\nlines.")) == "two lines."


# -- SIGKILL at many points, then --resume -----------------------------------------------------------

_KILLABLE_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from _train_fixtures import tiny_fgsbir
    import fgsbir_plugin.train.checkpoint as checkpoint
    import fgsbir_plugin.train.loop as loop
    from fgsbir_plugin.train.config import TrainConfig
    from fgsbir_plugin.train.engine import train

    kind, n, out, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
    calls = [0]

    def killing(real):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return wrapped

    if kind == "step":  # before the n-th optimiser step of this process
        loop._optimizer_step = killing(loop._optimizer_step)
    elif kind == "save_file":  # while writing a state file (odd: weights, even: optimiser and RNG)
        checkpoint.save_file = killing(checkpoint.save_file)
    elif kind == "replace":  # at a rename: of the state, the best model, run_config.json or the log
        os.replace = killing(os.replace)
    cfg = TrainConfig(data="tiny", out=out, model="test_resnet", image_size=28, batch_size=4, epochs=4,
                      lr=1e-3, progress=False, log_every=1, save_every=1, resume=resume)
    train(cfg, datasets=tiny_fgsbir())
    """
)

KILL_POINTS = [
    ("step", 3),
    ("save_file", 1),
    ("replace", 4),
    ("step", 2),
    ("save_file", 4),
    ("replace", 2),
    ("step", 4),
    ("save_file", 3),
    ("replace", 5),
    ("step", 2),
    ("replace", 3),
    ("save_file", 2),
]


@pytest.mark.slow
def test_resume_after_sigkill_at_many_points_is_bit_identical(tmp_path):
    """SIGKILL one run at 12 points (between steps, while a state file is written, at a rename), resuming
    after each; the result equals an uninterrupted run, the lock is taken over, and no log line repeats."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=SUBPROCESS_PATH)

    def run(kind, n, out, resume):
        args = [sys.executable, "-c", _KILLABLE_RUN, kind, str(n), str(out), "1" if resume else "0"]
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)

    out, started = tmp_path / "b", False
    for kind, n in KILL_POINTS:
        proc = run(kind, n, out, started)
        assert proc.returncode == -signal.SIGKILL, (kind, n, proc.returncode, proc.stderr[-2000:])
        assert (out / ".lock").is_file()
        started = started or checkpoint.has_training_state(out / "state")
    t0 = time.time()
    final = run("none", 0, out, started)
    assert final.returncode == 0, final.stderr[-2000:]
    reference = run("none", 0, tmp_path / "a", False)
    assert reference.returncode == 0, reference.stderr[-2000:]
    assert time.time() - t0 < 300
    for name in ("state/model.safetensors", "model/model.safetensors"):
        assert sha256_file(out / name) == sha256_file(tmp_path / "a" / name), name
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in steps if r["event"] == "train"]
    assert train_steps == sorted(set(train_steps)) == list(range(1, 25))
