"""End to end on the real QMUL-Chair-V2: a few training steps, then `fgsbir eval` on the test split."""

import json

import pytest

from fgsbir_plugin.train.config import TrainConfig
from fgsbir_plugin.train.engine import train
from fgsbir_plugin.train.evaluate import run_eval


@pytest.mark.real_data
@pytest.mark.slow
def test_train_then_eval_on_chairv2(data_dir, tmp_path):
    if not (data_dir / "chairv2").is_dir():
        pytest.skip("chairv2 is not in the data folder")
    cfg = TrainConfig(
        data="chairv2",
        data_dir=str(data_dir),
        out=str(tmp_path / "run"),
        model="test_resnet",
        image_size=32,
        batch_size=16,
        max_steps=3,
        validation_size=0.1,
        progress=False,
    )
    summary = train(cfg)
    assert summary["done"] and summary["step"] == 3 and summary["best"] is not None
    report = run_eval(
        tmp_path / "run", "chairv2", split="test", data_dir=str(data_dir), device="cpu", views=10
    )
    saved = json.loads((tmp_path / "run" / "eval_test_10views.json").read_text())
    assert saved["num_queries"] == 323 and saved["num_gallery"] == 100  # the README's test split
    assert saved["metrics"] == report["metrics"] and saved["views"] == 10
