"""Property test: every bad image batch and every bad target gets one of the library's
errors (a :class:`captum_daam.DAAMError`, nothing else), and the model is left exactly as
it was: no hook, the same training flags, ``requires_grad`` and parameters, no ``.grad``.

One tiny random timm ViT (32 px, 8 px patches, 10 classes) serves every example.
"""

from functools import cache
from typing import Any, Callable, Dict, Tuple

import numpy as np
import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captum_daam import (
    DAAM,
    DAAMError,
    DAAMInput,
    ViTLayerGradCam,
    attention_rollout,
)
from captum_daam.adapters import get_adapter
from model_state import assert_unchanged, snapshot

SIZE, CHANNELS, CLASSES = 32, 3, 10
FUZZ = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@cache
def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=SIZE,
        patch_size=8,
        depth=2,
        num_classes=CLASSES,
    ).eval()


def _explainers() -> Dict[str, Callable[..., Any]]:
    model = _model()
    return {
        "DAAM": lambda x, t: DAAM(model).attribute(x, target=t),
        "DAAMInput": lambda x, t: DAAMInput(model).attribute(x, target=t),
        "ViTLayerGradCam": lambda x, t: ViTLayerGradCam(
            model, get_adapter(model).gradcam_layer
        ).attribute(x, target=t),
        "attention_rollout": lambda x, t: attention_rollout(model, x),
    }


def _good(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, CHANNELS, SIZE, SIZE)


def _inference(images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return images.clone()


@st.composite
def bad_images(draw) -> Tuple[str, Any]:
    """(label, images) that no explainer may accept."""
    batch = draw(st.integers(1, 3))
    kind = draw(
        st.sampled_from(
            [
                "rank",
                "channels",
                "size",
                "dtype",
                "empty batch",
                "non-finite",
                "non-tensor",
                "empty tuple",
                "tuple of bad images",
            ]
        )
    )
    if kind == "rank":
        dims = draw(st.sampled_from([0, 1, 2, 3, 5]))
        shape = (
            [batch, CHANNELS, SIZE, SIZE, 1][:dims]
            if dims < 5
            else [1, batch, CHANNELS, SIZE, SIZE]
        )
        images = torch.randn(shape)
    elif kind == "channels":
        images = torch.randn(batch, draw(st.sampled_from([0, 1, 2, 4])), SIZE, SIZE)
    elif kind == "size":
        height, width = draw(
            st.tuples(
                st.sampled_from([0, 1, 8, 16, 31, 32, 33, 48]),
                st.sampled_from([0, 1, 8, 16, 31, 33, 48]),
            )
        )
        images = torch.randn(batch, CHANNELS, height, width)
    elif kind == "dtype":
        dtype = draw(
            st.sampled_from(
                [
                    torch.uint8,
                    torch.int32,
                    torch.int64,
                    torch.bool,
                    torch.complex64,
                    torch.float64,
                    torch.float16,
                    torch.bfloat16,
                ]
            )
        )
        images = _good(batch).to(dtype)
    elif kind == "empty batch":
        images = torch.randn(0, CHANNELS, SIZE, SIZE)
    elif kind == "non-finite":
        images = _good(batch)
        index = tuple(draw(st.integers(0, n - 1)) for n in images.shape)
        images[index] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    elif kind == "non-tensor":
        images = draw(
            st.sampled_from(
                [
                    None,
                    "images.png",
                    3,
                    1.5,
                    [_good(batch)],
                    {"x": _good(batch)},
                    _good(batch).numpy(),
                    np.zeros((batch, CHANNELS, SIZE, SIZE), np.float32),
                ]
            )
        )
    elif kind == "empty tuple":
        return kind, ()
    else:
        label, inner = draw(bad_images().filter(lambda c: isinstance(c[1], torch.Tensor)))
        return kind, (inner,)
    if isinstance(images, torch.Tensor) and draw(st.booleans()):
        images = _inference(images)
    return kind, images


@st.composite
def bad_targets(draw) -> Tuple[str, Any]:
    """(label, target) that no explainer may accept for a batch of two."""
    kind = draw(
        st.sampled_from(
            [
                "out of range",
                "negative",
                "huge",
                "float",
                "bool",
                "wrong length",
                "nested",
                "string",
                "2-D tensor",
                "float tensor",
                "bool tensor",
                "complex tensor",
                "tuple",
                "list with None",
            ]
        )
    )
    options = {
        "out of range": st.sampled_from(
            [CLASSES, CLASSES + 1, 1000, [0, CLASSES], torch.tensor([CLASSES, 0])]
        ),
        "negative": st.sampled_from([-1, -CLASSES, [-1, 0], torch.tensor([0, -3])]),
        "huge": st.sampled_from([2**63, 2**70, -(2**70), [2**64, 0]]),
        "float": st.sampled_from([1.0, 0.5, float("nan"), [1.0, 2.0]]),
        "bool": st.sampled_from([True, False, [True, False]]),
        "wrong length": st.lists(st.integers(0, CLASSES - 1), min_size=3, max_size=5)
        | st.just([1]).map(lambda t: t + [2, 3])
        | st.just(torch.tensor([1, 2, 3])),
        "nested": st.sampled_from([[[1], [2]], [[1, 2]], [(1, 2), (3, 4)]]),
        "string": st.sampled_from(["cat", ["cat", "dog"], "3"]),
        "2-D tensor": st.sampled_from(
            [torch.tensor([[1, 2]]), torch.tensor([[1], [2]]), torch.zeros(2, 2, dtype=torch.long)]
        ),
        "float tensor": st.sampled_from([torch.tensor([0.0, 1.0]), torch.tensor(1.0)]),
        "bool tensor": st.sampled_from([torch.tensor([True, False]), torch.tensor(True)]),
        "complex tensor": st.just(torch.tensor([1 + 0j, 2 + 0j])),
        "tuple": st.sampled_from([(1, 2), ((1, 2),), ()]),
        "list with None": st.sampled_from([[None, 1], [1, None]]),
    }
    return kind, draw(options[kind])


def _expect_library_error(name: str, label: str, call: Callable[[], Any]) -> None:
    model = _model()
    before = snapshot(model)
    with pytest.raises(DAAMError) as caught:
        call()
    assert isinstance(caught.value, (ValueError, TypeError)), type(caught.value)
    assert str(caught.value), "the message names the problem"
    assert_unchanged(model, before)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["DAAM", "DAAMInput", "ViTLayerGradCam", "attention_rollout"])
@FUZZ
@given(case=bad_images(), target=st.sampled_from([None, 1, [1, 2]]))
def test_bad_images_raise_a_library_error(name, case, target):
    label, images = case
    explain = _explainers()[name]
    _expect_library_error(name, label, lambda: explain(images, target))


@pytest.mark.parametrize("name", ["DAAM", "DAAMInput", "ViTLayerGradCam"])
@FUZZ
@given(case=bad_targets(), inference=st.booleans())
def test_bad_targets_raise_a_library_error(name, case, inference):
    label, target = case
    images = _inference(_good()) if inference else _good()
    explain = _explainers()[name]
    _expect_library_error(name, label, lambda: explain(images, target))


def test_the_cases_are_accepted_when_fixed():
    """The generators' good counterparts pass: the errors come from the bad parts."""
    model = _model()
    before = snapshot(model)
    for name, explain in _explainers().items():
        maps = explain(_inference(_good()), [1, 2])
        assert maps.shape[0] == 2 and bool(torch.isfinite(maps).all()), name
    assert_unchanged(model, before)
