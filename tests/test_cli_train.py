import argparse
import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open

import fgsbir_cli as cli
from fgsbir_cli import train as train_cli
from fgsbir_plugin.train.config import TrainConfig, load_config_file
from fgsbir_plugin.train.embed import embed_folder
from fgsbir_plugin.train.engine import train


@pytest.fixture
def fgsbir(monkeypatch, capsys):
    """Run ``fgsbir ...`` in-process with only this area's sub-commands; return (status, stdout, stderr)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("fgsbir_cli.train",))

    def run(*argv):
        status = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


def _parse(*argv):
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args([str(a) for a in argv])


def _one_sentence(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].endswith("."), err
    return lines[0]


def test_flags_override_config_file(tmp_path):
    (tmp_path / "c.toml").write_text(
        "lr = 0.5\nepochs = 3\nbatch-size = 8\nmodel_kwargs = { shared = false }\n"
    )
    cfg = train_cli.config_from_args(
        _parse(
            "train", "--config", tmp_path / "c.toml", "--data", "x", "--out", tmp_path / "r", "--lr", "0.001"
        )
    )
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.model_kwargs) == (0.001, 3, 8, {"shared": False})
    (tmp_path / "c.yaml").write_text("loss: holef\nminer: semi-hard\nchannels_last: true\n")
    cfg = train_cli.config_from_args(
        _parse("train", "--config", tmp_path / "c.yaml", "--data", "x", "--out", "r", "--no-channels-last")
    )
    assert (cfg.loss, cfg.miner, cfg.channels_last) == ("holef", "semi-hard", False)
    assert TrainConfig().epochs == cfg.epochs  # untouched options keep their defaults


@pytest.mark.parametrize(
    "config_text,flags,expected",
    [
        ("learning_rate: 0.1\n", [], "unknown option 'learning_rate' in config file"),
        ("", ["--lr", "-1"], "lr = -1.0 is invalid: the learning rate must be a positive number"),
        (
            "loss: contrastive\n",
            [],
            "loss = 'contrastive' is invalid: choose one of triplet, triplet_l2, holef",
        ),
        ("batch_size: 0\n", [], "batch_size = 0 is invalid"),
        (
            "",
            ["--batch-groups", "annotated", "--group-size", "9", "--batch-size", "16", "--k-per-photo", "2"],
            "group_size = 9 is invalid: it must be an integer from 2 to the 8 photos of a batch",
        ),
        ("", ["--model", "no_such_model_xyz"], "unknown model 'no_such_model_xyz'"),
        ("", ["--data-dir", "/nonexistent/fgsbir"], "data directory /nonexistent/fgsbir does not exist"),
        ("- a\n- b\n", [], "must hold a mapping"),
        ("", ["--data-kwargs", '{"seed": 3}'], "it sets seed, which training sets itself"),
        ("", ["--data-kwargs", '{"validation_size": 0.2}'], "it sets validation_size, which training sets"),
    ],
)
def test_bad_config_gives_one_sentence(tmp_path, fgsbir, config_text, flags, expected):
    (tmp_path / "c.yaml").write_text(config_text)
    status, _, err = fgsbir(
        "train", "--config", tmp_path / "c.yaml", "--data", "x", "--out", tmp_path / "r", *flags
    )
    assert status == 2
    assert expected in _one_sentence(err)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config_file(tmp_path / "nope.toml")


def test_eval_and_embed_commands(tmp_path, fgsbir, monkeypatch, tiny):
    train(
        TrainConfig(
            data="tiny",
            out=str(tmp_path / "run"),
            model="test_resnet",
            image_size=28,
            batch_size=4,
            epochs=1,
            progress=False,
        ),
        datasets=tiny,
    )
    # `fgsbir eval` through the CLI, with the dataset loader pointed at the tiny in-memory data.
    import fgsbir_plugin.train.evaluate as ev

    real = ev.run_eval
    monkeypatch.setattr(ev, "run_eval", lambda *a, **k: real(*a, **{**k, "datasets": tiny}))
    status, out, err = fgsbir("eval", "--checkpoint", tmp_path / "run", "--data", "tiny", "--device", "cpu")
    assert status == 0, err
    assert "| acc@1 |" in out and (tmp_path / "run" / "eval_test.json").is_file()
    status, _, err = fgsbir("eval", "--checkpoint", tmp_path / "nothing", "--data", "tiny")
    assert status == 2 and "neither a run folder" in _one_sentence(err)

    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    for i, name in enumerate(["b.png", "a.jpg", "sub/c.png"]):
        Image.new("RGB", (30 + i, 20), (i * 40, 0, 0)).save(images / name)
    status, out, err = fgsbir(
        "embed",
        "--checkpoint",
        tmp_path / "run",
        "--images",
        images,
        "--out",
        tmp_path / "e.safetensors",
        "--device",
        "cpu",
    )
    assert status == 0, err
    with safe_open(str(tmp_path / "e.safetensors"), "pt") as f:
        emb = f.get_tensor("embeddings")
        meta = f.metadata()
    assert emb.shape == (3, 96) and json.loads(meta["paths"]) == ["a.jpg", "b.png", "sub/c.png"]
    assert meta["modality"] == "photo"
    # The same model and image give the same embedding as a direct forward pass.
    info = embed_folder(tmp_path / "run", images, tmp_path / "e2.safetensors", device="cpu", views=10)
    assert info == {"num_images": 3, "dim": 96, "path": str(tmp_path / "e2.safetensors")}
    assert torch.isfinite(emb).all()
    embed = ("embed", "--checkpoint", tmp_path / "run", "--images")
    status, _, err = fgsbir(*embed, tmp_path / "none", "--out", tmp_path / "x.safetensors")
    assert status == 2 and "does not exist" in _one_sentence(err)
    status, _, err = fgsbir(*embed, images / "b.png", "--out", tmp_path / "x.safetensors")
    assert status == 2 and "is a file; pass the folder of images it is in" in _one_sentence(err)
    status, _, err = fgsbir(*embed, images, "--out", tmp_path / "x.txt")
    assert status == 2 and "must end in .safetensors" in _one_sentence(err)
    assert not (tmp_path / "x.txt").exists() and not (tmp_path / "x.safetensors").exists()


def test_training_accepts_the_lenient_load_a_damaged_image_error_offers(tmp_path):
    """The reader's error for a damaged image says 'or pass lenient=True'; training takes it in --data-kwargs."""
    root = tmp_path / "pairs"
    (root / "photos").mkdir(parents=True)
    (root / "sketches").mkdir()
    for i in range(10):
        Image.new("RGB", (32, 32), (25 * i, 0, 0)).save(root / "photos" / f"p{i}.png")
        Image.new("L", (32, 32), 25 * i).save(root / "sketches" / f"p{i}_1.png")
    (root / "photos" / "p9.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)  # damaged
    cfg = dict(data=str(root), model="test_resnet", image_size=28, batch_size=2, max_steps=2, progress=False)
    cfg.update(device="cpu", validation_size=0.0)
    with pytest.raises(ValueError, match=r"p9\.png cannot be read .*\(or pass lenient=True"):
        train(TrainConfig(out=str(tmp_path / "strict"), **cfg))
    with pytest.warns(UserWarning, match="1 corrupt_image .*p9.png"):
        summary = train(TrainConfig(out=str(tmp_path / "lenient"), data_kwargs={"lenient": True}, **cfg))
    assert summary["step"] == 2
