import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from _train_fixtures import tiny_config
from safetensors.torch import load_file

from fgsbir_plugin._common import tensor_fingerprint
from fgsbir_plugin.model_io import load_model
from fgsbir_plugin.train.checkpoint import flatten_state, load_training_state, unflatten_state
from fgsbir_plugin.train.engine import train
from fgsbir_plugin.train.evaluate import run_eval
from fgsbir_plugin.train.optim import lr_factor

TESTS = Path(__file__).parent
# Subprocesses import the package from the checkout and the tiny dataset from tests/.
SUBPROCESS_PATH = os.pathsep.join([str(TESTS.parent), str(TESTS)])


_cfg = tiny_config


def test_run_folder_layout_and_eval_report(tmp_path, tiny):
    summary = train(_cfg(tmp_path / "run"), datasets=tiny)
    run = tmp_path / "run"
    assert summary["done"] and summary["step"] == 12 and summary["best"] is not None
    assert {p.name for p in run.iterdir()} >= {"model", "state", "log.jsonl", "run_config.json"}
    assert json.loads((run / "run_config.json").read_text())["model"] == "test_resnet"
    events = [json.loads(line)["event"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert events.count("epoch") == 2 and events[-1] == "end" and events.count("train") == 12
    model = load_model(run / "model")
    assert model.pretrained_cfg["input_size"] == (3, 28, 28) or list(model.pretrained_cfg["input_size"]) == [
        3,
        28,
        28,
    ]
    report = run_eval(run, "tiny", split="test", device="cpu", datasets=tiny)
    saved = json.loads((run / "eval_test.json").read_text())
    for key in (
        "metrics",
        "dataset",
        "split",
        "num_queries",
        "num_gallery",
        "checkpoint",
        "device",
        "date",
        "commit",
        "command",
        "model_name",
    ):
        assert key in saved
    assert saved["num_queries"] == 8 and saved["num_gallery"] == 4 and saved["model_name"] == "test_resnet"
    assert saved["metrics"] == report["metrics"]
    ten = run_eval(
        run, "tiny", split="test", device="cpu", views=10, datasets=tiny, out=tmp_path / "ten.json"
    )
    assert set(ten["metrics"]) == set(report["metrics"]) and ten["views"] == 10


def test_eval_reads_the_runs_own_reader_options_for_its_dataset(tmp_path, tiny):
    """Without --data-kwargs, eval scores the data the run was trained beside: its run_config's options when
    the dataset is the same; another dataset gets none of them."""
    run = tmp_path / "run"
    train(_cfg(run, epochs=1), datasets=tiny)
    config = json.loads((run / "run_config.json").read_text())
    sizes = {"num_photos": 10, "sketches_per_photo": 2, "image_size": 40, "test_fraction": 0.5}
    config.update(data="synthetic", data_kwargs=sizes)
    (run / "run_config.json").write_text(json.dumps(config))
    own = run_eval(run, "synthetic", device="cpu", out=tmp_path / "own.json")
    assert own["data_kwargs"] == sizes
    assert (own["num_queries"], own["num_gallery"]) == (10, 5)  # half of 10 photos, 2 sketches each
    given = run_eval(
        run, "synthetic", device="cpu", data_kwargs={**sizes, "num_photos": 20}, out=tmp_path / "g.json"
    )
    assert given["num_gallery"] == 10 and given["data_kwargs"]["num_photos"] == 20
    other = run_eval(run, "tiny", device="cpu", datasets=tiny, out=tmp_path / "other.json")
    assert other["data_kwargs"] == {}


def test_eval_scores_the_splits_the_run_was_trained_beside_its_seed_and_validation_carve(tmp_path):
    """The run's seed also seeds generated data (and a pairs folder's test split): eval must use it, and
    its validation fraction gives back the validation split that chose the model."""
    from fgsbir_plugin.data import load_fgsbir_pair

    run = tmp_path / "run"
    sizes = {"num_photos": 30, "sketches_per_photo": 2, "image_size": 40, "test_fraction": 0.3}
    summary = train(
        _cfg(run, epochs=2, data="synthetic", data_kwargs=sizes, validation_size=0.25, seed=3, eval_every=3)
    )
    report = run_eval(run, "synthetic", split="validation", device="cpu")
    assert report["run_splits"] == {"seed": 3, "validation_size": 0.25}
    with pytest.raises(ValueError, match="trained on synthetic with seed 3"):
        run_eval(run, "synthetic", device="cpu", data_kwargs={**sizes, "seed": 4})  # another draw: refused
    assert run_eval(run, "synthetic", device="cpu", data_kwargs={**sizes, "seed": 3})["metrics"]  # the same
    # 21 train photos, a quarter carved: 5 photos, 2 sketches each; the saved model's validation figures
    assert (report["num_queries"], report["num_gallery"]) == (10, 5)
    assert [report["metrics"]["acc@1"], report["metrics"]["acc@10"]] == pytest.approx(summary["best"])
    assert (run / "eval_validation.json").is_file()
    test = run_eval(run, "synthetic", device="cpu")
    trained_beside = load_fgsbir_pair("synthetic", validation_size=0.25, seed=3, **sizes)
    same = run_eval(run, "synthetic", device="cpu", datasets=trained_beside, out=tmp_path / "same.json")
    assert test["metrics"] == same["metrics"] and test["num_gallery"] == 9
    other = tmp_path / "other"
    train(_cfg(other, epochs=1, data="synthetic", data_kwargs=sizes, validation_size=0))
    with pytest.raises(ValueError, match="a run trained on it with --validation-size carves one from train"):
        run_eval(other, "synthetic", split="validation", device="cpu")


def test_refuses_to_overwrite_a_run(tmp_path, tiny):
    train(_cfg(tmp_path / "run", epochs=1), datasets=tiny)
    with pytest.raises(ValueError, match="already holds a run"):
        train(_cfg(tmp_path / "run", epochs=1), datasets=tiny)


def _fp(tensors: dict[str, torch.Tensor]) -> str:
    # 1-D views: tensor_fingerprint cannot byte-view 0-d tensors (BatchNorm's num_batches_tracked).
    return tensor_fingerprint({k: v.reshape(-1) for k, v in tensors.items()})


def _weights(run: Path) -> dict[str, str]:
    return {
        "state": _fp(load_file(str(run / "state" / "model.safetensors"))),
        "best": _fp(load_file(str(run / "model" / "model.safetensors"))),
    }


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {
            "optimizer": "sgd",
            "miner": "batch-hard",
            "grad_accum": 2,
            "warmup_steps": 2,
            "schedule": "onecycle",
            "stroke_jitter": 0.5,
        },
    ],
)
def test_resume_is_bit_identical(tmp_path, tiny, extra):
    train(_cfg(tmp_path / "a", **extra), datasets=tiny)
    stop = 4 if extra.get("grad_accum") else 5
    partial = train(_cfg(tmp_path / "b", stop_after_steps=stop, **extra), datasets=tiny)
    assert partial["stopped"] and partial["step"] == stop and not partial["done"]
    resumed = train(_cfg(tmp_path / "b", resume=True, **extra), datasets=tiny)
    assert resumed["done"] and resumed["step"] == partial["total_steps"]
    assert _weights(tmp_path / "a") == _weights(tmp_path / "b")
    _, state_a = load_training_state(tmp_path / "a" / "state")
    _, state_b = load_training_state(tmp_path / "b" / "state")
    assert state_a["progress"] == state_b["progress"]
    opt_a, _ = flatten_state(state_a["optimizer"])
    opt_b, _ = flatten_state(state_b["optimizer"])
    assert _fp(opt_a) == _fp(opt_b)


def test_resume_refuses_changed_settings(tmp_path, tiny):
    train(_cfg(tmp_path / "r", stop_after_steps=2), datasets=tiny)
    with pytest.raises(ValueError, match="lr differ"):
        train(_cfg(tmp_path / "r", resume=True, lr=5e-3), datasets=tiny)
    with pytest.raises(FileNotFoundError, match="no run to resume"):
        train(_cfg(tmp_path / "nothing", resume=True), datasets=tiny)


_KILLED_RUN = textwrap.dedent(
    """
    from _train_fixtures import tiny_fgsbir
    from fgsbir_plugin.train.config import TrainConfig
    from fgsbir_plugin.train.engine import train
    cfg = TrainConfig(data="tiny", out={out!r}, model="test_resnet", image_size=28, batch_size=4, epochs=3,
                      lr=1e-3, progress=False, log_every=1, save_every=1, resume={resume})
    train(cfg, datasets=tiny_fgsbir())
    """
)


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path, tiny):
    """Kill a real training process with SIGKILL mid-run, resume it, compare with an uninterrupted run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=SUBPROCESS_PATH)
    script = _KILLED_RUN.format(out=str(tmp_path / "b"), resume=False)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    log = tmp_path / "b" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and sum(1 for line in log.read_text().splitlines() if '"train"' in line) >= 8:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    (tmp_path / "b" / ".state.half-written").mkdir()  # as a kill during a save would leave it
    script = _KILLED_RUN.format(out=str(tmp_path / "b"), resume=True)
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    # The uninterrupted reference runs in the same environment (one thread), so floating-point reductions match.
    script = _KILLED_RUN.format(out=str(tmp_path / "a"), resume=False)
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    assert _weights(tmp_path / "a") == _weights(tmp_path / "b")
    assert not (tmp_path / "b" / ".state.half-written").exists()


def test_flatten_state_round_trip():
    import numpy as np

    obj = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
        "groups": [{"betas": (0.9, 0.99)}],
        "np": np.random.RandomState(0).get_state(),
        "none": None,
    }
    tensors, skeleton = flatten_state(obj)
    back = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert list(back["state"]) == [0] and torch.equal(back["state"][0]["exp_avg"], torch.ones(2))
    assert back["groups"][0]["betas"] == (0.9, 0.99) and back["none"] is None
    assert back["np"][1].dtype == np.uint32 and (back["np"][1] == obj["np"][1]).all()


def test_lr_schedules():
    assert lr_factor(0, 10, 2, "cosine") == pytest.approx(1 / 3)
    assert lr_factor(2, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(6, 10, 2, "onecycle") == pytest.approx(0.5)
    assert lr_factor(9, 10, 0, "constant") == 1.0


def test_holef_loss_trains(tmp_path, tiny):
    summary = train(_cfg(tmp_path / "h", loss="holef", epochs=1), datasets=tiny)
    assert summary["done"]


def test_loader_workers_do_not_change_the_result(tmp_path, tiny):
    train(_cfg(tmp_path / "w0", epochs=1), datasets=tiny)
    train(_cfg(tmp_path / "w2", epochs=1, workers=2, cache="no"), datasets=tiny)
    assert _weights(tmp_path / "w0") == _weights(tmp_path / "w2")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_smoke(tmp_path, tiny, precision):
    summary = train(
        _cfg(tmp_path / precision, epochs=1, precision=precision, channels_last=True, log_csv=True),
        datasets=tiny,
    )
    assert summary["done"] and (tmp_path / precision / "log.csv").is_file()
    state = load_file(str(tmp_path / precision / "state" / "model.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in state.values())


def test_forward_passes_modality_only_to_models_that_take_it():
    from fgsbir_plugin.embedding import forward_embed

    class TwoTrunks(torch.nn.Module):
        def forward(self, x, modality=None):
            return x.sum(dim=(2, 3)) * (1.0 if modality == "sketch" else -1.0)

    class Plain(torch.nn.Module):
        def forward(self, x):
            return x.sum(dim=(2, 3))

    x = torch.ones(2, 3, 4, 4)
    assert forward_embed(TwoTrunks(), x, "sketch")[0, 0] == 16.0
    assert forward_embed(TwoTrunks(), x, "photo")[0, 0] == -16.0
    assert forward_embed(Plain(), x, "photo")[0, 0] == 16.0


def test_early_stopping(tmp_path, tiny, monkeypatch):
    import fgsbir_plugin.train.loop as loop

    # Validation scores that improve once, then never: stop after `early_stop` flat validations.
    scores = iter([(10.0, 50.0), (20.0, 50.0), (20.0, 50.0), (5.0, 90.0), (30.0, 90.0), (40.0, 90.0)])

    def fake_eval(*args, **kwargs):
        a1, a10 = next(scores)
        return {
            "metrics": {
                "acc@1": a1,
                "acc@5": a1,
                "acc@10": a10,
                "mAP": a1,
                "mean_rank": 1.0,
                "median_rank": 1.0,
            }
        }

    monkeypatch.setattr(loop, "evaluate_split", fake_eval)
    summary = train(_cfg(tmp_path / "es", epochs=6, early_stop=2), datasets=tiny)
    assert summary["done"] and summary["epoch"] == 4 and summary["step"] == 24
    assert summary["best"] == [20.0, 50.0] and summary["best_step"] == 12


def test_without_validation_split_the_last_model_is_kept(tmp_path, tiny):
    sk, ph = tiny
    no_val = (
        {k: v for k, v in sk.items() if k != "validation"},
        {k: v for k, v in ph.items() if k != "validation"},
    )
    summary = train(_cfg(tmp_path / "nv", epochs=1), datasets=no_val)
    assert summary["best"] is None and (tmp_path / "nv" / "model" / "model.safetensors").is_file()


def test_a_validation_split_of_a_few_sketches_is_warned_about(tmp_path, tiny, recwarn):
    from fgsbir_plugin.train.session import SmallValidationWarning

    sk, ph = tiny
    few = (
        {**sk, "validation": sk["validation"].select(range(2))},
        {
            **ph,
            "validation": ph["validation"].filter(
                lambda r: r["photo_id"] in set(sk["validation"][:2]["photo_id"])
            ),
        },
    )
    with pytest.warns(SmallValidationWarning, match="only 2 sketches: its acc@1 moves in steps of 50 points"):
        train(_cfg(tmp_path / "few", epochs=1), datasets=few)
    recwarn.clear()
    train(_cfg(tmp_path / "enough", epochs=1), datasets=tiny)  # 8 validation sketches
    assert not [w for w in recwarn if issubclass(w.category, SmallValidationWarning)]


def test_holef_wiring_with_a_plain_trunk(tmp_path, tiny):
    """A timm trunk without HOLEF support: W is trained, saved beside model/ and used by eval."""
    train(_cfg(tmp_path / "h", loss="holef", miner="semi-hard", epochs=1), datasets=tiny)
    (W,) = load_file(str(tmp_path / "h" / "holef_distance.safetensors")).values()
    assert W.shape == (96, 96) and not torch.equal(W, torch.eye(96))  # trained
    report = run_eval(tmp_path / "h", "tiny", device="cpu", datasets=tiny)
    euclid = run_eval(tmp_path / "h", "tiny", device="cpu", datasets=tiny, out=tmp_path / "e.json")
    assert report["metrics"] == euclid["metrics"]  # deterministic
    from fgsbir_plugin.run_folder import RunFolder

    model = load_model(tmp_path / "h" / "model")
    assert torch.equal(RunFolder(tmp_path / "h").load_distance(model).weight_matrix().detach(), W)


def test_state_survives_a_kill_between_the_two_renames(tmp_path):
    from fgsbir_plugin.train.checkpoint import has_training_state, save_training_state

    save_training_state(tmp_path / "state", {"w": torch.arange(3.0)}, {"progress": {"step": 7}})
    save_training_state(tmp_path / "state", {"w": torch.arange(4.0)}, {"progress": {"step": 8}})
    assert not (tmp_path / ".state.old").exists()
    # A kill after `state -> .state.old` and before `tmp -> state` leaves only the previous copy.
    (tmp_path / "state").rename(tmp_path / ".state.old")
    assert has_training_state(tmp_path / "state")
    weights, state = load_training_state(tmp_path / "state")
    assert torch.equal(weights["w"], torch.arange(4.0)) and state["progress"]["step"] == 8
    with pytest.raises(FileNotFoundError, match="no training state"):
        load_training_state(tmp_path / "elsewhere")
