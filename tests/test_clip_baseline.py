import json

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from fgsbir_plugin.baselines import CLIPImageEmbedder  # noqa: E402

TINY = dict(image_size=32, layers=1, width=32, patch_size=8, head_width=16)


def test_zero_shot_is_frozen_and_normalised():
    torch.manual_seed(0)
    model = CLIPImageEmbedder.from_config(16, TINY, adapt="none").eval()
    assert not any(p.requires_grad for p in model.parameters())
    z = model(torch.randn(3, 3, 32, 32), modality="sketch")
    assert z.shape == (3, 16)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))


def test_ln_proj_starts_as_zero_shot_and_trains_only_layernorms_and_projection():
    torch.manual_seed(0)
    frozen = CLIPImageEmbedder.from_config(16, TINY, adapt="none").eval()
    adapted = CLIPImageEmbedder.from_config(16, TINY, adapt="ln_proj").eval()
    adapted.visual.load_state_dict(frozen.visual.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(adapted(x), frozen(x))
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert "proj.weight" in trainable
    assert trainable and all(n == "proj.weight" or ".ln" in n or n.startswith("visual.ln") for n in trainable)
    adapted(x).sum().backward()
    assert all(p.grad is not None for n, p in adapted.named_parameters() if p.requires_grad)


def test_from_pretrained_reads_a_local_checkpoint(tmp_path):
    cfg = {
        "embed_dim": 16,
        "vision_cfg": TINY,
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "tiny-fgsbir-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "tiny-fgsbir-test.json")
    torch.manual_seed(1)
    reference = open_clip.create_model("tiny-fgsbir-test")
    ckpt = tmp_path / "tiny.pt"
    torch.save(reference.state_dict(), ckpt)
    model = CLIPImageEmbedder.from_pretrained("tiny-fgsbir-test", ckpt).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(
        model(x), torch.nn.functional.normalize(reference.eval().encode_image(x), dim=-1)
    )
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="adapt must be one of"):
        CLIPImageEmbedder.from_config(16, TINY, adapt="full")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        CLIPImageEmbedder.from_pretrained("no-such-model", "x.pt")
    with pytest.raises(ValueError, match="repeat 1-channel"):
        CLIPImageEmbedder.from_config(16, TINY)(torch.zeros(1, 1, 32, 32))
