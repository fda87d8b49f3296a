"""timm BEiT (``beit_*``, ``beitv2_*``) and EVA / EVA-02 (``eva_*``, ``eva02_*``).

Both descend from BEiT's attention, whose fused ``qkv`` projection takes its bias from
separate parameters (``q_bias``, a zero ``k_bias`` buffer, ``v_bias``) through
``F.linear(x, attn.qkv.weight, cat(q_bias, k_bias, v_bias))``: no submodule sees q, k
and v. So a forward pre-hook on the attention module **recomputes** them from the
attention's input, with the module's own weights: the class-token row of q and the keys
and values of all tokens. That is one extra (2/3 of the qkv) projection per explained
block, without gradient; the attention matrix itself is never formed.

BEiT (``timm.models.beit.Attention``)::

    q, k, v = split(F.linear(x, qkv.weight, qkv_bias))            # (N, heads, T, head_dim)
    logits = scale * q k^T + rel_pos_bias + shared_rel_pos_bias    # bias (heads, T, T)
    out = attn.proj(softmax(logits) v)                             # Z: input of attn.proj

The readout row adds row ``cls`` of the block's relative position bias (looked up from
``relative_position_bias_table`` for that row only) and of the model-level shared bias
(``use_shared_rel_pos_bias``) that the block receives as ``shared_rel_pos_bias``.

EVA (``timm.models.eva.EvaAttention``, ``attn_type='eva'``)::

    q, k, v = fused qkv as above, or q_proj(x), k_proj(x), v_proj(x) (qkv_fused=False)
    q, k = q_norm(q), k_norm(k)
    q, k = rope applied to the non-prefix tokens (apply_rot_embed_cat, the model's rope)
    out = attn.proj(attn.norm(softmax(scale * q k^T + mask) v))   # Z: input of attn.proj

With separate projections nothing is recomputed: hooks read the outputs of ``q_proj``,
``k_proj`` and ``v_proj``. The class token is a prefix token, so its query gets no rotary
embedding while the patch keys do; the row applies ``q_norm`` / ``k_norm``, rope and the
``attn_mask`` / ``is_causal`` the block was called with.

Not supported (``UnsupportedModelError``): pooling other than the class token
(``global_pool='avg'`` is BEiT's and EVA's *default*: create the model with
``global_pool='token'``), EVA's ``attn_type='rope'`` (``AttentionRope``: PE, DINOv3,
ROPE-ViT models), and attention that normalises or gates its output before the
projection (``scale_attn_inner=True``, as in the EVA-02 CLIP towers, or ``gated_attn``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from timm.layers import apply_rot_embed_cat
from timm.models.beit import Attention as BeitAttention
from timm.models.beit import Beit
from timm.models.eva import Eva, EvaAttention
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._core.decomposition import compute_dtype, readout_attention_row, readout_row_bias
from ..errors import UnsupportedModelError
from .base import AnyModule, AttentionSite, RowSink
from .timm_common import TimmClassTokenAdapter, attention_site, check_attention


def _heads(t: Tensor, heads: int) -> Tensor:
    """(N, T, heads * head_dim) -> (N, heads, T, head_dim)."""
    batch, tokens, _ = t.shape
    return t.reshape(batch, tokens, heads, -1).transpose(1, 2)


def _fused_qkv_bias(attn: AnyModule) -> Optional[Tensor]:
    if getattr(attn, "q_bias", None) is None:
        return attn.qkv.bias
    return torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))


def _recompute_qkv(attn: AnyModule, x: Tensor, token_index: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Class row of q, (N, heads, head_dim), and k, v, (N, heads, T, head_dim), from the
    input ``x`` of an attention with a fused ``qkv`` weight and BEiT-style biases."""
    heads = attn.num_heads
    weight, bias = attn.qkv.weight, _fused_qkv_bias(attn)
    width = weight.shape[0] // 3
    q_bias = None if bias is None else bias[:width]
    kv_bias = None if bias is None else bias[width:]
    q_row = F.linear(x[:, token_index], weight[:width], q_bias)
    kv = F.linear(x, weight[width:], kv_bias)
    k, v = kv.split(width, dim=-1)
    return q_row.reshape(x.shape[0], heads, -1), _heads(k, heads), _heads(v, heads)


def _check_token_readout(model: AnyModule) -> None:
    model_name = type(model).__name__
    if getattr(model, "cls_token", None) is None:
        raise UnsupportedModelError(
            f"{model_name} has no class token; DAAM decomposes the class-token readout. "
            "Use a model with a class token and global_pool='token'"
        )
    if model.global_pool != "token" or getattr(model, "attn_pool", None) is not None:
        raise UnsupportedModelError(
            f"{model_name} reads out with global_pool={model.global_pool!r}, not its "
            "class token, so the class-token decomposition does not explain its "
            "prediction; create the model with global_pool='token' (BEiT and EVA "
            "classifiers default to 'avg')"
        )


# --------------------------------------------------------------------------- BEiT


def _install_beit_hooks(
    attn: BeitAttention, token_index: int, sink: RowSink
) -> List[RemovableHandle]:
    def readout_row(module: AnyModule, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        x = args[0] if args else kwargs["x"]
        shared = kwargs.get("shared_rel_pos_bias", args[1] if len(args) > 1 else None)
        with torch.no_grad():
            x = x.detach()
            dtype = compute_dtype(x.dtype)
            q_row, k, v = _recompute_qkv(module, x, token_index)
            bias: Optional[Tensor] = None
            if module.relative_position_bias_table is not None:
                index = module.relative_position_index[token_index]  # (T,)
                bias = module.relative_position_bias_table[index].t().to(dtype)  # (H, T)
            if shared is not None:
                shared_row = shared.detach()[..., token_index, :].to(dtype)
                bias = shared_row if bias is None else bias + shared_row
            a0 = readout_attention_row(q_row, k, module.scale, bias)
        sink(a0, v)

    return [attn.register_forward_pre_hook(readout_row, with_kwargs=True)]


def _beit_site(name: str, attn: AnyModule, model_name: str) -> AttentionSite:
    check_attention(attn, BeitAttention, name, model_name, "BEiT's own Attention only")
    return attention_site(
        name, attn, _install_beit_hooks, head_dim=attn.qkv.out_features // (3 * attn.num_heads)
    )


class TimmBeitAdapter(TimmClassTokenAdapter):
    """timm ``Beit`` with a class-token readout."""

    family = "timm BEiT"
    description = (
        "timm BEiT (beit_*, beitv2_*) created with global_pool='token': every block, the "
        "class row with its relative position bias (per-block and shared)"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, Beit)

    def __init__(self, model: AnyModule) -> None:
        super().__init__(model)
        _check_token_readout(model)
        model_name = type(model).__name__
        self._sites = [
            _beit_site(f"blocks.{i}.attn", block.attn, model_name)
            for i, block in enumerate(model.blocks)
        ]


# --------------------------------------------------------------------------- EVA


def _install_eva_hooks(
    attn: EvaAttention, token_index: int, sink: RowSink
) -> List[RemovableHandle]:
    if token_index >= attn.num_prefix_tokens:
        raise ValueError(f"token {token_index} is a patch token; EVA's readout is its class token")
    # Per device: the (replica of the) module running there and its call's rope and mask.
    calls: Dict[torch.device, Tuple[AnyModule, Optional[Tensor], Optional[Tensor], bool]] = {}
    queries: Dict[torch.device, Tensor] = {}
    keys: Dict[torch.device, Tensor] = {}

    def readout_row(
        owner: AnyModule,
        q_row: Tensor,
        k: Tensor,
        v: Tensor,
        rope: Optional[Tensor],
        attn_mask: Optional[Tensor],
        is_causal: bool,
    ) -> None:
        tokens = k.shape[2]
        dtype = compute_dtype(v.dtype)
        q_row, k = owner.q_norm(q_row), owner.k_norm(k)
        if rope is not None:
            # Only the patch tokens are rotated; the readout (class) token is a prefix
            # token, so its query is not.
            npt, half = owner.num_prefix_tokens, getattr(owner, "rotate_half", False)
            k = torch.cat(
                [k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2
            ).type_as(v)
        bias = readout_row_bias(attn_mask, is_causal, token_index, tokens, dtype, v.device)
        a0 = readout_attention_row(q_row, k, owner.scale, bias)
        sink(a0, v)

    def remember_call(module: AnyModule, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
        x = args[0] if args else kwargs["x"]
        rope = kwargs.get("rope", args[1] if len(args) > 1 else None)
        attn_mask = kwargs.get("attn_mask", args[2] if len(args) > 2 else None)
        is_causal = bool(kwargs.get("is_causal", args[3] if len(args) > 3 else False))
        rope = None if rope is None else rope.detach()
        attn_mask = None if attn_mask is None else attn_mask.detach()
        if module.qkv is None:  # separate projections: the hooks below read them
            calls[x.device] = (module, rope, attn_mask, is_causal)
            return
        with torch.no_grad():
            q_row, k, v = _recompute_qkv(module, x.detach(), token_index)
            readout_row(module, q_row, k, v, rope, attn_mask, is_causal)

    def remember_query(module: nn.Module, args: Tuple[Any, ...], q: Tensor) -> None:
        queries[q.device] = q.detach()[:, token_index]

    def remember_keys(module: nn.Module, args: Tuple[Any, ...], k: Tensor) -> None:
        keys[k.device] = k.detach()

    def values(module: nn.Module, args: Tuple[Any, ...], v: Tensor) -> None:
        owner, rope, attn_mask, is_causal = calls.pop(v.device)
        q, k = queries.pop(v.device), keys.pop(v.device)
        heads = owner.num_heads
        with torch.no_grad():
            readout_row(
                owner,
                q.reshape(q.shape[0], heads, -1),
                _heads(k, heads),
                _heads(v.detach(), heads),
                rope,
                attn_mask,
                is_causal,
            )

    handles = [attn.register_forward_pre_hook(remember_call, with_kwargs=True)]
    if attn.qkv is None:
        handles += [
            attn.q_proj.register_forward_hook(remember_query),
            attn.k_proj.register_forward_hook(remember_keys),
            attn.v_proj.register_forward_hook(values),
        ]
    return handles


def _eva_site(name: str, attn: AnyModule, model_name: str) -> AttentionSite:
    check_attention(
        attn,
        EvaAttention,
        name,
        model_name,
        "EVA models with attn_type='rope' (AttentionRope: PE, DINOv3, "
        "ROPE-ViT) are not supported yet",
    )
    return attention_site(name, attn, _install_eva_hooks)


class TimmEvaAdapter(TimmClassTokenAdapter):
    """timm ``Eva`` (EVA, EVA-02) with ``EvaAttention`` and a class-token readout."""

    family = "timm EVA"
    description = (
        "timm EVA / EVA-02 (eva_*, eva02_*) created with global_pool='token': every "
        "block, the class row with q/k-norm, rotary embedding of the patch keys and "
        "masks; fused or separate q/k/v, register tokens, dynamic_img_size=True"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, Eva)

    def __init__(self, model: AnyModule) -> None:
        super().__init__(model)
        _check_token_readout(model)
        model_name = type(model).__name__
        self._sites = [
            _eva_site(f"blocks.{i}.attn", block.attn, model_name)
            for i, block in enumerate(model.blocks)
        ]
