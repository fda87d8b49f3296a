"""Families beyond timm's VisionTransformer agree with their explicit slow references:
timm CaiT, XCiT, BEiT, EVA / EVA-02, DeiT-III, and Hugging Face ViT / DeiT / DINOv2
(skipped without transformers), and leave the model exactly as it was."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cache
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import timm
import torch
from hypothesis import given, settings
from torch import nn

import explicit_attention as textbook
from all_queries_reference import reference_vit
from assertions import assert_close_scaled
from captum_daam import DAAM, UnsupportedModelError
from captum_daam._core.flow import relevance_flow
from captum_daam._core.maps import accumulate, block_maps
from captum_daam._core.targets import class_scores, target_tensor
from captum_daam.adapters import (
    HuggingFaceViTAdapter,
    TimmBeitAdapter,
    TimmCaitAdapter,
    TimmEvaAdapter,
    TimmVisionTransformerAdapter,
    TimmXcitAdapter,
    get_adapter,
)
from families import attribution_cases, random_images
from model_state import assert_unchanged, snapshot
from reference import reference_daam

NUM_CLASSES = 10
TINY = dict(embed_dim=48, num_heads=3, num_classes=NUM_CLASSES)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is many times faster than two on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Family:
    build: Callable[[], nn.Module]
    adapter: type
    explicit: Callable
    attention: Callable[[nn.Module], List[nn.Module]]
    sizes: Tuple[Tuple[int, int], ...] = ((32, 32),)
    tokens: Tuple[str, ...] = ("cls",)
    z_row: Optional[int] = None
    hf: bool = False
    token_index: Dict[str, int] = field(default_factory=lambda: {"cls": 0, "dist": 1})


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights larger than the default init (and non-zero q/v biases, relative position
    tables), so the logits and maps are far from degenerate; float64, eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(0, 0.2)
            elif name.endswith(("q_bias", "v_bias")):
                param.normal_(0, 0.2)
    return model.to(torch.float64).eval()


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: _randomise(timm.create_model(name, pretrained=False, **{**TINY, **kwargs}))


def _blocks(attr: str) -> Callable[[nn.Module], List[nn.Module]]:
    return lambda model: [block.attn for block in getattr(model, attr)]


TIMM_FAMILIES: Dict[str, Family] = {
    "cait": Family(
        _timm("cait_xxs24_224", img_size=32, patch_size=8, depth=2, depth_token_only=2),
        TimmCaitAdapter,
        textbook.class_attention,
        _blocks("blocks_token_only"),
        z_row=0,
    ),
    "xcit_p8": Family(
        _timm("xcit_nano_12_p8_224", depth=2, cls_attn_layers=2),
        TimmXcitAdapter,
        textbook.class_attention,
        _blocks("cls_attn_blocks"),
        sizes=((32, 32), (30, 26), (16, 40)),
        z_row=0,
    ),
    "xcit_p16_tokens_norm": Family(
        _timm("xcit_nano_12_p16_224", depth=2, cls_attn_layers=2, tokens_norm=True),
        TimmXcitAdapter,
        textbook.class_attention,
        _blocks("cls_attn_blocks"),
        sizes=((48, 40), (32, 32)),
        z_row=0,
    ),
    "beit_rel_pos": Family(
        _timm("beit_base_patch16_224", img_size=32, patch_size=8, depth=3, global_pool="token"),
        TimmBeitAdapter,
        textbook.beit_attention,
        _blocks("blocks"),
    ),
    "beit_shared_rel_pos": Family(
        _timm(
            "beitv2_base_patch16_224",
            img_size=32,
            patch_size=8,
            depth=3,
            global_pool="token",
            use_rel_pos_bias=False,
            use_shared_rel_pos_bias=True,
            use_abs_pos_emb=True,
        ),
        TimmBeitAdapter,
        textbook.beit_attention,
        _blocks("blocks"),
    ),
    "eva02_fused_qkv": Family(
        _timm("eva02_tiny_patch14_224", img_size=28, patch_size=7, depth=3, global_pool="token"),
        TimmEvaAdapter,
        textbook.eva_attention,
        _blocks("blocks"),
        sizes=((28, 28),),
    ),
    "eva02_separate_qkv": Family(
        _timm("eva02_base_patch14_224", img_size=28, patch_size=7, depth=3, global_pool="token"),
        TimmEvaAdapter,
        textbook.eva_attention,
        _blocks("blocks"),
        sizes=((28, 28),),
    ),
    "eva02_registers_qknorm_dynamic": Family(
        _timm(
            "eva02_tiny_patch14_224",
            img_size=28,
            patch_size=7,
            depth=3,
            global_pool="token",
            num_reg_tokens=2,
            qk_norm=True,
            dynamic_img_size=True,
        ),
        TimmEvaAdapter,
        textbook.eva_attention,
        _blocks("blocks"),
        sizes=((28, 28), (21, 35), (42, 14)),
    ),
    "deit3": Family(
        _timm("deit3_small_patch16_224", img_size=32, patch_size=8, depth=3),
        TimmVisionTransformerAdapter,
        textbook.timm_attention,
        _blocks("blocks"),
    ),
}


def _hf(kind: str, impl: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        common = dict(
            hidden_size=48,
            num_hidden_layers=3,
            num_attention_heads=3,
            intermediate_size=96,
            num_labels=NUM_CLASSES,
        )
        if kind.startswith("dinov2"):
            common.update(image_size=28, patch_size=7, layerscale_value=0.5)
        else:
            common.update(image_size=32, patch_size=8)
        config_cls, model_cls = {
            "vit": ("ViTConfig", "ViTForImageClassification"),
            "deit": ("DeiTConfig", "DeiTForImageClassification"),
            "deit_teacher": ("DeiTConfig", "DeiTForImageClassificationWithTeacher"),
            "dinov2": ("Dinov2Config", "Dinov2ForImageClassification"),
            "dinov2_registers": (
                "Dinov2WithRegistersConfig",
                "Dinov2WithRegistersForImageClassification",
            ),
        }[kind]
        if kind == "dinov2_registers":
            common.update(num_register_tokens=2)
        config = getattr(transformers, config_cls)(**common)
        config._attn_implementation = impl
        torch.manual_seed(0)
        return _randomise(getattr(transformers, model_cls)(config))

    return build


def _hf_layers(model: nn.Module) -> List[nn.Module]:
    base = model.base_model
    layers = getattr(base, "layers", None)
    return [layer.attention for layer in (layers if layers is not None else base.encoder.layer)]


def _hf_explicit(module, args, kwargs, store):
    if hasattr(module, "q_proj"):
        return textbook.hf_attention(module, args, kwargs, store)
    return textbook.hf4_attention(module, args, kwargs, store)


HF_FAMILIES: Dict[str, Family] = {
    f"hf_{kind}_{impl}": Family(
        _hf(kind, impl),
        HuggingFaceViTAdapter,
        _hf_explicit,
        _hf_layers,
        sizes=((28, 28), (21, 35)) if kind.startswith("dinov2") else ((32, 32),),
        tokens=("cls", "dist") if kind == "deit_teacher" else ("cls",),
        hf=True,
    )
    for kind in ("vit", "deit", "deit_teacher", "dinov2", "dinov2_registers")
    for impl in ("eager", "sdpa")
}

try:
    import transformers  # noqa: F401

    HAVE_TRANSFORMERS = True
except ImportError:
    HAVE_TRANSFORMERS = False

FAMILIES = {**TIMM_FAMILIES, **HF_FAMILIES}


@cache
def build(name: str) -> nn.Module:
    if FAMILIES[name].hf and not HAVE_TRANSFORMERS:
        pytest.skip("transformers is not installed (optional dependency)")
    return FAMILIES[name].build()


def daam_flow(model, images, target, token, forward_args=(), layer=None, queries=None):
    """DAAM's flow through the public :class:`DAAM`, for every family (Hugging Face too)."""
    flow = DAAM(model, layer=layer, queries=queries).attribute(
        images,
        target=target,
        return_flow=True,
        token=token,
        additional_forward_args=forward_args or None,
    )
    return (
        flow.token_relevance,
        flow.block_maps,
        flow.accumulated,
        flow.targets,
        flow.scores,
        flow.grid_size,
    )


def core_flow(model, images, target, token):
    """DAAM's flow of a Hugging Face model through the core, with the adapter's
    ``logits`` hook: what :class:`DAAM` must agree with."""
    adapter = get_adapter(model)
    token_index = adapter.readout_tokens[token or "cls"]
    targets = target_tensor(target, images.shape[0], images.device)
    record = {}

    def score_fn(output):
        scores, used = class_scores(adapter.logits(output), targets)
        record["targets"], record["scores"] = used, scores.detach()
        return scores

    grid = adapter.grid_size(tuple(images.shape[-2:]))
    rel = relevance_flow(model, adapter.sites, (images,), score_fn, token_index)
    maps = block_maps(rel, adapter.num_prefix_tokens, grid)
    return rel, maps, accumulate(maps), record["targets"], record["scores"], grid


# -------------------------------------------------- every family against its reference

#: Which blocks are explained: every one, or the last and the first passed in reverse
#: order (``modules[::-2]``; the last alone for two-block families).
LAYERS = ("all", "subset")
#: Hugging Face forward options: an attention mask (N, T) of 0 / 1, or
#: ``interpolate_pos_encoding=True`` with sizes other than the model's (ViT, DeiT).
HF_OPTIONS = ("mask", "interpolate")
INTERPOLATED_SIZES = ((24, 40), (40, 16))


def _hf_kind(name: str) -> str:
    return next(k for k in ("deit_teacher", "dinov2", "deit", "vit") if f"hf_{k}" in name)


def _combinations():
    """(family, token, queries, layers, option): every readout token and layer choice of
    every family, the all-queries mode where the family has it (timm ViTs: DeiT-III),
    and the Hugging Face forward options where the class takes them."""
    cases = []
    for name in sorted(FAMILIES):
        family = FAMILIES[name]
        for layers in LAYERS:
            cases += [(name, token, "readout", layers, None) for token in family.tokens]
            if family.adapter is TimmVisionTransformerAdapter:
                cases.append((name, None, "all", layers, None))
        if family.hf:
            cases.append((name, "cls", "readout", "all", "mask"))
            if _hf_kind(name) != "dinov2":
                cases.append((name, "cls", "readout", "all", "interpolate"))
    return [pytest.param(*case, id="-".join(str(c) for c in case)) for case in cases]


def _forward_args(name: str, option, images, seed: int, prefix: int, grid) -> tuple:
    """The positional forward arguments after the images for a Hugging Face option."""
    if option is None:
        return ()
    kind = _hf_kind(name)
    if option == "interpolate":
        return (True,) if kind == "deit_teacher" else (None, True)
    generator = torch.Generator().manual_seed(seed + 1)
    mask = torch.rand(images.shape[0], prefix + grid[0] * grid[1], generator=generator) > 0.3
    mask[:, :prefix] = True
    mask = mask.long()
    before_mask = {"vit": (None, None), "deit": (None, None), "deit_teacher": (False,)}
    return (*before_mask.get(kind, (None,)), mask)


def _one_image(args: tuple, i: int) -> tuple:
    """The forward arguments of image ``i``: batch tensors sliced, the rest as given."""
    return tuple(a[i : i + 1] if isinstance(a, torch.Tensor) else a for a in args)


def _reference(family, model, modules, images, targets, token, queries, args, grid):
    """The explicit reference of the chosen blocks, image by image."""
    adapter = get_adapter(model)
    if queries == "all":  # every query row (timm ViT): the full reference, chosen blocks
        full = reference_vit(model, images, targets)
        chosen = [i for i, m in enumerate(family.attention(model)) if any(m is c for c in modules)]
        maps = full.block_maps[:, chosen]
        return full.token_relevance[:, chosen], maps, maps.cumsum(1), full.targets, None
    refs = [
        reference_daam(
            model,
            modules,
            images[i : i + 1],
            None if targets is None else targets[i : i + 1],
            token_index=family.token_index[token],
            num_prefix_tokens=adapter.num_prefix_tokens,
            grid_size=grid,
            explicit=family.explicit,
            z_row=family.z_row,
            logits_of=adapter.logits,
            forward_args=_one_image(args, i),
        )
        for i in range(images.shape[0])
    ]
    return tuple(
        torch.cat([getattr(r, f) for r in refs])
        for f in ("token_relevance", "block_maps", "accumulated", "targets", "logits")
    )


@pytest.mark.parametrize("name,token,queries,layers,option", _combinations())
def test_matches_explicit_reference(name, token, queries, layers, option):
    """:class:`DAAM` (float64) against the explicit slow reference; the combinations are
    parametrised, hypothesis draws the values (batch, size, targets, seed)."""
    model = build(name)
    family = FAMILIES[name]
    adapter = get_adapter(model)
    assert type(adapter) is family.adapter
    every = family.attention(model)
    chosen = every if layers == "all" else every[::-2]  # given to DAAM out of order
    modules = [m for m in every if any(m is c for c in chosen)]  # model order
    sizes = INTERPOLATED_SIZES if option == "interpolate" else family.sizes

    @settings(max_examples=2)
    @given(attribution_cases(sizes, (token,), NUM_CLASSES))
    def check(case):
        batch, size, token_, targets, seed = case
        images = random_images(batch, size, seed)
        grid = adapter.grid_size(size)
        args = _forward_args(name, option, images, seed, adapter.num_prefix_tokens, grid)
        before = snapshot(model)
        layer = None if layers == "all" else chosen
        rel, maps, acc, used, scores, grid = daam_flow(
            model, images, targets, token_, args, layer=layer, queries=queries
        )
        assert_unchanged(model, before)
        ref_rel, ref_maps, ref_acc, ref_targets, ref_logits = _reference(
            family, model, modules, images, targets, token_, queries, args, grid
        )
        # Hugging Face's eager kernel takes the softmax in float32 even in a float64
        # model, so the model itself (whose gradient DAAM takes) is float32-exact there.
        eager = getattr(getattr(model, "config", None), "_attn_implementation", "") == "eager"
        rtol = 1e-5 if eager else 1e-7
        assert torch.equal(used, ref_targets)
        assert_close_scaled(rel, ref_rel, rtol)
        assert_close_scaled(maps, ref_maps, rtol)
        assert_close_scaled(acc, ref_acc, rtol)
        logits = adapter.logits(model(images, *args)).detach()
        torch.testing.assert_close(scores, logits.gather(1, used[:, None])[:, 0])
        assert maps.shape[:2] == (batch, len(modules))
        assert maps.sum() > 0
        if ref_logits is not None:
            # The explicit attention reproduces the model's own output.
            torch.testing.assert_close(ref_logits, logits, rtol=rtol, atol=rtol)
            torch.testing.assert_close(
                scores, ref_logits.gather(1, ref_targets[:, None])[:, 0], rtol=rtol, atol=rtol
            )
        if option == "mask":  # masked keys get no attention, hence no relevance
            assert torch.all(rel.transpose(0, 1)[:, args[-1] == 0] == 0)

    check()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_model_unchanged_afterwards(name):
    model = build(name)
    before = snapshot(model)
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    images = torch.randn(2, 3, *FAMILIES[name].sizes[0], dtype=torch.float64)
    daam_flow(model, images, None, None)
    assert_unchanged(model, before)
    assert getattr(getattr(model, "config", None), "_attn_implementation", None) == impl
    # A failing forward (wrong size or dtype) removes the hooks too.
    with pytest.raises((ValueError, RuntimeError)):
        daam_flow(model, torch.randn(1, 3, 4, 4), None, None)
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    "name", ["cait", "xcit_p8", "beit_rel_pos", "eva02_fused_qkv", "eva02_separate_qkv"]
)
def test_fused_and_explicit_attention_give_the_same_maps(name):
    model = build(name)
    images = torch.randn(2, 3, *FAMILIES[name].sizes[0], dtype=torch.float64)
    modules = FAMILIES[name].attention(model)
    before = [m.fused_attn for m in modules]
    flows = []
    try:
        for fused in (True, False):
            for m in modules:
                m.fused_attn = fused
            flows.append(DAAM(model).attribute(images, return_flow=True))
    finally:
        for m, flag in zip(modules, before):
            m.fused_attn = flag
    assert_close_scaled(flows[1].token_relevance, flows[0].token_relevance)


def test_class_attention_sites_and_layer_subsets():
    model = build("cait")
    daam = DAAM(model)
    assert daam.layer_names == ("blocks_token_only.0.attn", "blocks_token_only.1.attn")
    assert all(site.z_row == 0 for site in daam.sites)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    full = daam.attribute(images, return_flow=True)
    last = DAAM(model, layer=model.blocks_token_only[1].attn).attribute(images, return_flow=True)
    assert_close_scaled(last.block_maps[:, 0], full.block_maps[:, 1])
    with pytest.raises(ValueError, match="blocks_token_only"):
        DAAM(model, layer=model.blocks[0].attn)  # talking heads: excluded
    xcit = build("xcit_p8")
    assert DAAM(xcit).layer_names == ("cls_attn_blocks.0.attn", "cls_attn_blocks.1.attn")
    with pytest.raises(ValueError, match="cls_attn_blocks"):
        DAAM(xcit, layer=xcit.blocks[0].attn)  # cross-covariance: excluded


def test_xcit_grid_follows_the_convolutional_patch_embedding():
    model = build("xcit_p8")
    adapter = get_adapter(model)
    for size in [(32, 32), (30, 26), (16, 40), (9, 17)]:
        tokens = model.patch_embed(torch.zeros(1, 3, *size, dtype=torch.float64))[1]
        assert adapter.grid_size(size) == tuple(tokens)


def test_eva_attention_mask_is_part_of_the_class_row():
    model = build("eva02_fused_qkv")
    images = torch.randn(2, 3, 28, 28, dtype=torch.float64)
    tokens = 1 + 16
    mask = torch.ones(tokens, tokens, dtype=torch.bool)
    mask[:, 3:9] = False
    flow = DAAM(model).attribute(images, additional_forward_args=(mask,), return_flow=True)
    assert torch.all(flow.token_relevance[:, :, 3:9] == 0)
    ref = reference_daam(
        model,
        _blocks("blocks")(model),
        images,
        grid_size=flow.grid_size,
        explicit=textbook.eva_attention,
        forward_args=(mask,),
    )
    assert_close_scaled(flow.token_relevance, ref.token_relevance)


def test_relative_position_bias_and_rope_change_the_class_row():
    """The bias / rope are not no-ops in these tiny models, so the reference checks them."""
    beit = build("beit_rel_pos")
    attn = beit.blocks[0].attn
    row = attn.relative_position_bias_table[attn.relative_position_index[0]]  # (T, H)
    # BEiT gives the class row one bias to itself and one shared by all patches.
    assert (row[0] - row[1]).abs().min() > 0.01 and torch.equal(row[1], row[-1])
    eva = build("eva02_fused_qkv")
    assert eva.rope is not None


def test_unsupported_variants_are_refused_with_the_fix():
    small = dict(TINY, depth=1)
    with pytest.raises(UnsupportedModelError, match="global_pool='avg'"):
        DAAM(timm.create_model("beit_base_patch16_224", img_size=32, patch_size=8, **small))
    with pytest.raises(UnsupportedModelError, match="global_pool='avg'"):
        DAAM(timm.create_model("eva02_tiny_patch14_224", img_size=28, patch_size=7, **small))
    with pytest.raises(UnsupportedModelError, match="global_pool='avg'"):
        DAAM(
            timm.create_model(
                "cait_xxs24_224", img_size=32, patch_size=8, global_pool="avg", **small
            )
        )
    with pytest.raises(UnsupportedModelError, match="scale_attn_inner"):
        DAAM(
            timm.create_model(
                "eva02_tiny_patch14_224",
                img_size=28,
                patch_size=7,
                global_pool="token",
                scale_attn_inner=True,
                **small,
            )
        )
    with pytest.raises(UnsupportedModelError, match="attn_type='rope'"):
        DAAM(
            timm.create_model(
                "eva02_tiny_patch14_224",
                img_size=28,
                patch_size=7,
                global_pool="token",
                attn_type="rope",
                qkv_fused=False,
                **small,
            )
        )


def test_fixed_size_families_name_the_expected_size():
    for name in ("cait", "beit_rel_pos", "eva02_fused_qkv"):
        model = build(name)
        with pytest.raises(ValueError, match="was built for"):
            DAAM(model).attribute(torch.randn(1, 3, 40, 40, dtype=torch.float64))


@pytest.mark.parametrize("name", ["cait", "xcit_p8", "beit_rel_pos", "eva02_fused_qkv"])
def test_features_are_the_pre_logits_class_token(name):
    model = build(name)
    images = torch.randn(2, 3, *FAMILIES[name].sizes[0], dtype=torch.float64)
    features = get_adapter(model).features(model, images)
    torch.testing.assert_close(model.get_classifier()(features), model(images))


def test_hf_adapter_does_not_import_transformers(monkeypatch):
    import importlib.util

    import captum_daam.adapters.huggingface as hf

    monkeypatch.setitem(sys.modules, "transformers", None)  # any import of it now fails
    # The module runs without transformers (a fresh copy, executed here) ...
    spec = importlib.util.spec_from_file_location(
        "captum_daam.adapters._huggingface_without_transformers", hf.__file__
    )
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    # ... and matching a model never imports it.
    assert not HuggingFaceViTAdapter.matches(nn.Linear(2, 2))
    assert type(get_adapter(build("cait"))) is TimmCaitAdapter


def test_hf_outputs_headless_models_and_features():
    pytest.importorskip("transformers", reason="transformers is optional")
    import transformers

    model = build("hf_dinov2_registers_sdpa")
    adapter = get_adapter(model)
    assert adapter.num_prefix_tokens == 3 and adapter.num_classes == NUM_CLASSES
    images = torch.randn(2, 3, 28, 28, dtype=torch.float64)
    output = model(images)
    assert adapter.logits(output) is output.logits
    torch.testing.assert_close(adapter.logits(model(images, return_dict=False)), output.logits)
    assert get_adapter(build("hf_deit_eager")).num_prefix_tokens == 2
    assert get_adapter(build("hf_deit_teacher_eager")).readout_tokens == {"cls": 0, "dist": 1}
    assert get_adapter(build("hf_vit_sdpa")).sites[0].name == (
        "vit.layers.0.attention"
        if transformers.__version__ >= "5"
        else "vit.encoder.layer.0.attention"
    )

    config = transformers.Dinov2Config(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=3, image_size=28, patch_size=7
    )
    backbone = transformers.Dinov2Model(config).eval()
    adapter = get_adapter(backbone)
    assert adapter.num_classes == 0
    x = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(adapter.features(backbone, x), backbone(x).last_hidden_state[:, 0])
    with pytest.raises(ValueError, match="no classifier head"):
        DAAM(backbone)


def test_hf_through_daam_end_to_end():
    pytest.importorskip("transformers", reason="transformers is optional")
    model = build("hf_deit_teacher_sdpa")
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    flow = DAAM(model).attribute(images, token="dist", return_flow=True)
    rel, *_ = core_flow(model, images, None, "dist")
    assert_close_scaled(flow.token_relevance, rel)
