import pytest
import torch

from fgsbir_plugin._common import atomic_path, atomic_write_bytes, tensor_fingerprint


def test_fingerprint_handles_scalars_and_sees_every_change():
    state = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)}
    fp = tensor_fingerprint(state)
    assert fp == tensor_fingerprint({k: v.clone() for k, v in state.items()})
    assert fp != tensor_fingerprint({**state, "n": torch.tensor(4)})
    assert fp != tensor_fingerprint({**state, "w": state["w"].reshape(3, 2)})
    assert fp != tensor_fingerprint({**state, "w": state["w"].double()})
    assert tensor_fingerprint(torch.tensor(1.0)) != tensor_fingerprint(torch.tensor([1.0]))


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_save_model_handles_channels_last_and_an_interrupted_save(tmp_path):
    import timm

    from fgsbir_plugin.model_io import load_model, save_model

    model = timm.create_model("test_resnet", num_classes=0).eval().to(memory_format=torch.channels_last)
    expected = {k: v.contiguous() for k, v in model.state_dict().items()}

    def same_weights(loaded):
        got = loaded.state_dict()
        return got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)

    save_model(model, tmp_path / "m")
    assert same_weights(load_model(tmp_path / "m"))
    # A save killed between its two renames leaves only the parked previous folder: it still loads,
    # and the next save puts it back in place before replacing it.
    (tmp_path / "m").rename(tmp_path / ".m.old")
    assert same_weights(load_model(tmp_path / "m"))
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    from fgsbir_plugin._common import atomic_dir

    mask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "g").write_bytes(b"y")
    finally:
        os.umask(mask)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_checked_tensors_round_trip_and_refuse_a_changed_value(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from fgsbir_plugin._common import load_checked_tensors, save_checked_tensors

    tensors = {"w": torch.randn(5, 5), "b": torch.ones(3, dtype=torch.bfloat16), "step": torch.tensor(7)}
    path = tmp_path / "t.safetensors"
    save_checked_tensors(path, tensors)
    back = load_checked_tensors(path, "write it again")
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    changed = dict(back, w=back["w"].clone())
    changed["w"][2, 2] += 1.0
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    save_file(changed, str(path), metadata=meta)  # the old checksum with new values
    with pytest.raises(
        ValueError, match=r"t\.safetensors does not match the checksum stored in it .*; write it again\.$"
    ):
        load_checked_tensors(path, "write it again")
    save_file(load_file(str(path)), str(path))  # no stored checksum: read as it is
    assert torch.equal(load_checked_tensors(path, "x")["w"], changed["w"])
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        load_checked_tensors(path, "x")
