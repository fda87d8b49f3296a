"""Bad input gets a clear error that names the problem and the fix, and leaves the
model exactly as it was."""

import pytest
import timm
import torch
from torch import nn

from captum_daam import DAAM, UnsupportedModelError
from families import build
from model_state import assert_unchanged, snapshot


@pytest.fixture
def vit():
    return build("vit", torch.float32)


def good_images(batch=2):
    return torch.randn(batch, 3, 32, 32)


def test_non_vit_models_are_rejected_by_name():
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10))
    with pytest.raises(UnsupportedModelError, match="Sequential.*Supported: timm VisionTransformer"):
        DAAM(cnn)
    resnet = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    with pytest.raises(UnsupportedModelError, match="ResNet"):
        DAAM(resnet)
    with pytest.raises(TypeError, match="nn.Module"):
        DAAM(lambda x: x)


def test_pooled_vit_needs_the_all_queries_mode():
    gap = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                            patch_size=8, class_token=False, global_pool="avg", depth=1)
    with pytest.raises(UnsupportedModelError, match="no class token.*queries='all'"):
        DAAM(gap, queries="readout")
    assert DAAM(gap).queries == "all"
    avg = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                            patch_size=8, global_pool="avg", depth=1)
    with pytest.raises(UnsupportedModelError, match="global_pool='avg'.*queries='all'"):
        DAAM(avg, queries="readout")
    assert DAAM(avg).queries == "all"
    with pytest.raises(ValueError, match="token='cls'.*queries='all'"):
        DAAM(avg).attribute(torch.randn(1, 3, 32, 32), token="cls")
    with pytest.raises(ValueError, match="queries must be one of"):
        DAAM(avg, queries="every")
    pooled = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                               patch_size=8, global_pool="map", depth=1)
    with pytest.raises(UnsupportedModelError, match="attention-pooling head"):
        DAAM(pooled)


def test_class_attention_layers_have_no_all_queries_mode():
    cait = timm.create_model("cait_xxs24_224", pretrained=False, img_size=32, patch_size=8,
                             depth=1, depth_token_only=1)
    with pytest.raises(UnsupportedModelError, match="all-queries mode is not available"):
        DAAM(cait, queries="all")


def test_scale_norm_attention_is_rejected():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                              patch_size=8, depth=1, scale_attn_norm=True)
    with pytest.raises(UnsupportedModelError, match="scale_norm"):
        DAAM(model)


def test_layer_must_be_an_attention_module(vit):
    with pytest.raises(ValueError, match="model.blocks\\[-1\\].attn"):
        DAAM(vit, layer=vit.blocks[0].mlp)
    with pytest.raises(ValueError, match="at least one layer"):
        DAAM(vit, layer=[])


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (torch.randn(3, 32, 32), ValueError, "unsqueeze"),
        (torch.randn(2, 3, 32), ValueError, "\\(N, C, H, W\\)"),
        (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), TypeError, "floating point"),
        (torch.randn(2, 1, 32, 32), ValueError, "expects 3"),
        (torch.randn(2, 3, 48, 48), ValueError, "dynamic_img_size=True"),
        (torch.randn(0, 3, 32, 32), ValueError, "batch size 0"),
        (torch.full((2, 3, 32, 32), float("nan")), ValueError, "NaN"),
        ([torch.randn(2, 3, 32, 32)], TypeError, "tensor of images"),
    ],
)
def test_bad_inputs(vit, bad, error, message):
    before = snapshot(vit)
    with pytest.raises(error, match=message):
        DAAM(vit).attribute(bad)
    assert_unchanged(vit, before)


@pytest.mark.parametrize(
    "target, error, message",
    [
        (10, ValueError, "out of range.*\\[0, 9\\]"),
        (-1, ValueError, "out of range"),
        ([1, 12], ValueError, "\\[12\\] out of range"),
        ([1, 2, 3], ValueError, "one int class index per example"),
        (torch.tensor([0.5, 1.0]), TypeError, "integer tensor"),
        (torch.tensor([[1, 2]]), ValueError, "shape \\(1, 2\\)"),
        ((1, 2), TypeError, "unsupported target"),
    ],
)
def test_bad_targets(vit, target, error, message):
    before = snapshot(vit)
    with pytest.raises(error, match=message):
        DAAM(vit).attribute(good_images(), target=target)
    assert_unchanged(vit, before)


def test_accepted_target_forms_agree(vit):
    daam = DAAM(vit)
    images = good_images()
    expected = daam.attribute(images, target=[4, 4])
    for form in (4, (4,), torch.tensor(4), torch.tensor([4, 4]), [torch.tensor(4), 4]):
        torch.testing.assert_close(daam.attribute(images, target=form), expected)


def test_unknown_readout_token(vit):
    with pytest.raises(ValueError, match="choose one of \\['cls'\\]"):
        DAAM(vit).attribute(good_images(), token="dist")


def test_headless_model_points_to_self_supervised_variant():
    headless = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                 patch_size=8, depth=1, num_classes=0).eval()
    before = snapshot(headless)
    with pytest.raises(ValueError, match="num_classes=0.*SelfSupervisedDAAM"):
        DAAM(headless)
    assert_unchanged(headless, before)


def test_inference_mode_is_refused(vit):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="no_grad\\(\\) is fine"):
        DAAM(vit).attribute(good_images())


def test_model_failure_mid_forward_leaves_no_hooks(vit):
    before = snapshot(vit)

    def boom(module, args):
        raise RuntimeError("boom")

    handle = vit.blocks[1].register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            DAAM(vit).attribute(good_images())
    finally:
        handle.remove()
    assert_unchanged(vit, before)
