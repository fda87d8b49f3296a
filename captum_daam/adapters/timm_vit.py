"""timm ``VisionTransformer`` and its subclasses.

Covers ``vit_*`` and ``deit_*`` (the distilled DeiT's extra token included), register
models (``*_reg*``), DINO and DINOv2 (LayerScale lives outside the attention, so it needs
nothing here), q/k-norm variants and ``dynamic_img_size=True`` models.

Where things live in ``timm.layers.Attention``::

    qkv = attn.qkv(x)                   # (N, T, 3 * heads * head_dim): q | k | v, head-major
    q, k = attn.q_norm(q), attn.k_norm(k)
    z = softmax(attn.scale * q k^T + mask) v   # fused (SDPA) or not: never materialised here
    out = attn.proj(attn.norm(z))       # Z is the input of attn.proj (norm is Identity)

Tokens are ``[cls, (dist), (registers...), patches...]``, patches row-major.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._core.decomposition import (
    attention_bias,
    compute_dtype,
    readout_attention_row,
    readout_row_bias,
)
from ..errors import UnsupportedModelError
from .base import AnyModule, QueryAttention, QuerySink, RowSink
from .timm_common import (
    TimmClassTokenAdapter,
    attention_site,
    check_attention,
    prefix_layout,
)

#: ``on_qkv(owner, qkv, attn_mask, is_causal)``: called without gradient with the
#: detached ``qkv`` output, (N, T, 3, heads, head_dim), of the module ``owner``.
_QkvCallback = Callable[[AnyModule, Tensor, Optional[Tensor], bool], None]


def _hook_qkv(attn: Attention, on_qkv: _QkvCallback) -> List[RemovableHandle]:
    """Hooks that hand ``attn``'s own ``qkv`` output and its call's mask to ``on_qkv``."""
    # Per device: the (replica of the) attention module running there and its mask.
    calls: Dict[torch.device, Tuple[AnyModule, Optional[Tensor], bool]] = {}

    def remember_call(module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
        attn_mask = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
        is_causal = bool(kwargs.get("is_causal", args[2] if len(args) > 2 else False))
        calls[args[0].device] = (module, attn_mask, is_causal)

    def split_qkv(module: nn.Module, args: Tuple[Any, ...], qkv: Tensor) -> None:
        owner, attn_mask, is_causal = calls.pop(qkv.device, (attn, None, False))
        batch, tokens, _ = qkv.shape
        with torch.no_grad():
            qkv = qkv.detach().reshape(batch, tokens, 3, owner.num_heads, owner.head_dim)
            on_qkv(owner, qkv, attn_mask, is_causal)

    return [
        attn.register_forward_pre_hook(remember_call, with_kwargs=True),
        attn.qkv.register_forward_hook(split_qkv),
    ]


def _install_attention_hooks(
    attn: Attention, token_index: int, sink: RowSink
) -> List[RemovableHandle]:
    """Recompute the readout row of ``attn`` from its own ``qkv`` output."""

    def readout_row(
        owner: AnyModule, qkv: Tensor, attn_mask: Optional[Tensor], is_causal: bool
    ) -> None:
        tokens = qkv.shape[1]
        q_row = owner.q_norm(qkv[:, token_index, 0])  # (N, heads, head_dim)
        k = owner.k_norm(qkv[:, :, 1].transpose(1, 2))  # (N, heads, T, head_dim)
        v = qkv[:, :, 2].transpose(1, 2)  # a view: no copy of the values
        bias = readout_row_bias(
            attn_mask, is_causal, token_index, tokens, compute_dtype(qkv.dtype), qkv.device
        )
        sink(readout_attention_row(q_row, k, owner.scale, bias), v)

    return _hook_qkv(attn, readout_row)


def _query_installer(num_prefix_tokens: int):
    """The all-queries hooks: queries, keys and values of every token, kept as views of
    the ``qkv`` output (which autograd keeps anyway) when there is no q/k-norm."""
    layout = prefix_layout(num_prefix_tokens)

    def install(attn: Attention, sink: QuerySink) -> List[RemovableHandle]:
        def record(
            owner: AnyModule, qkv: Tensor, attn_mask: Optional[Tensor], is_causal: bool
        ) -> None:
            q = owner.q_norm(qkv[:, :, 0].transpose(1, 2))  # (N, heads, T, head_dim)
            k = owner.k_norm(qkv[:, :, 1].transpose(1, 2))
            v = qkv[:, :, 2].transpose(1, 2)
            bias = attention_bias(
                attn_mask, is_causal, qkv.shape[1], compute_dtype(qkv.dtype), qkv.device
            )
            if bias is not None:
                while bias.dim() < 4:
                    bias = bias.unsqueeze(0)
                bias = bias.unsqueeze(1)  # one group of tokens
            sink(
                QueryAttention(
                    q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), owner.scale, bias, layout
                )
            )

        return _hook_qkv(attn, record)

    return install


class TimmVisionTransformerAdapter(TimmClassTokenAdapter):
    """timm ``VisionTransformer`` (and subclasses such as the distilled DeiT)."""

    family = "timm VisionTransformer"
    description = (
        "timm VisionTransformer: vit_*, deit_* (distilled included), register models "
        "(*_reg*), DINO / DINOv2, q/k-norm variants, dynamic_img_size=True; with a class "
        "token and global_pool='token' in the readout mode, and in the all-queries mode "
        "also without one (global_pool='avg')"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, VisionTransformer)

    def __init__(self, model: AnyModule) -> None:
        super().__init__(model)
        model_name = type(model).__name__
        if getattr(model, "attn_pool", None) is not None:
            raise UnsupportedModelError(
                f"{model_name} reads out through an attention-pooling head "
                f"(global_pool={model.global_pool!r}), whose own attention DAAM does not "
                "decompose; use global_pool='token' or 'avg'"
            )
        self._refusal: Optional[str] = None
        if getattr(model, "cls_token", None) is None:
            self._refusal = (
                f"{model_name} has no class token (class_token=False, "
                f"global_pool={model.global_pool!r}), so there is no readout row to "
                "decompose; use DAAM(model, queries='all') (docs/method.md)"
            )
        elif model.global_pool != "token":
            self._refusal = (
                f"{model_name} reads out with global_pool={model.global_pool!r}, not its "
                "class token, so the class-token decomposition does not explain its "
                "prediction; use DAAM(model, queries='all') or a model with "
                "global_pool='token'"
            )
        self._sites = []
        for i, block in enumerate(model.blocks):
            name = f"blocks.{i}.attn"
            check_attention(
                block.attn,
                Attention,
                name,
                model_name,
                "DAAM supports VisionTransformer blocks with the standard Attention module",
            )
            self._sites.append(
                attention_site(
                    name,
                    block.attn,
                    _install_attention_hooks,
                    query_installer=_query_installer(self.num_prefix_tokens),
                )
            )
        self._tokens = {} if getattr(model, "cls_token", None) is None else {"cls": 0}
        if getattr(model, "dist_token", None) is not None:
            self._tokens["dist"] = 1

    @property
    def readout_refusal(self) -> Optional[str]:
        return self._refusal

    @property
    def readout_tokens(self) -> Dict[str, int]:
        return dict(self._tokens)
