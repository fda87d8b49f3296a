"""timm XCiT (``xcit_*``): the class-attention layers at the end.

XCiT's main blocks (``model.blocks``, ``XCABlock``) use cross-covariance attention: the
softmax runs over a (head_dim x head_dim) channel-channel matrix, so it mixes channels,
not tokens, and there is no class token there at all. There is no token row to decompose,
and those blocks are **excluded**. The class token is prepended after them (no position
encoding) and read out through the class-attention layers ``model.cls_attn_blocks``,
which use CaiT's ``ClassAttn`` (query of the class token only, keys / values of
``[cls, patches]``, Z = the input of ``attn.proj`` with one row, ``z_row=0``): those are
explained, with the same hooks as CaiT (:mod:`.timm_cait`). Unlike CaiT, each
class-attention block also updates the patch tokens it passes on (LayerScale'd norm), so
the second block sees different patch tokens than the first; the hooks read whatever the
block sees.

The patch grid comes from ``ConvPatchEmbed``: a stack of 3x3 stride-2 convolutions
(padding 1), i.e. ceil-halving the image 3 (patch 8) or 4 (patch 16) times; the Fourier
position encoding adapts to any grid, so any input size works.
"""

from __future__ import annotations

from typing import Optional, Tuple

from timm.models.xcit import Xcit
from torch import nn

from ..errors import InvalidInputError, UnsupportedModelError
from .base import AnyModule
from .timm_cait import check_class_token_readout, class_attn_site
from .timm_common import TimmClassTokenAdapter


def _conv_out(size: int, conv: nn.Conv2d, dim: int) -> int:
    padding = conv.padding
    assert not isinstance(padding, str)  # the constructor refuses "same" / "valid"
    return (
        size + 2 * padding[dim] - conv.dilation[dim] * (conv.kernel_size[dim] - 1) - 1
    ) // conv.stride[dim] + 1


class TimmXcitAdapter(TimmClassTokenAdapter):
    """timm ``Xcit``: the class-attention layers ``cls_attn_blocks``."""

    family = "timm XCiT"
    description = (
        "timm XCiT (xcit_*) with global_pool='token': the class-attention layers "
        "(cls_attn_blocks) are explained; the cross-covariance (XCA) blocks mix channels, "
        "not tokens, and hold no class token, so they are not"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, Xcit)

    def __init__(self, model: AnyModule) -> None:
        super().__init__(model)
        check_class_token_readout(model, "cls_attn_blocks")
        model_name = type(model).__name__
        self._sites = [
            class_attn_site(f"cls_attn_blocks.{i}.attn", block.attn, model_name)
            for i, block in enumerate(model.cls_attn_blocks)
        ]
        self._convs = [m for m in model.patch_embed.proj.modules() if isinstance(m, nn.Conv2d)]
        if not self._convs or any(isinstance(conv.padding, str) for conv in self._convs):
            raise UnsupportedModelError(
                f"{model_name}: the patch embedding is not ConvPatchEmbed's stack of "
                "explicitly padded convolutions, so its patch grid is unknown"
            )

    @property
    def in_chans(self) -> Optional[int]:
        return int(self._convs[0].in_channels) if self._convs else None

    def grid_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        rows, cols = image_size
        for conv in self._convs:
            rows, cols = _conv_out(rows, conv, 0), _conv_out(cols, conv, 1)
        if rows < 1 or cols < 1:
            raise InvalidInputError(
                f"inputs of size {tuple(image_size)} are too small for the convolutional "
                f"patch embedding of {type(self.model).__name__} (patch size "
                f"{self.model.patch_embed.patch_size})"
            )
        return int(rows), int(cols)
