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


@pytest.mark.real_data
@pytest.mark.slow
def test_annotated_batch_groups_on_chairs_v1(data_dir, tmp_path):
    if not (data_dir / "qmul_v1" / "chairs").is_dir():
        pytest.skip("qmul_v1/chairs is not in the data folder")
    from fgsbir_plugin.data.load import annotated_triplets, load_fgsbir_pair
    from fgsbir_plugin.train.session import _batch_groups

    cfg = TrainConfig(
        data="chairs_v1",
        data_dir=str(data_dir),
        out=str(tmp_path / "run"),
        model="test_resnet",
        image_size=32,
        batch_size=16,
        max_steps=2,
        validation_size=0.15,
        batch_groups="annotated",
        group_size=4,
        progress=False,
    ).validate()
    sketches, photos = load_fgsbir_pair("chairs_v1", str(data_dir), validation_size=0.15, seed=0)
    near = _batch_groups(cfg, sketches["train"], photos["train"])
    assert len(near) == len(photos["train"])
    # Every look-alike is a training photo other than itself; validation photos never appear.
    train_ids = list(photos["train"]["photo_id"])
    assert all(q != p and 0 <= q < len(train_ids) for p, qs in enumerate(near) for q in qs)
    assert sum(map(len, near)) / len(near) > 5  # each sketch was compared with 9 other photos
    # They are the photos the annotators compared with the photo's sketch.
    photo = train_ids[0]  # its one sketch is f"{photo}_sketch"
    ann = annotated_triplets("chairs_v1", str(data_dir))["train"].filter(
        lambda r: r["sketch_id"] == f"{photo}_sketch"
    )
    named = set(ann["positive_photo_id"]) | set(ann["negative_photo_id"])
    assert len(named) == 10 and len(named - set(train_ids)) > 0  # some were carved out for validation
    assert {train_ids[q] for q in near[0]} == (named & set(train_ids)) - {photo}
    summary = train(cfg)
    assert summary["done"] and summary["step"] == 2


def test_annotated_batch_groups_need_annotations(tiny, tmp_path):
    cfg = TrainConfig(
        data="synthetic",
        out=str(tmp_path / "run"),
        model="test_resnet",
        image_size=32,
        batch_size=8,
        max_steps=1,
        batch_groups="annotated",
        progress=False,
    )
    with pytest.raises(
        ValueError, match="batch_groups = 'annotated' is invalid: it needs a dataset with annotated triplets"
    ):
        train(cfg, datasets=tiny)
