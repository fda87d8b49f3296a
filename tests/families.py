"""Small randomly initialised models, one per supported timm family, and the random
test cases (batch, image size, readout token, targets, seed) drawn for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Dict, List, Optional, Tuple

import timm
import torch
from hypothesis import strategies as st
from torch import nn

NUM_CLASSES = 10
SMALL = dict(embed_dim=48, num_heads=3, depth=3, num_classes=NUM_CLASSES)


@dataclass(frozen=True)
class Family:
    """A timm model name, the overrides that make it tiny, and its test image sizes."""

    model_name: str
    kwargs: Dict[str, object] = field(default_factory=dict)
    sizes: Tuple[Tuple[int, int], ...] = ((32, 32),)
    tokens: Tuple[str, ...] = ("cls",)


FAMILIES: Dict[str, Family] = {
    "vit": Family("vit_tiny_patch16_224", dict(img_size=32, patch_size=8)),
    "deit": Family("deit_tiny_patch16_224", dict(img_size=32, patch_size=8)),
    "deit_distilled": Family(
        "deit_tiny_distilled_patch16_224",
        dict(img_size=32, patch_size=8),
        tokens=("cls", "dist"),
    ),
    "vit_registers": Family(
        "vit_small_patch14_reg4_dinov2",
        dict(img_size=28, patch_size=7, init_values=0.5),
        sizes=((28, 28),),
    ),
    "dino": Family("vit_small_patch16_224", dict(img_size=32, patch_size=8)),
    "dinov2": Family(
        "vit_small_patch14_dinov2",
        dict(img_size=28, patch_size=7, init_values=0.5),
        sizes=((28, 28),),
    ),
    "qk_norm": Family("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, qk_norm=True)),
    "dynamic": Family(
        "vit_tiny_patch16_224",
        dict(img_size=32, patch_size=8, dynamic_img_size=True),
        sizes=((32, 32), (24, 40), (48, 16), (16, 8)),
    ),
}


@cache
def build(name: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    """The family's tiny model, eval mode, deterministic weights, larger than timm's
    0.02-std init so that the logits and maps are far from degenerate."""
    family = FAMILIES[name]
    torch.manual_seed(seed)
    model = timm.create_model(family.model_name, pretrained=False, **{**SMALL, **family.kwargs})
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0, 0.2)
    return model.to(dtype).eval()


def attention_modules(model: nn.Module) -> List[nn.Module]:
    return [block.attn for block in model.blocks]


def token_index(name: str, token: Optional[str]) -> int:
    return 1 if token == "dist" else 0


@st.composite
def attribution_cases(draw, sizes, tokens, num_classes: int = NUM_CLASSES):
    """``(batch, size, token, targets, seed)`` for a family with these image ``sizes`` and
    readout ``tokens``: 1 to 3 images, targets ``None`` or one class per image."""
    batch = draw(st.integers(1, 3))
    size = draw(st.sampled_from(sizes))
    token = draw(st.sampled_from(tokens))
    targets = draw(
        st.none() | st.lists(st.integers(0, num_classes - 1), min_size=batch, max_size=batch)
    )
    seed = draw(st.integers(0, 2**31 - 1))
    return batch, size, token, targets, seed


def random_images(
    batch: int, size: Tuple[int, int], seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``batch`` standard-normal RGB images of ``size``, the same for the same ``seed``."""
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed), dtype=dtype)
