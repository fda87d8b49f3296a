"""The evaluation harness's explanation methods against explicit slow references.

Small random timm ViTs from tests/families.py, float64: a plain ViT, a distilled DeiT
(2 prefix tokens), a register model (5 prefix tokens) and a dynamic-size model at
non-square sizes. References are computed here by hand: the grad-cam family's CAMs from
the last block's ``norm1`` activations and gradients, Chefer's rollout and the raw
attention from the explicit (non-fused) attention matrices of a deep copy.
"""

import copy
import sys
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_daam import (
    DAAM,
    UnsupportedModelError,
    attention_rollout,
    gradient_weighted_rollout,
    raw_attention,
)
from captum_daam.adapters import get_adapter
from captum_daam.baselines import PackageCAM, check_batch
from captum_daam.evaluation.methods import (
    GRAD_CAM_CLASSES,
    METHODS,
    available_methods,
    make_explainer,
)
from families import FAMILIES, NUM_CLASSES, build
from model_state import assert_unchanged, snapshot

pytest.importorskip("pytorch_grad_cam")

# family -> (prefix tokens, one image size)
CASES = {
    "vit": (1, (32, 32)),
    "deit_distilled": (2, (32, 32)),
    "vit_registers": (5, (28, 28)),
    "dynamic": (1, (24, 40)),
}


def _batch(name, size=None, count=2, seed=0):
    size = size or CASES[name][1]
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, *size, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
    return images, targets


def _grid(name, size):
    patch = FAMILIES[name].kwargs["patch_size"]
    return size[0] // patch, size[1] // patch


def _close(actual, expected, rtol=1e-5):
    """Maps (N, 1, h, w) against a reference (N, 1, h, w), or (N, h, w) as written here."""
    expected = expected.to(torch.float32)
    if expected.dim() == actual.dim() - 1:
        expected = expected[:, None]
    scale = expected.abs().max().clamp(min=1e-12)
    assert actual.shape == expected.shape
    assert float(expected.abs().max()) > 0, "degenerate reference: all zero"
    torch.testing.assert_close(actual / scale, expected / scale, rtol=rtol, atol=rtol)


# --- references --------------------------------------------------------------------------


def norm1_tokens(model, images, targets, prefix, grid):
    """Activations and gradients of the last block's norm1 on the grid, (N, D, r, c)."""
    model = copy.deepcopy(model)
    store = {}

    def hook(module, args, output):
        output.retain_grad()
        store["out"] = output

    model.blocks[-1].norm1.register_forward_hook(hook)
    logits = model(images)
    logits.gather(1, targets[:, None]).sum().backward()
    out = store["out"]
    count = grid[0] * grid[1]

    def to_grid(tokens):
        patches = tokens[:, prefix : prefix + count]
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, *grid).detach()

    return to_grid(out), to_grid(out.grad)


def norm1_case(family):
    """A model of ``family``, its batch and targets, its prefix count and patch grid."""
    model = build(family)
    images, targets = _batch(family)
    return model, images, targets, CASES[family][0], _grid(family, images.shape[-2:])


def reference_cam(kind, act, grad):
    if kind == "gradcam":
        weights = grad.mean(dim=(2, 3))
        return (weights[:, :, None, None] * act).sum(1).clamp(min=0)
    if kind == "layercam":
        return (grad.clamp(min=0) * act).sum(1).clamp(min=0)
    sum_act = act.sum(dim=(2, 3), keepdim=True)
    if kind == "xgradcam":
        weights = (grad * act / (sum_act + 1e-7)).sum(dim=(2, 3))
    else:  # gradcam++, Chattopadhay et al. eq. 19
        alpha = grad**2 / (2 * grad**2 + sum_act * grad**3 + 1e-6)
        alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
        weights = (grad.clamp(min=0) * alpha).sum(dim=(2, 3))
    return (weights[:, :, None, None] * act).sum(1).clamp(min=0)


def reference_eigencam(act):
    """First principal component of the centred patch features, both signs."""
    batch, channels, rows, cols = act.shape
    flat = act.reshape(batch, channels, -1).transpose(1, 2)
    flat = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    projection = (flat @ vh[:, 0, :, None]).reshape(batch, rows, cols)
    return projection.clamp(min=0), (-projection).clamp(min=0)


def reference_scorecam(model, images, targets, act):
    """Channel weights: softmax over channels of the target score of the image masked by
    each channel's (bilinearly upsampled, min-max normalised) map."""
    maps = []
    for image, target, features in zip(images, targets, act):
        up = F.interpolate(
            features[None], size=image.shape[-2:], mode="bilinear", align_corners=True
        )[0]
        low = up.amin(dim=(1, 2), keepdim=True)
        high = up.amax(dim=(1, 2), keepdim=True)
        masks = (up - low) / (high - low + 1e-8)
        with torch.no_grad():
            scores = model(image[None] * masks[:, None])[:, target]
        weights = scores.softmax(0)
        maps.append((weights[:, None, None] * features).sum(0).clamp(min=0))
    return torch.stack(maps)


def explicit_attention(model, images, targets):
    """Every block's post-softmax attention and its gradient, from a deep copy with the
    non-fused attention path (the matrix caught at ``attn_drop``)."""
    model = copy.deepcopy(model)
    found = []

    def hook(module, args, output):
        output.retain_grad()
        found.append(output)

    for block in model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(hook)
    logits = model(images)
    logits.gather(1, targets[:, None]).sum().backward()
    assert len(found) == len(model.blocks) and all(a.grad is not None for a in found)
    return [(a.detach(), a.grad) for a in found]


def reference_chefer(attentions, row, prefix, grid):
    tokens = attentions[0][0].shape[-1]
    relevance = torch.eye(tokens, dtype=torch.float64)
    for attention, gradient in attentions:
        fused = (gradient * attention).clamp(min=0).mean(dim=1)
        relevance = relevance + fused @ relevance
    count = grid[0] * grid[1]
    return relevance[:, row, prefix : prefix + count].reshape(-1, *grid)


def reference_raw(attentions, row, prefix, grid):
    last = attentions[-1][0]
    count = grid[0] * grid[1]
    return last[:, :, row, prefix : prefix + count].mean(1).reshape(-1, *grid)


# --- every method: shape, dtype, sign ----------------------------------------------------


@pytest.mark.parametrize("family", list(CASES))
def test_every_method_shape_dtype_non_negative(family):
    model = build(family)
    images, targets = _batch(family)
    grid = _grid(family, images.shape[-2:])
    for name in available_methods():
        maps = make_explainer(name, model)(images, targets)
        expected = tuple(images.shape[-2:]) if name == "integrated_gradients" else grid
        assert maps.shape == (2, 1, *expected), name
        assert maps.dtype == torch.float32 and maps.device.type == "cpu", name
        assert bool(torch.isfinite(maps).all()) and float(maps.min()) >= 0, name
        assert float(maps.amax()) > 0, f"{name}: all-zero maps"


def test_registry_order_and_names():
    required = (
        "daam",
        "gradcam",
        "gradcam++",
        "xgradcam",
        "layercam",
        "eigencam",
        "scorecam",
        "rollout",
        "chefer",
        "raw_attention",
        "integrated_gradients",
        "uniform",
    )
    assert [name for name in METHODS if name in required] == list(required)
    assert len(set(METHODS)) == len(METHODS) and set(GRAD_CAM_CLASSES) < set(METHODS)
    assert available_methods() == METHODS  # grad-cam is installed here


# --- the grad-cam family against references by hand ---------------------------------------


@pytest.mark.parametrize("family", ["vit", "deit_distilled", "vit_registers"])
@pytest.mark.parametrize("kind", ["gradcam", "layercam", "xgradcam", "gradcam++"])
def test_gradient_cams_match_reference(family, kind):
    model, images, targets, prefix, grid = norm1_case(family)
    act, grad = norm1_tokens(model, images, targets, prefix, grid)
    _close(make_explainer(kind, model)(images, targets), reference_cam(kind, act, grad))


@settings(max_examples=6)
@given(rows=st.integers(1, 4), cols=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_gradcam_and_layercam_any_grid(rows, cols, seed):
    """Dynamic-size model at non-square sizes: the grid comes from the adapter."""
    model = build("dynamic")
    images, targets = _batch("dynamic", (8 * rows, 8 * cols), seed=seed)
    act, grad = norm1_tokens(model, images, targets, 1, (rows, cols))
    for kind in ("gradcam", "layercam"):
        maps = make_explainer(kind, model)(images, targets)
        assert maps.shape == (2, 1, rows, cols)
        expected = reference_cam(kind, act, grad).float()
        if float(expected.abs().max()) == 0:  # one patch: may be zero after the ReLU
            assert float(maps.abs().max()) == 0
        else:
            _close(maps, expected)


@pytest.mark.parametrize("family", ["vit", "vit_registers"])
def test_eigencam_matches_principal_component(family):
    model, images, targets, prefix, grid = norm1_case(family)
    act, _ = norm1_tokens(model, images, targets, prefix, grid)
    maps = make_explainer("eigencam", model)(images, targets)
    positive, negative = reference_eigencam(act)
    for i in range(images.shape[0]):  # the SVD's sign is arbitrary, per image
        scale = float(positive[i].abs().max() + negative[i].abs().max())
        errors = [
            float((maps[i, 0] - ref[i].float()).abs().max()) / scale for ref in (positive, negative)
        ]
        assert min(errors) < 1e-5, errors


@pytest.mark.parametrize("family", ["vit", "deit_distilled"])
def test_scorecam_matches_reference(family):
    model, images, targets, prefix, grid = norm1_case(family)
    act, _ = norm1_tokens(model, images, targets, prefix, grid)
    expected = reference_scorecam(model, images, targets, act)
    counted = copy.deepcopy(model)
    calls = []
    counted.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    channels = act.shape[1]
    for batch_size in (7, 64):  # batching must not change the result
        calls.clear()
        maps = make_explainer("scorecam", counted, batch_size=batch_size)(images, targets)
        _close(maps, expected)
        per_image = -(-channels // batch_size)
        assert len(calls) == 1 + images.shape[0] * per_image  # the forward, then masks
        assert max(calls[1:]) == min(batch_size, channels)


# --- Chefer and raw attention against the explicit attention ------------------------------


@pytest.mark.parametrize("family", ["vit", "deit_distilled", "vit_registers", "dynamic"])
def test_chefer_and_raw_attention_match_explicit_attention(family):
    model, images, targets, prefix, grid = norm1_case(family)
    attentions = explicit_attention(model, images, targets)
    _close(
        make_explainer("chefer", model)(images, targets),
        reference_chefer(attentions, 0, prefix, grid),
    )
    _close(
        make_explainer("raw_attention", model)(images, targets),
        reference_raw(attentions, 0, prefix, grid),
    )


def test_chefer_and_raw_attention_distillation_token():
    model = build("deit_distilled")
    images, targets = _batch("deit_distilled")
    attentions = explicit_attention(model, images, targets)
    chefer = make_explainer("chefer", model, token="dist")(images, targets)
    raw = make_explainer("raw_attention", model, token="dist")(images, targets)
    _close(chefer, reference_chefer(attentions, 1, 2, (4, 4)))
    _close(raw, reference_raw(attentions, 1, 2, (4, 4)))


@settings(max_examples=6)
@given(rows=st.integers(1, 4), cols=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_chefer_any_grid_and_target(rows, cols, seed):
    model = build("dynamic")
    images, targets = _batch("dynamic", (8 * rows, 8 * cols), seed=seed)
    attentions = explicit_attention(model, images, targets)
    _close(
        make_explainer("chefer", model)(images, targets),
        reference_chefer(attentions, 0, 1, (rows, cols)),
    )


def test_chefer_depends_on_the_target():
    model = build("vit")
    images, _ = _batch("vit")
    explain = make_explainer("chefer", model)
    first = explain(images, torch.tensor([0, 0]))
    second = explain(images, torch.tensor([5, 5]))
    assert not torch.allclose(first, second, rtol=1e-3, atol=0)


# --- prefix tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("family", ["deit_distilled", "vit_registers"])
def test_prefix_tokens_are_dropped(family):
    """Maps differ from what one class token only (the wrong prefix count) would give."""
    model, images, targets, prefix, grid = norm1_case(family)
    act, grad = norm1_tokens(model, images, targets, prefix, grid)
    wrong_act, wrong_grad = norm1_tokens(model, images, targets, 1, grid)
    attentions = explicit_attention(model, images, targets)
    cases = {
        "gradcam": (
            reference_cam("gradcam", act, grad),
            reference_cam("gradcam", wrong_act, wrong_grad),
        ),
        "layercam": (
            reference_cam("layercam", act, grad),
            reference_cam("layercam", wrong_act, wrong_grad),
        ),
        "chefer": (
            reference_chefer(attentions, 0, prefix, grid),
            reference_chefer(attentions, 0, 1, grid),
        ),
        "raw_attention": (
            reference_raw(attentions, 0, prefix, grid),
            reference_raw(attentions, 0, 1, grid),
        ),
    }
    for name, (right, wrong) in cases.items():
        maps = make_explainer(name, model)(images, targets)
        assert maps.shape == (2, 1, *grid)
        _close(maps, right)
        assert not torch.allclose(maps, wrong.float()[:, None], rtol=1e-3, atol=1e-6), name


# --- DAAM, rollout, integrated gradients, uniform ----------------------------------------


def test_daam_rollout_uniform_are_the_package_functions():
    model = build("deit_distilled")
    images, targets = _batch("deit_distilled")
    daam = make_explainer("daam", model)(images, targets)
    expected = DAAM(model).attribute(images, target=targets)
    _close(daam, expected)
    other = (targets + 1) % NUM_CLASSES
    assert not torch.allclose(daam, make_explainer("daam", model)(images, other))
    _close(
        make_explainer("daam", model, token="dist")(images, targets),
        DAAM(model).attribute(images, target=targets, token="dist"),
    )
    if "daam_all" in METHODS:
        _close(
            make_explainer("daam_all", model)(images, targets),
            DAAM(model, queries="all").attribute(images, target=targets),
        )
    _close(
        make_explainer("rollout", model, residual=0.3)(images, targets),
        attention_rollout(model, images, residual=0.3),
    )
    assert torch.equal(make_explainer("uniform", model)(images, targets), torch.ones(2, 1, 4, 4))


@pytest.mark.parametrize("sign,baseline", [("absolute_value", 0.0), ("positive", 0.5)])
def test_integrated_gradients_matches_right_riemann_sum(sign, baseline):
    model = build("vit")
    images, targets = _batch("vit")
    steps = 4
    maps = make_explainer(
        "integrated_gradients",
        model,
        n_steps=steps,
        method="riemann_right",
        baseline=baseline,
        sign=sign,
    )(images, targets)
    start = torch.full_like(images, baseline)
    total = torch.zeros_like(images)
    for k in range(1, steps + 1):
        point = (start + k / steps * (images - start)).requires_grad_(True)
        score = model(point).gather(1, targets[:, None]).sum()
        total += torch.autograd.grad(score, point)[0] / steps
    summed = ((images - start) * total).sum(1)
    expected = summed.abs() if sign == "absolute_value" else summed.clamp(min=0)
    _close(maps, expected)


# --- the model is left as found ----------------------------------------------------------


def _unusual_model():
    """A copy in a mixed state: a block in training mode, a frozen parameter, a .grad."""
    model = copy.deepcopy(build("deit_distilled"))
    model.blocks[0].train()
    model.pos_embed.requires_grad_(False)
    model.head.weight.grad = torch.randn_like(model.head.weight)
    return model


@pytest.mark.parametrize("name", METHODS)
def test_model_left_as_found(name):
    model = _unusual_model()
    images, targets = _batch("deit_distilled")
    before = snapshot(model)
    global_hooks = dict(torch.nn.modules.module._global_backward_hooks)
    explain = make_explainer(name, model, **({"n_steps": 2} if name.startswith("int") else {}))
    maps = explain(images, targets)
    assert_unchanged(model, before)
    assert dict(torch.nn.modules.module._global_backward_hooks) == global_hooks
    assert torch.is_grad_enabled()
    # Under no_grad the same maps; the grad mode is restored.
    with torch.no_grad():
        again = explain(images, targets)
        assert not torch.is_grad_enabled()
    torch.testing.assert_close(maps, again)
    assert_unchanged(model, before)


def test_frozen_model_still_explained():
    """requires_grad=False everywhere (a frozen backbone) gives the same maps."""
    model = build("vit")
    frozen = copy.deepcopy(model).requires_grad_(False)
    images, targets = _batch("vit")
    for name in ("gradcam", "layercam", "chefer", "daam"):
        _close(
            make_explainer(name, frozen)(images, targets),
            make_explainer(name, model)(images, targets),
        )
    assert not any(p.requires_grad for p in frozen.parameters())


# --- errors -------------------------------------------------------------------------------


def test_errors_name_the_problem():
    model = build("vit")
    images, targets = _batch("vit")
    with pytest.raises(ValueError, match="gradcam.*uniform"):
        make_explainer("grad_cam", model)
    with pytest.raises(ValueError, match="batch_size"):
        make_explainer("scorecam", model, n_steps=3)
    with pytest.raises(ValueError, match="none"):
        make_explainer("gradcam", model, batch_size=3)
    with pytest.raises(ValueError, match="dist"):
        make_explainer("chefer", model, token="dist")
    with pytest.raises(ValueError, match="sign"):
        make_explainer("integrated_gradients", model, sign="both")
    explain = make_explainer("gradcam", model)
    with pytest.raises(ValueError, match="targets are required"):
        explain(images, None)
    with pytest.raises(ValueError, match="does not match a batch of 2"):
        explain(images, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="out of range"):
        explain(images, torch.tensor([1, NUM_CLASSES]))
    with pytest.raises(ValueError, match="built for"):
        explain(torch.randn(2, 3, 16, 16, dtype=torch.float64), targets)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        explain(images, targets)


def test_grad_cam_methods_dropped_without_the_package(monkeypatch):
    model = build("vit")
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    with pytest.warns(UserWarning, match=r"gradcam.*captum-daam\[eval\]"):
        names = available_methods()
    assert names == tuple(n for n in METHODS if n not in GRAD_CAM_CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        available_methods(warn=False)
    with pytest.raises(ImportError, match="captum-daam"):
        make_explainer("layercam", model)
    make_explainer("chefer", model)  # the others still build


# --- the public baselines behind the registry ---------------------------------------------


@pytest.mark.parametrize("family", ["vit", "deit_distilled"])
def test_public_baselines_are_what_the_registry_runs(family):
    """The registry's maps are the public functions' maps; ``target=None`` explains the
    predicted class; every map is (N, 1, rows, cols)."""
    model = build(family)
    images, targets = _batch(family)
    grid = _grid(family, images.shape[-2:])
    predicted = model(images).argmax(1)
    chefer = gradient_weighted_rollout(model, images, targets)
    raw = raw_attention(model, images)
    cam = PackageCAM(model, "gradcam").attribute(images, targets)
    for maps in (chefer, raw, cam):
        assert maps.shape == (2, 1, *grid)
    _close(make_explainer("chefer", model)(images, targets), chefer)
    _close(make_explainer("raw_attention", model)(images, targets), raw)
    _close(make_explainer("gradcam", model)(images, targets), cam)
    _close(
        gradient_weighted_rollout(model, images).float(),
        gradient_weighted_rollout(model, images, predicted),
    )
    _close(
        PackageCAM(model, "layercam").attribute(images),
        PackageCAM(model, "layercam").attribute(images, predicted),
    )
    with torch.no_grad():  # gradients are enabled inside
        _close(gradient_weighted_rollout(model, images, targets).float(), chefer)


def test_public_baselines_errors():
    model = build("vit")
    images, targets = _batch("vit")
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        gradient_weighted_rollout(model, images, targets)
    with pytest.raises(ValueError, match="out of range"):
        gradient_weighted_rollout(model, images, [0, NUM_CLASSES])
    with pytest.raises(ValueError, match="dist"):
        raw_attention(model, images, token="dist")
    with pytest.raises(ValueError, match="add a batch dimension"):
        raw_attention(model, images[0])
    with pytest.raises(ValueError, match="unknown grad-cam method"):
        PackageCAM(model, "gradcam2")
    with pytest.raises(ValueError, match="batch_size"):
        PackageCAM(model, "scorecam", batch_size=0)
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224",
        img_size=32,
        patch_size=4,
        window_size=4,
        embed_dim=24,
        depths=(2, 2),
        num_heads=(2, 4),
        num_classes=NUM_CLASSES,
    ).eval()
    swin_images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="no readout token"):
        gradient_weighted_rollout(swin, swin_images, 0)
    with pytest.raises(UnsupportedModelError, match="norm1"):
        PackageCAM(swin, "gradcam")


def test_check_batch_is_the_explainers_check():
    model = build("vit")
    adapter = get_adapter(model)
    images, targets = _batch("vit")
    checked_images, checked, grid = check_batch("m", images, [1, 2], adapter)
    assert checked_images is images and grid == (4, 4)
    assert checked.dtype == torch.long and checked.tolist() == [1, 2]
    with torch.inference_mode():
        frozen = images.clone()
    assert not check_batch("m", frozen, targets, adapter)[0].is_inference()
    with pytest.raises(ValueError, match="targets are required"):
        check_batch("m", images, None, adapter)
