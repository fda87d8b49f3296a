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
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with pytest.raises(
        UnsupportedModelError, match="Sequential.*Supported: timm VisionTransformer"
    ):
        DAAM(cnn)
    resnet = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    with pytest.raises(UnsupportedModelError, match="ResNet"):
        DAAM(resnet)
    with pytest.raises(TypeError, match="nn.Module"):
        DAAM(lambda x: x)


def test_pooled_vit_needs_the_all_queries_mode():
    gap = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        class_token=False,
        global_pool="avg",
        depth=1,
    )
    with pytest.raises(UnsupportedModelError, match="no class token.*queries='all'"):
        DAAM(gap, queries="readout")
    assert DAAM(gap).queries == "all"
    avg = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        global_pool="avg",
        depth=1,
    )
    with pytest.raises(UnsupportedModelError, match="global_pool='avg'.*queries='all'"):
        DAAM(avg, queries="readout")
    assert DAAM(avg).queries == "all"
    with pytest.raises(ValueError, match="token='cls'.*queries='all'"):
        DAAM(avg).attribute(torch.randn(1, 3, 32, 32), token="cls")
    with pytest.raises(ValueError, match="queries must be one of"):
        DAAM(avg, queries="every")
    pooled = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        global_pool="map",
        depth=1,
    )
    with pytest.raises(UnsupportedModelError, match="attention-pooling head"):
        DAAM(pooled)


def test_class_attention_layers_have_no_all_queries_mode():
    cait = timm.create_model(
        "cait_xxs24_224", pretrained=False, img_size=32, patch_size=8, depth=1, depth_token_only=1
    )
    with pytest.raises(UnsupportedModelError, match="all-queries mode is not available"):
        DAAM(cait, queries="all")


def test_scale_norm_attention_is_rejected():
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=1,
        scale_attn_norm=True,
    )
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
    headless = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1, num_classes=0
    ).eval()
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


def test_the_error_classes_form_the_documented_hierarchy():
    from captum_daam import DAAMError, InvalidFileError, InvalidInputError, InvalidInputTypeError

    assert issubclass(DAAMError, Exception) and not issubclass(DAAMError, ValueError)
    for cls in (UnsupportedModelError, InvalidInputError, InvalidFileError):
        assert issubclass(cls, DAAMError) and issubclass(cls, ValueError)
    assert issubclass(InvalidInputTypeError, InvalidInputError)
    assert issubclass(InvalidInputTypeError, TypeError)
    assert not issubclass(InvalidFileError, InvalidInputError)
    assert not issubclass(UnsupportedModelError, InvalidInputError)


def _entry_points(vit):
    from captum_daam import MemoryBank, ViTLayerGradCam
    from captum_daam.adapters import get_adapter

    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    bank = MemoryBank(torch.randn(6, 4), torch.arange(6))
    gradcam_layer = get_adapter(vit).gradcam_layer
    return {
        "DAAM of a CNN": lambda: DAAM(cnn),
        "DAAM of a function": lambda: DAAM(lambda x: x),
        "bad images": lambda: DAAM(vit).attribute(torch.randn(2, 3, 48, 48)),
        "images of another dtype": lambda: DAAM(vit).attribute(good_images().double()),
        "bad target": lambda: DAAM(vit).attribute(good_images(), target=[1, 99]),
        "boolean target": lambda: DAAM(vit).attribute(good_images(), target=torch.tensor(True)),
        "huge target": lambda: DAAM(vit).attribute(good_images(), target=2**70),
        "bad layer": lambda: DAAM(vit, layer=vit.blocks[0].mlp),
        "bad readout token": lambda: DAAM(vit).attribute(good_images(), token="dist"),
        "ViTLayerGradCam bad layer": lambda: ViTLayerGradCam(vit, nn.Linear(2, 2)),
        "ViTLayerGradCam list input": lambda: ViTLayerGradCam(vit, gradcam_layer).attribute(
            [good_images()], target=1
        ),
        "MemoryBank search bad k": lambda: bank.search(torch.randn(2, 4), k=0),
        "MemoryBank search k too large": lambda: bank.search(torch.randn(2, 4), k=7),
    }


@pytest.mark.parametrize(
    "entry",
    [
        "DAAM of a CNN",
        "DAAM of a function",
        "bad images",
        "images of another dtype",
        "bad target",
        "boolean target",
        "huge target",
        "bad layer",
        "bad readout token",
        "ViTLayerGradCam bad layer",
        "ViTLayerGradCam list input",
        "MemoryBank search bad k",
        "MemoryBank search k too large",
    ],
)
def test_entry_points_raise_the_library_errors(vit, entry):
    from captum_daam import DAAMError

    before = snapshot(vit)
    with pytest.raises(DAAMError) as caught:
        _entry_points(vit)[entry]()
    assert isinstance(caught.value, (ValueError, TypeError))
    assert_unchanged(vit, before)


def test_non_finite_scores_are_a_library_error_and_a_floating_point_error(vit):
    from captum_daam import InvalidInputError

    before = snapshot(vit)
    with torch.no_grad():
        vit.head.bias.fill_(float("inf"))
    try:
        with pytest.raises(InvalidInputError, match="non-finite logits") as caught:
            DAAM(vit).attribute(good_images(), target=1)
        assert isinstance(caught.value, FloatingPointError)
    finally:
        with torch.no_grad():
            vit.head.bias.copy_(before["head.bias.value"])
    assert_unchanged(vit, before)


def _evaluation_calls():
    from captum_daam import linear_mapping, to_input_space, upsample
    from captum_daam.evaluation import (
        blurred,
        box_accuracy,
        box_energy,
        boxes_mask,
        energy_in_boxes,
        localization_ious,
        map_similarities,
    )

    maps = torch.rand(2, 1, 7, 7)
    return {
        "upsample of a list": lambda: upsample([maps], 14),
        "upsample of complex maps": lambda: upsample(maps.to(torch.complex64), 14),
        "upsample of maps without pixels": lambda: upsample(torch.rand(2, 1, 0, 0), 14),
        "linear_mapping of None": lambda: linear_mapping(None),
        "to_input_space of an array": lambda: to_input_space(
            maps.numpy(), torch.rand(2, 3, 28, 28)
        ),
        "map_similarities of None": lambda: map_similarities(None, maps),
        "box_energy without boxes": lambda: box_energy(maps, None),
        "box_energy with bad boxes": lambda: box_energy(maps, [torch.rand(7, 7)] * 2),
        "localization_ious without boxes": lambda: localization_ious(maps, None),
        "boxes_mask of (7, 7)": lambda: boxes_mask(torch.rand(7, 7), (7, 7)),
        "energy_in_boxes of other masks": lambda: energy_in_boxes(
            maps, torch.ones(2, 5, 5, dtype=torch.bool)
        ),
        "box_accuracy of strings": lambda: box_accuracy("ious"),
        "blurred of a 5-D tensor": lambda: blurred(torch.rand(1, 2, 3, 8, 8), 1.0),
    }


@pytest.mark.parametrize(
    "call",
    [
        "upsample of a list",
        "upsample of complex maps",
        "upsample of maps without pixels",
        "linear_mapping of None",
        "to_input_space of an array",
        "map_similarities of None",
        "box_energy without boxes",
        "box_energy with bad boxes",
        "localization_ious without boxes",
        "boxes_mask of (7, 7)",
        "energy_in_boxes of other masks",
        "box_accuracy of strings",
        "blurred of a 5-D tensor",
    ],
)
def test_display_and_evaluation_functions_raise_the_library_errors(call):
    """Bad maps, boxes and IoUs reach no torch, numpy or torchvision error."""
    from captum_daam import DAAMError

    with pytest.raises(DAAMError):
        _evaluation_calls()[call]()
