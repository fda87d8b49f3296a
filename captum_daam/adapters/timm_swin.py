"""timm Swin Transformer (``swin_*``): windowed attention, no class token.

Swin reads out by average-pooling the last stage's tokens, so it is explained in the
all-queries mode only. Where things live in a ``SwinTransformerBlock``::

    x: (N, H, W, C) on the stage's grid
    x = roll(x, -shift); windows = window_partition(pad(x))     # (N * nW, ws*ws, C)
    qkv = attn.qkv(windows)                                     # q | k | v, head-major
    z = softmax(attn.scale * q k^T + rel_pos_bias + shift_mask) v    # per window
    out = attn.proj(z)                                          # Z: input of attn.proj
    x = roll(window_reverse(out)[:H, :W], +shift)

A site records q, k, v per window with the window's relative position bias and the
shifted-window mask it was called with, and the block's geometry (grid, padding,
window, shift) to map window tokens back to the stage grid: window ``w`` of image ``n``
is ``n * nW + w`` with windows row-major, tokens row-major inside a window, the cyclic
shift undone by rolling back. Padding tokens are dropped. Later stages, after patch
merging, have one token per 2x2, 4x4, ... patches; the method spreads their relevance
evenly over the patches they cover (``spread_to_grid``).

Not supported: Swin V2 (``swinv2_*``: cosine attention with a learned logit scale and a
continuous position bias MLP), which raises ``UnsupportedModelError``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from timm.models.swin_transformer import SwinTransformer, WindowAttention
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .base import AnyModule, AttentionSite, QueryAttention, QuerySink, RowSink
from .timm_common import TimmClassTokenAdapter, attention_site, check_attention

#: (N, H, W) of the stage grid, window size, shift size of one block's call.
_Geometry = Tuple[int, int, int, Tuple[int, int], Tuple[int, int]]


def _window_layout(geometry: _Geometry):
    """Relevance per window token, (N, nW, ws*ws), back to the stage grid (N, H, W)."""
    batch, height, width, window, shift = geometry

    def layout(relevance: Tensor, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        padded_h = -(-height // window[0]) * window[0]
        padded_w = -(-width // window[1]) * window[1]
        rows, cols = padded_h // window[0], padded_w // window[1]
        tiles = relevance.reshape(-1, rows, cols, window[0], window[1])
        stage = tiles.permute(0, 1, 3, 2, 4).reshape(-1, padded_h, padded_w)
        stage = stage[:, :height, :width]
        if any(shift):
            stage = torch.roll(stage, shifts=shift, dims=(1, 2))
        return stage.new_zeros(stage.shape[0], 0), stage

    return layout


def _refuse_readout(attn: nn.Module, token_index: int, sink: RowSink) -> List[RemovableHandle]:
    raise ValueError("Swin has no readout token; use queries='all'")


def _install_window_hooks(block: AnyModule):
    """The all-queries hooks of one ``SwinTransformerBlock``'s window attention."""

    def install(attn: WindowAttention, sink: QuerySink) -> List[RemovableHandle]:
        # Per device: the (replica of the) block's geometry, and the attention module
        # running there with the shifted-window mask it was called with.
        geometry: Dict[torch.device, _Geometry] = {}
        calls: Dict[torch.device, Tuple[AnyModule, Optional[Tensor]]] = {}

        def remember_block(module: AnyModule, args: Tuple[Any, ...]) -> None:
            batch, height, width, _ = args[0].shape
            geometry[args[0].device] = (
                batch,
                height,
                width,
                tuple(module.window_size),
                tuple(module.shift_size),
            )

        def remember_mask(module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
            x = args[0] if args else kwargs["x"]
            mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
            calls[x.device] = (module, None if mask is None else mask.detach())

        def record(module: nn.Module, args: Tuple[Any, ...], qkv: Tensor) -> None:
            shape = geometry.pop(qkv.device)
            owner, mask = calls.pop(qkv.device)
            batch = shape[0]
            windows, tokens, _ = qkv.shape
            heads = owner.num_heads
            with torch.no_grad():
                qkv = qkv.detach().reshape(batch, windows // batch, tokens, 3, heads, -1)
                q, k, v = (qkv[:, :, :, i].transpose(2, 3) for i in range(3))
                bias = owner._get_rel_pos_bias().detach().unsqueeze(0)  # (1, 1, H, T, T)
                if mask is not None:
                    bias = bias + mask.to(bias.dtype)[None, :, None]  # (1, nW, H, T, T)
            sink(QueryAttention(q, k, v, owner.scale, bias, _window_layout(shape)))

        return [
            block.register_forward_pre_hook(remember_block),
            attn.register_forward_pre_hook(remember_mask, with_kwargs=True),
            attn.qkv.register_forward_hook(record),
        ]

    return install


class TimmSwinAdapter(TimmClassTokenAdapter):
    """timm ``SwinTransformer`` (V1), explained in the all-queries mode."""

    family = "timm Swin"
    description = (
        "timm Swin Transformer V1 (swin_*) in the all-queries mode: every block's "
        "window attention, shifted windows mapped back to the image grid"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, SwinTransformer)

    def __init__(self, model: AnyModule) -> None:
        super().__init__(model)
        model_name = type(model).__name__
        self._sites: List[AttentionSite] = []
        for s, stage in enumerate(model.layers):
            for i, block in enumerate(stage.blocks):
                name = f"layers.{s}.blocks.{i}.attn"
                check_attention(
                    block.attn,
                    WindowAttention,
                    name,
                    model_name,
                    "DAAM supports Swin V1's WindowAttention only",
                )
                self._sites.append(
                    attention_site(
                        name,
                        block.attn,
                        _refuse_readout,
                        head_dim=block.attn.qkv.out_features // (3 * block.attn.num_heads),
                        query_installer=_install_window_hooks(block),
                    )
                )

    @property
    def token_attention_refusal(self) -> Optional[str]:
        return (
            "Swin attends within separate (shifted) windows: there is no token-by-token "
            "attention matrix to roll out; use DAAM(model) (all-queries mode) or Grad-CAM"
        )

    @property
    def num_prefix_tokens(self) -> int:
        return 0

    @property
    def readout_tokens(self) -> Dict[str, int]:
        return {}

    @property
    def readout_refusal(self) -> Optional[str]:
        return (
            f"{type(self.model).__name__} has no class token: it average-pools its last "
            "stage's tokens; use DAAM(model, queries='all') (docs/method.md)"
        )
