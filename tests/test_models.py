"""DSSA model family: shapes, gradients, attention, fusion, ablations, separate trunks, argument checks."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import fgsbir_plugin  # noqa: F401  (registers the models)
from fgsbir_plugin.models import DSSA, CoarseFineFusion, SpatialAttention

# (name, tiny input [C, H, W], extra kwargs). Non-square on purpose where the trunk allows it.
VARIANTS = [
    pytest.param("dssa", (1, 225, 225), {}, id="dssa"),
    pytest.param("dssa_efficientnet_lite0", (3, 64, 96), {}, id="dssa_efficientnet_lite0"),
    # zero_init_last=False: timm zero-initialises each block's last BN, which zeroes (not removes) gradients
    pytest.param(
        "dssa_resnet50",
        (3, 64, 96),
        {"backbone_kwargs": {"zero_init_last": False}},
        id="dssa_resnet50",
    ),
    pytest.param("dssa_vit_small_patch16_224", (3, 64, 96), {}, id="dssa_vit_small_patch16_224"),
]


def _dssa(name="dssa", **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs)


@pytest.mark.parametrize("name,input_size,kwargs", VARIANTS)
def test_forward_shapes_and_attention(name, input_size, kwargs):
    model = _dssa(name, **kwargs).eval()
    x = torch.randn(2, *input_size)
    with torch.no_grad():
        emb = model(x)
        emb2, att = model.forward_with_attention(x)
        fmap = model.forward_features(x)
    assert emb.shape == (2, 512) and model.head_hidden_size == 512
    assert torch.isfinite(emb).all()
    torch.testing.assert_close(emb2, emb, rtol=0, atol=0)
    assert fmap.shape[:2] == (2, model.num_features)
    assert att.shape == (2, 1, *fmap.shape[-2:])
    torch.testing.assert_close(att.sum(dim=(2, 3)), torch.ones(2, 1), rtol=0, atol=1e-5)
    assert (att > 0).all()
    # paper embedding: two unit vectors side by side
    torch.testing.assert_close(emb[:, :256].norm(dim=1), torch.ones(2), rtol=0, atol=1e-5)
    torch.testing.assert_close(emb[:, 256:].norm(dim=1), torch.ones(2), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,input_size,kwargs", VARIANTS)
def test_backward_num_classes_42_reaches_every_parameter(name, input_size, kwargs):
    model = _dssa(name, num_classes=42, **kwargs).train()
    out = model(torch.randn(2, *input_size))
    assert out.shape == (2, 42)
    out.mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {n}"
        # The attention's conv2 starts at zero, so conv1 gets its first gradient after conv2's first step.
        if not n.startswith("attention.conv1"):
            assert p.grad.abs().sum() > 0, f"zero gradient for {n}"
    assert model.attention.conv2.weight.grad.abs().sum() > 0


def test_paper_sizes_sketch_a_net_trunk():
    model = _dssa().eval()
    assert model.pretrained_cfg["input_size"] == (1, 225, 225)
    x = torch.randn(1, 1, 225, 225)
    with torch.no_grad():
        inter = model.forward_intermediates(x, intermediates_only=True)
        fmap = model.forward_features(x)
    assert [tuple(t.shape[1:]) for t in inter] == [(64, 35, 35), (128, 15, 15), (256, 7, 7)]
    assert fmap.shape == (1, 256, 7, 7)
    # the paper's fc6 sees the flattened 7x7x256 map: 12544 -> 512, fc7 512 -> 256, no fine projection
    assert model.head.fc6.weight.shape == (512, 7 * 7 * 256)
    assert model.head.fc7.weight.shape == (256, 512)
    assert isinstance(model.head.reduce, torch.nn.Identity) and isinstance(
        model.head.fine_proj, torch.nn.Identity
    )
    assert sum(p.numel() for p in model.parameters()) == 8_315_136


@pytest.mark.parametrize("hw", [(5, 9), (7, 7), (1, 3), (12, 4)])
def test_spatial_attention_formula_any_shape(hw):
    torch.manual_seed(0)
    att = SpatialAttention(6, 4).double()
    f = torch.randn(3, 6, *hw, dtype=torch.float64)
    out, mask = att(f)
    logits = att.conv2(torch.relu(att.conv1(f)))
    expected = torch.softmax(logits.reshape(3, -1), dim=1).reshape(3, 1, *hw)
    torch.testing.assert_close(mask, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(
        mask.sum(dim=(2, 3)), torch.ones(3, 1, dtype=torch.float64), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(out, f * (1 + hw[0] * hw[1] * mask), rtol=0, atol=0)
    paper = SpatialAttention(6, 4, residual="paper").double()
    paper.load_state_dict(att.state_dict())
    out, mask = paper(f)
    torch.testing.assert_close(out, f + f * mask, rtol=0, atol=0)


def test_uniform_attention_weighs_like_the_shortcut():
    """With a uniform mask the scaled residual doubles the map; the paper's form adds only 1/(H*W) of it."""
    att = SpatialAttention(3, 2)
    torch.nn.init.zeros_(att.conv2.weight)  # constant logits: a uniform mask
    f = torch.rand(2, 3, 7, 7)
    torch.testing.assert_close(att(f)[0], 2 * f)
    paper = SpatialAttention(3, 2, residual="paper")
    torch.nn.init.zeros_(paper.conv2.weight)
    torch.testing.assert_close(paper(f)[0], f * (1 + 1 / 49))
    with pytest.raises(ValueError, match="residual must be one of"):
        SpatialAttention(3, residual="sigmoid")


@pytest.mark.parametrize("branches", ["coarse+fine", "coarse", "fine"])
def test_fusion_branches(branches):
    torch.manual_seed(0)
    head = CoarseFineFusion(
        8, grid=(2, 2), coarse_chs=8, hidden_dim=6, coarse_dim=3, fine_dim=5, branches=branches
    )
    x = torch.randn(4, 8, 2, 2)
    parts = head.forward_branches(x)
    assert [p.shape[1] for p in parts] == {"coarse+fine": [3, 5], "coarse": [3], "fine": [5]}[branches]
    assert head(x).shape == (4, head.out_dim) and head.out_dim == sum(p.shape[1] for p in parts)
    assert hasattr(head, "fc6") == ("coarse" in branches)
    torch.testing.assert_close(head(x).norm(dim=1), torch.full((4,), len(parts) ** 0.5))


def test_fusion_formula_float64():
    torch.manual_seed(0)
    head = CoarseFineFusion(8, grid=(2, 2), coarse_chs=8, hidden_dim=6, coarse_dim=3, fine_dim=None).double()
    x = torch.randn(4, 8, 2, 2, dtype=torch.float64)
    coarse = head.fc7(torch.relu(head.fc6(x.flatten(1))))
    expected = torch.cat([F.normalize(coarse, dim=1), F.normalize(x.sum(dim=(2, 3)), dim=1)], dim=1)
    torch.testing.assert_close(head(x), expected, rtol=0, atol=1e-14)
    head.renormalize = True
    torch.testing.assert_close(head(x), expected / 2**0.5, rtol=0, atol=1e-14)


def test_fusion_reduces_and_projects_wide_trunks():
    head = CoarseFineFusion(1024, grid=(3, 3), coarse_chs=256, hidden_dim=32, coarse_dim=16, fine_dim=20)
    assert head.reduce[0].weight.shape == (256, 1024, 1, 1)
    assert head.fc6.weight.shape == (32, 256 * 9)
    assert head.fine_proj.weight.shape == (20, 1024)
    assert head(torch.randn(2, 1024, 5, 3)).shape == (2, 36) and head.out_dim == 36


def test_renormalize_gives_unit_embeddings():
    model = _dssa(renormalize=True).eval()
    with torch.no_grad():
        emb = model(torch.randn(2, 1, 225, 225))
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2), rtol=0, atol=1e-5)


def test_ablations_triplet_sn_and_no_attention():
    x = torch.randn(2, 1, 225, 225)
    triplet_sn = _dssa(attention=False, fusion=False).eval()
    assert triplet_sn.attention is None and triplet_sn.head_hidden_size == 256
    assert not any(n.startswith("attention") for n, _ in triplet_sn.named_parameters())
    with torch.no_grad():
        emb, att = triplet_sn.forward_with_attention(x)
    assert emb.shape == (2, 256)
    torch.testing.assert_close(att, torch.full((2, 1, 7, 7), 1 / 49), rtol=0, atol=0)
    no_fusion = _dssa(fusion=False).eval()
    assert no_fusion(x).shape == (2, 256) and no_fusion.attention is not None
    no_attention = _dssa(attention=False).eval()
    with torch.no_grad():
        # without attention the map is the trunk's own output
        torch.testing.assert_close(
            no_attention.forward_features(x), no_attention.trunk.forward_features(x), rtol=0, atol=0
        )
    assert no_attention(x).shape == (2, 512)


def test_coarse_branch_works_for_other_input_sizes():
    model = _dssa().eval()
    with torch.no_grad():
        for size in [(97, 97), (161, 289), (257, 225)]:
            emb, att = model.forward_with_attention(torch.randn(1, 1, *size))
            assert emb.shape == (1, 512)
            torch.testing.assert_close(att.sum(), torch.tensor(1.0), rtol=0, atol=1e-5)


def test_shared_trunk_ignores_modality():
    model = _dssa().eval()
    x = torch.randn(2, 1, 225, 225)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(model(x, modality="sketch"), ref, rtol=0, atol=0)
        torch.testing.assert_close(model(x, modality="photo"), ref, rtol=0, atol=0)
    assert model.photo_trunk is None


def test_separate_trunks():
    model = _dssa(shared=False).train()
    assert model.photo_trunk is not None
    x = torch.randn(2, 1, 225, 225)
    sketch, photo = model(x, modality="sketch"), model(x, modality="photo")
    assert not torch.allclose(sketch, photo)
    (sketch.sum() + photo.sum()).backward()
    for n, p in model.named_parameters():
        zero_at_start = n.startswith("attention.conv1")  # behind the zero-initialised conv2
        assert p.grad is not None and (zero_at_start or p.grad.abs().sum() > 0), f"no gradient for {n}"
    with pytest.raises(ValueError, match="modality='sketch' or modality='photo'"):
        model(x)
    emb, att = model.forward_with_attention(x, modality="photo")
    torch.testing.assert_close(emb, photo, rtol=0, atol=1e-6)


def test_backbone_keyword_takes_the_trunks_data_config():
    model = timm.create_model("dssa", backbone="resnet18")
    assert isinstance(model, DSSA) and model.backbone == "resnet18"
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert model.pretrained_cfg["mean"] == timm.models.get_pretrained_cfg("resnet18").mean
    assert model.pretrained_cfg["first_conv"] == "trunk.conv1"
    assert model.trunk.conv1.in_channels == 3
    assert model.pretrained_cfg.get("min_input_size") is None  # resnet18 has none; the paper's trunk has one
    paper_trunk = timm.create_model("dssa_resnet50", backbone="sketch_a_net")
    assert paper_trunk.pretrained_cfg["min_input_size"] == (1, 129, 129)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 80)).shape == (1, 512)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(backbone="no_such_net"), ValueError, "not a timm model"),
        (dict(global_pool="avg"), ValueError, "global_pool must be"),
        (dict(pretrained_backbone="somewhere"), ValueError, "pretrained_backbone must be"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, error, match):
    with pytest.raises(error, match=match):
        timm.create_model("dssa", **kwargs)


def test_bad_modality():
    model = _dssa().eval()
    with pytest.raises(ValueError, match="modality must be 'sketch', 'photo' or None"):
        model(torch.randn(1, 1, 225, 225), modality="drawing")


def test_holef_matrix_lives_in_the_model_and_survives_a_save(tmp_path):
    from fgsbir_plugin.holef import HOLEFDistance
    from fgsbir_plugin.model_io import load_model, save_model

    model = timm.create_model("dssa", holef=True).eval()
    assert isinstance(model.distance, HOLEFDistance)
    assert model.distance.weight_matrix().shape == (512, 512)
    with torch.no_grad():
        model.distance.weight.add_(0.01 * torch.randn(512, 512))
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded.distance, HOLEFDistance)
    assert torch.equal(loaded.distance.weight_matrix(), model.distance.weight_matrix())
    nonneg = timm.create_model("dssa", holef=True, holef_nonnegative=True)
    assert (nonneg.distance.weight_matrix() > 0).all()


def test_sketch_a_net_classifier():
    model = timm.create_model("sketch_a_net").eval()
    assert model.num_classes == 250 and model.pretrained_cfg["input_size"] == (1, 225, 225)
    x = torch.randn(2, 1, 225, 225)
    with torch.no_grad():
        logits = model(x)
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    assert logits.shape == (2, 250) and pre.shape == (2, 512)
    assert model.get_classifier().weight.shape == (250, 512)
    # conv1 64x15x15 stride 3, conv2 128x5x5, conv3-5 256x3x3
    assert [tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Conv2d)] == [
        (64, 1, 15, 15),
        (128, 64, 5, 5),
        (256, 128, 3, 3),
        (256, 256, 3, 3),
        (256, 256, 3, 3),
    ]


def test_sketch_a_net_head_exists_while_it_pools_or_classifies():
    """No pooling and no classes is a trunk (no fc6/fc7); a classifier brings them back, even unpooled."""
    trunk = timm.create_model("sketch_a_net", num_classes=0, global_pool="")
    assert not any(n.startswith("head") for n, _ in trunk.named_parameters())
    trunk.reset_classifier(3)
    assert trunk.get_classifier().out_features == 3 and trunk.head_hidden_size == 256
    x = torch.randn(1, 1, 129, 129)
    with torch.no_grad():
        assert trunk.eval()(x).shape == (1, 256, 3, 3)  # global_pool='' still returns the map
        trunk.reset_classifier(3, "grid")
        assert trunk(x).shape == (1, 3) and trunk.head_hidden_size == 512
    fc6 = trunk.head.fc6.weight
    trunk.reset_classifier(5)
    assert trunk.head.fc6.weight is fc6  # a new classifier keeps the trained fc6/fc7


@pytest.mark.parametrize(
    "backbone,input_size,backbone_kwargs,fmt,grid",
    [
        ("convnext_atto", (3, 64, 96), {}, "NCHW", (2, 3)),
        # two prefix tokens (class + distillation) dropped before the 4x6 patch grid
        ("deit_tiny_distilled_patch16_224", (3, 64, 96), {"dynamic_img_size": True}, "NLC", (4, 6)),
        ("swin_tiny_patch4_window7_224", (3, 224, 224), {}, "NHWC", (7, 7)),
    ],
)
def test_other_backbone_layouts(backbone, input_size, backbone_kwargs, fmt, grid):
    model = _dssa(backbone=backbone, backbone_kwargs=backbone_kwargs).eval()
    assert model.trunk_fmt == fmt
    with torch.no_grad():
        emb, att = model.forward_with_attention(torch.randn(1, *input_size))
    assert emb.shape == (1, 512) and att.shape == (1, 1, *grid)
    torch.testing.assert_close(att.sum(), torch.tensor(1.0), rtol=0, atol=1e-5)


def test_sketch_a_net_too_small_input_is_explained():
    from fgsbir_plugin.models.sketch_a_net import MIN_INPUT_SIZE

    model = timm.create_model("dssa").eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, MIN_INPUT_SIZE, MIN_INPUT_SIZE)).shape == (1, 512)
        with pytest.raises(ValueError, match=f"at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels, got 80x96"):
            model(torch.zeros(1, 1, 80, 96))


def test_trunk_level_cuts_the_trunk_and_round_trips(tmp_path):
    from fgsbir_plugin.model_io import load_model, save_model

    torch.manual_seed(0)
    model = timm.create_model("dssa_efficientnet_lite0", trunk_level=3, attention_chs=8).eval()
    assert model.num_features == 112 and len(model.trunk.blocks) == 5
    assert model.feature_info[-1]["num_chs"] == 112 and len(model.feature_info) == 4
    x = torch.randn(1, 3, 96, 96)
    assert model.forward_features(x).shape == (1, 112, 6, 6)
    save_model(model, tmp_path / "m")
    torch.testing.assert_close(load_model(tmp_path / "m")(x), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a feature level"):
        timm.create_model("dssa_efficientnet_lite0", trunk_level=7)
