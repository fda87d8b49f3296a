"""The all-queries mode (pooled ViTs, Swin, and as an option on class-token models)
agrees with the explicit slow reference in tests/all_queries_reference.py."""

import pytest
import timm
import torch
from hypothesis import given
from hypothesis import strategies as st

from all_queries_reference import reference_swin, reference_vit
from assertions import assert_close_scaled
from captum_daam import DAAM
from captum_daam._core.flow import relevance_flow
from captum_daam._core.targets import class_scores, target_tensor
from captum_daam.adapters import get_adapter
from model_state import assert_unchanged, snapshot

NUM_CLASSES = 7
_VIT = dict(img_size=32, patch_size=8, embed_dim=48, num_heads=3, depth=3, num_classes=NUM_CLASSES)
_SWIN = dict(
    patch_size=4,
    window_size=4,
    embed_dim=24,
    depths=(2, 2),
    num_heads=(2, 4),
    num_classes=NUM_CLASSES,
)

#: name -> (timm model name, kwargs, input size, reference)
MODELS = {
    "vit_gap": (
        "vit_tiny_patch16_224",
        dict(_VIT, class_token=False, global_pool="avg"),
        (32, 32),
        reference_vit,
    ),
    "vit_gap_registers": (
        "vit_tiny_patch16_224",
        dict(_VIT, class_token=False, global_pool="avg", reg_tokens=2),
        (32, 32),
        reference_vit,
    ),
    "vit_cls_avg": ("vit_tiny_patch16_224", dict(_VIT, global_pool="avg"), (32, 32), reference_vit),
    "vit_cls_token": ("vit_tiny_patch16_224", dict(_VIT), (32, 32), reference_vit),
    "vit_qk_norm": (
        "vit_tiny_patch16_224",
        dict(_VIT, qk_norm=True, global_pool="avg"),
        (32, 32),
        reference_vit,
    ),
    # 8x8 patches, windows of 4: shifted windows in stage 1, none in stage 2 (4x4).
    "swin": ("swin_tiny_patch4_window7_224", dict(_SWIN, img_size=32), (32, 32), reference_swin),
    # 10x10 patches: windows padded to 12x12, patch merging to 5x5 (padded again).
    "swin_padded": (
        "swin_tiny_patch4_window7_224",
        dict(_SWIN, img_size=40),
        (40, 40),
        reference_swin,
    ),
}


def build(name: str, seed: int = 0) -> torch.nn.Module:
    arch, kwargs, _, _ = MODELS[name]
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **kwargs).double().eval()
    with torch.no_grad():  # break the symmetry of timm's zero-initialised biases
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


@st.composite
def cases(draw):
    name = draw(st.sampled_from(sorted(MODELS)))
    batch = draw(st.integers(1, 2))
    targets = draw(
        st.none() | st.lists(st.integers(0, NUM_CLASSES - 1), min_size=batch, max_size=batch)
    )
    return name, batch, targets, draw(st.integers(0, 2**31 - 1))


@given(cases())
def test_matches_explicit_reference(case):
    name, batch, targets, seed = case
    model = build(name)
    size, reference = MODELS[name][2], MODELS[name][3]
    images = torch.randn(
        batch, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    before = snapshot(model)
    flow = DAAM(model, queries="all").attribute(images, target=targets, return_flow=True)
    assert_unchanged(model, before)
    ref = reference(model, images, targets)
    assert flow.queries == "all" and flow.token_index is None
    assert torch.equal(flow.targets, ref.targets)
    assert_close_scaled(flow.token_relevance, ref.token_relevance)
    assert_close_scaled(flow.block_maps, ref.block_maps)
    assert_close_scaled(flow.accumulated, ref.block_maps.cumsum(dim=1))


@pytest.mark.parametrize("name", ["vit_gap", "swin_padded"])
def test_signed_weights_match_reference(name):
    """The self-supervised variant's signed weights, through the same flow."""
    model = build(name, seed=1)
    images = torch.randn(2, 3, *MODELS[name][2], dtype=torch.float64)
    adapter = get_adapter(model)
    targets = target_tensor([1, 4], 2, images.device)
    relevance = relevance_flow(
        model,
        adapter.sites,
        (images,),
        lambda out: class_scores(out, targets)[0],
        None,
        signed_weights=True,
        grid_size=adapter.grid_size(images.shape[-2:]),
    )
    ref = MODELS[name][3](model, images, [1, 4], signed=True)
    assert_close_scaled(relevance, ref.token_relevance)
    assert (relevance < 0).any()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_mode_follows_the_readout(name):
    model = build(name)
    expected = "readout" if name == "vit_cls_token" else "all"
    assert DAAM(model).queries == expected


def test_all_queries_is_not_the_readout_mode_on_a_class_token_model():
    model = build("vit_cls_token")
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    readout = DAAM(model).attribute(images, target=[0, 1], return_flow=True)
    every = DAAM(model, queries="all").attribute(images, target=[0, 1], return_flow=True)
    assert readout.block_maps.shape == every.block_maps.shape
    # The last block's class row is the only row the logit reads: both modes agree there
    # up to the other rows' contribution, which is zero in the last block.
    assert_close_scaled(every.token_relevance[:, -1], readout.token_relevance[:, -1])
    assert not torch.allclose(every.token_relevance[:, 0], readout.token_relevance[:, 0])


def test_batch_equals_per_example_on_swin_float32():
    model = build("swin_padded").float()
    images = torch.randn(3, 3, 40, 40)
    daam = DAAM(model)
    batched = daam.attribute(images, target=[0, 1, 2], return_flow=True)
    single = [daam.attribute(images[i : i + 1], target=i, return_flow=True) for i in range(3)]
    stacked = torch.cat([f.token_relevance for f in single])
    torch.testing.assert_close(
        batched.token_relevance, stacked, rtol=1e-4, atol=1e-5 * float(stacked.abs().max())
    )


def test_layer_subset_on_swin_is_that_block_of_the_full_run():
    model = build("swin")
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    chosen = [model.layers[1].blocks[0].attn]
    subset = DAAM(model, layer=chosen).attribute(images, target=3, return_flow=True)
    full = DAAM(model).attribute(images, target=3, return_flow=True)
    assert subset.layer_names == ("layers.1.blocks.0.attn",)
    index = full.layer_names.index("layers.1.blocks.0.attn")
    assert_close_scaled(subset.block_maps[:, 0], full.block_maps[:, index])
    assert subset.block_maps.shape == (1, 1, 8, 8)


def test_attention_matrices_refuse_windowed_attention_and_leave_no_hooks():
    from captum_daam._core.flow import attention_matrices

    model = build("swin")
    state = snapshot(model)
    sites = list(get_adapter(model).sites)
    with pytest.raises(ValueError, match="separate windows"):
        attention_matrices(model, sites, (torch.randn(1, 3, 32, 32, dtype=torch.float64),))
    assert_unchanged(model, state)
