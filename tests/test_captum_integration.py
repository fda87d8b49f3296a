"""DAAM beside Captum's own methods: metrics, NoiseTunnel, Grad-CAM on ViT tokens, rollout.

Captum's functions are called for real, on batches, and their results are checked
against the metrics' definitions computed here by hand.
"""

import copy
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam, NoiseTunnel
from captum.metrics import infidelity, sensitivity_max
from timm.models.vision_transformer import VisionTransformer

from captum_daam import (
    DAAM,
    DAAMInput,
    ViTLayerGradCam,
    attention_rollout,
    to_input_space,
    tokens_to_grid,
    upsample,
)
from captum_daam.baselines import grid_to_tokens
from families import NUM_CLASSES, build

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def batch():
    model = build("vit", torch.float32)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        targets = model(images).argmax(dim=1)
    return model, images, targets


class ShiftedViT(VisionTransformer):
    """A timm ViT with a second tensor input: ``forward(x, shift) = vit(x + shift)``."""

    def forward(self, x, shift):  # type: ignore[override]
        return super().forward(x + shift)


def shifted_copy(model):
    shifted = ShiftedViT(
        img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=NUM_CLASSES
    )
    shifted.load_state_dict(model.state_dict())
    return shifted.eval()


# --- DAAM in input space ------------------------------------------------------------


def test_input_space_is_the_final_map_upsampled_over_channels(batch):
    model, images, targets = batch
    explainer = DAAMInput(model)
    assert explainer.multiplies_by_inputs is False
    attributions = explainer.attribute(images, target=targets)
    final = DAAM(model).attribute(images, target=targets)
    assert attributions.shape == images.shape and attributions.dtype == images.dtype
    torch.testing.assert_close(attributions, upsample(final, (32, 32)).expand(-1, 3, -1, -1))
    # Nearest: every pixel of a patch carries the patch's value.
    nearest = DAAMInput(model, interpolate_mode="nearest").attribute(images, target=targets)
    torch.testing.assert_close(
        nearest, final.repeat_interleave(8, 2).repeat_interleave(8, 3).expand(-1, 3, -1, -1)
    )
    # Tuple in, tuple out.
    (as_tuple,) = explainer.attribute((images,), target=targets)
    torch.testing.assert_close(as_tuple, attributions)
    # float64 inputs for a float64 model give float64 attributions.
    double = DAAMInput(build("vit", torch.float64)).attribute(images.double())
    assert double.dtype == torch.float64


def test_further_tensor_inputs_get_zero_attribution(batch):
    model, images, targets = batch
    shifted = shifted_copy(model)
    shift = 0.3 * torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    attr, shift_attr = DAAMInput(shifted).attribute((images, shift), target=targets)
    torch.testing.assert_close(attr, DAAMInput(model).attribute(images + shift, target=targets))
    assert torch.equal(shift_attr, torch.zeros_like(shift))
    with pytest.raises(TypeError, match="additional_forward_args"):
        to_input_space(torch.ones(4, 1, 4, 4), (images, "not a tensor"))
    with pytest.raises(ValueError, match=r"\(N, 1, rows, cols\)"):
        to_input_space(torch.ones(3, 1, 4, 4), images)


# --- Captum's metrics ------------------------------------------------------------------


def fixed_patch_removal(seed):
    def perturb(inputs):
        generator = torch.Generator().manual_seed(seed)
        keep = (torch.rand(inputs.shape[0], 1, 4, 4, generator=generator) > 0.3).float()
        perturbed = inputs * F.interpolate(keep, size=inputs.shape[-2:], mode="nearest")
        return inputs - perturbed, perturbed

    return perturb


def infidelity_by_hand(forward, perturb, inputs, attributions, targets, samples, normalize):
    """Captum's infidelity from its definition, for a deterministic ``perturb``:
    E_k[(beta * I_k . attr - (f(x) - f(x - I_k)))^2] per example, beta = 1 unless
    ``normalize`` (then the least-squares scale of the dot products)."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    attributions = attributions if isinstance(attributions, tuple) else (attributions,)
    count = inputs[0].shape[0]
    expanded = tuple(t.repeat_interleave(samples, 0) for t in inputs)
    perturbation, perturbed = perturb(expanded if len(expanded) > 1 else expanded[0])
    perturbation = perturbation if isinstance(perturbation, tuple) else (perturbation,)
    perturbed = perturbed if isinstance(perturbed, tuple) else (perturbed,)
    index = targets.repeat_interleave(samples)[:, None]
    with torch.no_grad():
        f_x = forward(*expanded).gather(1, index)[:, 0]
        f_p = forward(*perturbed).gather(1, index)[:, 0]
    dot = sum(
        (i * a.repeat_interleave(samples, 0)).flatten(1).sum(1)
        for i, a in zip(perturbation, attributions)
    )
    a, b = dot.view(count, samples), (f_x - f_p).view(count, samples)
    beta = (a * b).mean(1) / (a * a).mean(1) if normalize else torch.ones(count)
    return ((beta[:, None] * a - b) ** 2).mean(1)


def test_infidelity_runs_on_a_batch_and_follows_its_definition(batch):
    model, images, targets = batch
    attributions = DAAMInput(model).attribute(images, target=targets)
    samples = 5
    perturb = fixed_patch_removal(seed=4)
    raw = infidelity(
        model,
        perturb,
        images,
        attributions,
        target=targets,
        n_perturb_samples=samples,
        normalize=False,
    )
    scaled = infidelity(
        model,
        perturb,
        images,
        attributions,
        target=targets,
        n_perturb_samples=samples,
        normalize=True,
    )
    # By hand: E_k[(I_k . attr - (f(x) - f(x - I_k)))^2] per image.
    expanded = images.repeat_interleave(samples, 0)
    perturbation, perturbed = perturb(expanded)
    expanded_targets = targets.repeat_interleave(samples)
    with torch.no_grad():
        f_x = model(expanded).gather(1, expanded_targets[:, None])[:, 0]
        f_p = model(perturbed).gather(1, expanded_targets[:, None])[:, 0]
    dot = (perturbation * attributions.repeat_interleave(samples, 0)).flatten(1).sum(1)
    a, b = dot.view(4, samples), (f_x - f_p).view(4, samples)
    torch.testing.assert_close(raw, ((a - b) ** 2).mean(1), rtol=1e-4, atol=1e-5)
    beta = (a * b).mean(1) / (a * a).mean(1)
    torch.testing.assert_close(scaled, ((beta[:, None] * a - b) ** 2).mean(1), rtol=1e-4, atol=1e-5)
    assert raw.shape == (4,) and bool((scaled <= raw + 1e-6).all())


def test_sensitivity_max_runs_on_a_batch_and_follows_its_definition(batch):
    model, images, targets = batch
    explainer = DAAMInput(model)

    def perturb(inputs, radius):
        generator = torch.Generator().manual_seed(8)
        return inputs + radius * (2 * torch.rand(inputs.shape, generator=generator) - 1)

    samples, radius = 3, 0.1
    sens = sensitivity_max(
        explainer.attribute,
        images,
        perturb_func=perturb,
        perturb_radius=radius,
        n_perturb_samples=samples,
        target=targets,
    )
    # By hand: max_k ||expl(x + d_k) - expl(x)|| / ||expl(x)||.
    explained = explainer.attribute(images, target=targets)
    moved = explainer.attribute(
        perturb(images.repeat_interleave(samples, 0), radius),
        target=targets.repeat_interleave(samples),
    )
    change = (moved - explained.repeat_interleave(samples, 0)).flatten(1).norm(dim=1)
    expected = (change.view(4, samples) / explained.flatten(1).norm(dim=1)[:, None]).amax(1)
    torch.testing.assert_close(sens, expected, rtol=1e-4, atol=1e-6)
    assert bool((sens > 0).all())
    # A radius of zero changes nothing.
    still = sensitivity_max(
        explainer.attribute, images, perturb_radius=0.0, n_perturb_samples=2, target=targets
    )
    assert float(still.max()) < 1e-4


def test_metrics_take_tuple_inputs(batch):
    model, images, targets = batch
    shifted = shifted_copy(model)
    explainer = DAAMInput(shifted)
    shift = torch.zeros_like(images)
    sens = sensitivity_max(
        explainer.attribute, (images, shift), n_perturb_samples=2, target=targets
    )
    assert sens.shape == (4,) and bool(torch.isfinite(sens).all())
    attributions = explainer.attribute((images, shift), target=targets)

    def perturb(inputs):
        noise = tuple(0.05 * torch.ones_like(t) for t in inputs)
        return noise, tuple(t - n for t, n in zip(inputs, noise))

    infid = infidelity(
        shifted, perturb, (images, shift), attributions, target=targets, n_perturb_samples=2
    )
    assert infid.shape == (4,) and bool(torch.isfinite(infid).all())
    # Values: the tuple's map is the tensor input's, the further input's is zero ...
    plain = DAAMInput(model).attribute(images, target=targets)
    torch.testing.assert_close(attributions[0], plain)
    assert torch.equal(attributions[1], torch.zeros_like(shift))
    # ... infidelity follows its definition over both inputs (the shift's perturbation
    # moves the score but gets no attribution) ...
    for normalize in (False, True):
        value = infidelity(
            shifted,
            perturb,
            (images, shift),
            attributions,
            target=targets,
            n_perturb_samples=2,
            normalize=normalize,
        )
        expected = infidelity_by_hand(
            shifted, perturb, (images, shift), attributions, targets, 2, normalize
        )
        torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6)

    # ... and sensitivity with the further input held still equals the tensor input's.
    def move_images(inputs, radius):
        generator = torch.Generator().manual_seed(5)
        moved = inputs[0] + radius * (2 * torch.rand(inputs[0].shape, generator=generator) - 1)
        return (moved, *inputs[1:])

    def move_tensor(inputs, radius):
        return move_images((inputs,), radius)[0]

    kwargs = dict(perturb_radius=0.1, n_perturb_samples=3, target=targets)
    sens = sensitivity_max(explainer.attribute, (images, shift), move_images, **kwargs)
    alone = sensitivity_max(DAAMInput(model).attribute, images, move_tensor, **kwargs)
    torch.testing.assert_close(sens, alone, rtol=1e-4, atol=1e-6)
    assert bool((sens > 0).all())


# --- NoiseTunnel -----------------------------------------------------------------------


@pytest.mark.parametrize("space", ["input", "layer"])
def test_noise_tunnel_averages_daam_over_noisy_copies(batch, space):
    model, images, targets = batch
    explainer = DAAMInput(model) if space == "input" else DAAM(model)
    samples, stdev = 3, 0.2
    torch.manual_seed(21)
    smooth = NoiseTunnel(explainer).attribute(
        images, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev, target=targets
    )
    # NoiseTunnel's own draw, repeated: one normal draw for the expanded batch.
    torch.manual_seed(21)
    expanded = images.repeat_interleave(samples, 0)
    noisy = expanded + torch.normal(0, torch.tensor(stdev).repeat(expanded.shape))
    each = explainer.attribute(noisy, target=targets.repeat_interleave(samples))
    expected = each.view(4, samples, *each.shape[1:]).mean(1)
    assert smooth.shape == (images.shape if space == "input" else (4, 1, 4, 4))
    torch.testing.assert_close(smooth, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(smooth, explainer.attribute(images, target=targets))


def test_noise_tunnel_passes_additional_forward_args(batch):
    model, images, targets = batch
    shifted = shifted_copy(model)
    shift = 0.3 * torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    smooth = NoiseTunnel(DAAMInput(shifted)).attribute(
        images, nt_samples=2, stdevs=0.0, target=targets, additional_forward_args=(shift,)
    )
    torch.testing.assert_close(smooth, DAAMInput(model).attribute(images + shift, target=targets))


# --- Grad-CAM on a ViT's tokens ------------------------------------------------------------


def tokens_to_grid_layout():
    tokens = torch.arange(2 * 7 * 5, dtype=torch.float32).reshape(2, 7, 5)
    return tokens, tokens_to_grid(tokens, 1, (2, 3))


def test_tokens_to_grid_layout_and_inverse():
    tokens, grid = tokens_to_grid_layout()
    assert grid.shape == (2, 5, 2, 3)
    for r in range(2):
        for c in range(3):
            assert torch.equal(grid[:, :, r, c], tokens[:, 1 + 3 * r + c])
    assert torch.equal(grid_to_tokens(grid, tokens[:, :1]), tokens)
    with pytest.raises(ValueError, match="7 tokens do not match 2 prefix"):
        tokens_to_grid(tokens, 2, (2, 3))


def explicit_gradcam(model, layer, images, targets):
    """Grad-CAM on a block's output tokens, written out: weights are the gradient
    averaged over the patches, map = ReLU(sum_d w_d * tokens_d) on the grid."""
    saved = {}

    def keep(module, inputs, output):
        output.retain_grad()
        saved["tokens"] = output

    handle = layer.register_forward_hook(keep)
    try:
        logits = model(images)
    finally:
        handle.remove()
    logits.gather(1, targets[:, None]).sum().backward()
    prefix = model.num_prefix_tokens
    rows, cols = model.patch_embed.dynamic_feat_size(images.shape[-2:])
    tokens = saved["tokens"][:, prefix:].detach()
    weights = saved["tokens"].grad[:, prefix:].mean(dim=1)
    cam = torch.relu(torch.einsum("ntd,nd->nt", tokens, weights))
    return cam.reshape(-1, 1, rows, cols)


@pytest.mark.parametrize(
    "family,size",
    [
        ("vit", (32, 32)),
        ("vit_registers", (28, 28)),
        ("deit_distilled", (32, 32)),
        ("dynamic", (24, 40)),
    ],
)
def test_vit_gradcam_is_grad_cam_on_the_patch_grid(family, size):
    model = build(family)
    images = torch.randn(
        3, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    with torch.no_grad():
        before = model(images)
    targets = torch.tensor([0, 4, 9])
    layer = model.blocks[1]
    gradcam = ViTLayerGradCam(model, layer)
    maps = gradcam.attribute(images, target=targets)
    expected = explicit_gradcam(model, layer, images, targets)
    assert (
        maps.shape
        == expected.shape
        == (
            3,
            1,
            size[0] // model.patch_embed.patch_size[0],
            size[1] // model.patch_embed.patch_size[1],
        )
    )
    torch.testing.assert_close(maps, expected)
    assert float(maps.amax()) > 0
    # The model is left as it was: no hooks, same outputs.
    assert not layer._forward_hooks and not layer._forward_pre_hooks
    with torch.no_grad():
        assert torch.equal(model(images), before)


def test_captum_layer_gradcam_treats_tokens_as_channels(batch):
    model, images, targets = batch
    plain = LayerGradCam(model, model.blocks[1]).attribute(images, target=targets)
    assert plain.shape == (4, 1, 48)  # (N, 1, D): not a map
    ours = ViTLayerGradCam(model, model.blocks[1]).attribute(images, target=targets)
    assert ours.shape == (4, 1, 4, 4)


def test_vit_gradcam_layer_input_last_block_and_predicted_class(batch):
    model, images, targets = batch
    after_second = ViTLayerGradCam(model, model.blocks[1]).attribute(images, target=targets)
    into_third = ViTLayerGradCam(model, model.blocks[2], attribute_to_layer_input=True)
    torch.testing.assert_close(into_third.attribute(images, target=targets), after_second)
    # The last block's patch outputs reach the class-token readout not at all.
    last = ViTLayerGradCam(model, model.blocks[-1]).attribute(images, target=targets)
    assert float(last.abs().max()) == 0.0
    norm1 = ViTLayerGradCam(model, model.blocks[-1].norm1)
    assert float(norm1.attribute(images, target=targets).max()) > 0
    torch.testing.assert_close(norm1.attribute(images), norm1.attribute(images, target=targets))
    signed = norm1.attribute(images, target=targets, relu_attributions=False)
    assert float(signed.min()) < 0
    with pytest.raises(ValueError, match="not a token sequence"):
        ViTLayerGradCam(model, model.patch_embed.proj).attribute(images, target=targets)
    with pytest.raises(ValueError, match="not a module of this model"):
        ViTLayerGradCam(model, torch.nn.LayerNorm(48))


def test_input_space_baselines_go_through_captum_metrics(batch):
    model, images, targets = batch
    gradcam = ViTLayerGradCam(model, model.blocks[-1].norm1)

    def explain(inputs, target=None):
        return to_input_space(gradcam.attribute(inputs, target=target), inputs)

    sens = sensitivity_max(explain, images, n_perturb_samples=2, target=targets)
    infid = infidelity(
        model,
        fixed_patch_removal(1),
        images,
        explain(images, targets),
        target=targets,
        n_perturb_samples=3,
    )
    assert sens.shape == infid.shape == (4,)
    assert bool(torch.isfinite(sens).all() and torch.isfinite(infid).all())
    # Values: the input-space map is the grid map upsampled over the channels, and the
    # metrics follow their definitions on it.
    attributions = explain(images, targets)
    grid_maps = gradcam.attribute(images, target=targets)
    torch.testing.assert_close(attributions, upsample(grid_maps, (32, 32)).expand(-1, 3, -1, -1))
    expected = infidelity_by_hand(
        model, fixed_patch_removal(1), images, attributions, targets, 3, normalize=False
    )
    torch.testing.assert_close(infid, expected, rtol=1e-4, atol=1e-6)

    def perturb(inputs, radius):
        generator = torch.Generator().manual_seed(9)
        return inputs + radius * (2 * torch.rand(inputs.shape, generator=generator) - 1)

    sens = sensitivity_max(
        explain, images, perturb, perturb_radius=0.1, n_perturb_samples=2, target=targets
    )
    moved = explain(perturb(images.repeat_interleave(2, 0), 0.1), targets.repeat_interleave(2))
    change = (moved - attributions.repeat_interleave(2, 0)).flatten(1).norm(dim=1)
    by_hand = (change.view(4, 2) / attributions.flatten(1).norm(dim=1)[:, None]).amax(1)
    torch.testing.assert_close(sens, by_hand, rtol=1e-4, atol=1e-6)


# --- Attention rollout -------------------------------------------------------------------


def explicit_rollout(model, images):
    """Rollout from the attention matrices timm itself forms with fused attention off."""
    model = copy.deepcopy(model)
    matrices = []
    for block in model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda m, i, o: matrices.append(o))
    with torch.no_grad():
        model(images)
    tokens = matrices[0].shape[-1]
    rollout = torch.eye(tokens, dtype=matrices[0].dtype).expand(images.shape[0], -1, -1)
    for attention in matrices:
        step = 0.5 * attention.mean(dim=1) + 0.5 * torch.eye(tokens, dtype=attention.dtype)
        rollout = (step / step.sum(-1, keepdim=True)) @ rollout
    return rollout


@pytest.mark.parametrize("family,size", [("vit", 32), ("vit_registers", 28)])
def test_attention_rollout_matches_timm_attention_matrices(family, size):
    model = build(family)
    images = torch.randn(
        2, 3, size, size, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    maps = attention_rollout(model, images)
    full = explicit_rollout(model, images)
    prefix = model.num_prefix_tokens
    grid = model.patch_embed.grid_size
    torch.testing.assert_close(maps, full[:, 0, prefix:].reshape(2, 1, *grid))
    torch.testing.assert_close(full.sum(-1), torch.ones_like(full.sum(-1)))
    assert bool((maps > 0).all()) and bool((maps.sum(dim=(1, 2, 3)) < 1).all())
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout(model, images, head_fusion="median")


# --- the worked example ------------------------------------------------------------------


def test_side_by_side_example_runs_and_reports(tmp_path):
    spec = importlib.util.spec_from_file_location("side_by_side", ROOT / "docs" / "side_by_side.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(
        [
            "--tiny",
            "--images",
            "3",
            "--out",
            str(tmp_path),
            "--ig-steps",
            "4",
            "--perturbations",
            "3",
            "--sensitivity-samples",
            "2",
            "--batch",
            "3",
        ]
    )
    results = summary["results"]
    assert list(results) == [*example.METHODS, example.UNIFORM]
    table = (tmp_path / "table.md").read_text()
    for method, values in results.items():
        for metric in ("infidelity (patches)", "infidelity (noise)", "sensitivity max"):
            assert len(values[metric]) == 3
            assert all(math.isfinite(v) and v >= 0 for v in values[metric])
        row = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
        mean = sum(values["sensitivity max"]) / 3
        assert f"{mean:.4g}" in row
    # Different methods give different explanations, hence different scores; a constant
    # map does not move at all.
    assert len({round(results[m]["sensitivity max"][0], 12) for m in example.METHODS}) == 4
    assert results[example.UNIFORM]["sensitivity max"] == [0.0] * 3
    assert (tmp_path / "side_by_side.png").stat().st_size > 10_000
    page = (tmp_path / "flow_viewer.html").read_text()
    assert page.count('"accumulated":[') == 3 * 3  # 3 images x top-3 classes
    assert json.loads((tmp_path / "results.json").read_text())["targets"] == summary["targets"]
