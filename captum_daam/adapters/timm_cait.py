"""timm CaiT (``cait_*``): the class-attention blocks.

CaiT runs the patch tokens alone through talking-heads self-attention blocks
(``model.blocks``), then inserts the class token and runs class-attention blocks
(``model.blocks_token_only``) in which only the class token is updated::

    u = cat(x_cls, x)                      # [cls, patches]
    q = attn.q(u[:, 0])                    # (N, heads * head_dim): the class token only
    k, v = attn.k(u), attn.v(u)            # (N, T, heads * head_dim), head-major
    z = softmax(attn.scale * q k^T) v      # (N, 1, heads * head_dim), fused (SDPA) or not
    out = attn.proj(z)                     # Z is the input of attn.proj, ONE row

DAAM explains the class-attention blocks: their class-token row is the only row there is,
so the sites set ``z_row=0``. The talking-heads self-attention blocks are **excluded**:
the class token is not among their tokens, so the class token reads nothing out through
them (and talking heads mix the heads before and after the softmax, so there is no
per-head readout row to decompose). Tokens seen by the explained blocks are
``[cls, patches]``, patches row-major.

``ClassAttn`` is shared with XCiT (:mod:`.timm_xcit`), which reuses :func:`class_attn_site`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from timm.models.cait import Cait, ClassAttn
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._core.decomposition import readout_attention_row
from ..errors import UnsupportedModelError
from .base import AnyModule, AttentionSite, RowSink
from .timm_common import TimmClassTokenAdapter, attention_site, check_attention


def _install_class_attn_hooks(
    attn: ClassAttn, token_index: int, sink: RowSink
) -> List[RemovableHandle]:
    """Read the class query, keys and values off ``attn.q`` / ``attn.k`` / ``attn.v``.

    ``ClassAttn.forward`` calls them in the order q, k, v; the hook on ``attn.v`` forms
    the readout row. Nothing is recomputed: the three outputs are the model's own.
    """
    if token_index != 0:
        raise ValueError(
            f"class attention computes the query of the class token (index 0) only; "
            f"cannot explain token {token_index}"
        )
    heads = attn.num_heads
    head_dim = attn.q.out_features // heads
    # Per device (one replica each under DataParallel): the class query and the keys.
    queries: Dict[torch.device, Tensor] = {}
    keys: Dict[torch.device, Tensor] = {}

    def remember_query(module: nn.Module, args: Tuple[Any, ...], q: Tensor) -> None:
        queries[q.device] = q.detach()

    def remember_keys(module: nn.Module, args: Tuple[Any, ...], k: Tensor) -> None:
        keys[k.device] = k.detach()

    def readout_row(module: nn.Module, args: Tuple[Any, ...], v: Tensor) -> None:
        q, k = queries.pop(v.device), keys.pop(v.device)
        with torch.no_grad():
            batch, tokens, _ = v.shape
            q_row = q.reshape(batch, heads, head_dim)
            k = k.reshape(batch, tokens, heads, head_dim).transpose(1, 2)
            v = v.detach().reshape(batch, tokens, heads, head_dim).transpose(1, 2)
            a0 = readout_attention_row(q_row, k, attn.scale)
        sink(a0, v)

    return [
        attn.q.register_forward_hook(remember_query),
        attn.k.register_forward_hook(remember_keys),
        attn.v.register_forward_hook(readout_row),
    ]


def class_attn_site(name: str, attn: AnyModule, model_name: str) -> AttentionSite:
    """The site of a timm ``ClassAttn`` (CaiT and XCiT class-attention layers)."""
    check_attention(
        attn, ClassAttn, name, model_name, "DAAM supports the standard class-attention blocks only"
    )
    # Z holds the class token's row only.
    return attention_site(
        name,
        attn,
        _install_class_attn_hooks,
        head_dim=attn.q.out_features // attn.num_heads,
        z_row=0,
    )


def check_class_token_readout(model: AnyModule, blocks_name: str) -> None:
    """Refuse models whose prediction is not read out from the class token."""
    model_name = type(model).__name__
    if getattr(model, "cls_token", None) is None or getattr(model, blocks_name) is None:
        raise UnsupportedModelError(
            f"{model_name} has no class token / class-attention blocks (pruned with "
            "prune_intermediate_layers?); DAAM decomposes the class-token readout"
        )
    if model.global_pool != "token":
        raise UnsupportedModelError(
            f"{model_name} reads out with global_pool={model.global_pool!r}, not its "
            "class token, so the class-token decomposition does not explain its "
            "prediction; use a model with global_pool='token'"
        )


class TimmCaitAdapter(TimmClassTokenAdapter):
    """timm ``Cait``: the class-attention blocks ``blocks_token_only``."""

    family = "timm CaiT"
    description = (
        "timm CaiT (cait_*) with global_pool='token': the class-attention blocks "
        "(blocks_token_only) are explained; the talking-heads self-attention blocks, "
        "which the class token does not take part in, are not"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, Cait)

    def __init__(self, model: AnyModule) -> None:
        super().__init__(model)
        check_class_token_readout(model, "blocks_token_only")
        model_name = type(model).__name__
        self._sites = [
            class_attn_site(f"blocks_token_only.{i}.attn", block.attn, model_name)
            for i, block in enumerate(model.blocks_token_only)
        ]
