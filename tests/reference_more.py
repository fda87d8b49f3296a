"""Explicit, slow references for the families beyond timm's VisionTransformer.

As in ``reference.py``: per example, every attention module's output is recomputed the
textbook way (all queries, the full T x T attention matrix with the family's relative
position bias / rotary embedding / mask, or the 1 x T matrix of class attention) and
substituted for the module's output, so the gradient of the score is taken at that
explicit ``Z``; the decomposition ``S`` is formed in full and weighted channel by channel.
Nothing here uses the adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Store = Dict[str, Tensor]


def _finish(store: Store, attn: Tensor, v: Tensor) -> Tensor:
    """Z = attn @ v, heads concatenated head-major; remember everything."""
    batch, heads, queries, _ = attn.shape
    z = (attn @ v).transpose(1, 2).reshape(batch, queries, heads * v.shape[-1])
    store["attn"], store["v"], store["z"] = attn, v, z
    return z


def _split(t: Tensor, heads: int) -> Tensor:
    batch, tokens, _ = t.shape
    return t.reshape(batch, tokens, heads, -1).transpose(1, 2)


def _mask_bias(mask: Optional[Tensor], like: Tensor) -> Tensor:
    if mask is None:
        return torch.zeros((), dtype=like.dtype)
    if mask.dtype == torch.bool:
        return torch.where(mask, 0.0, float("-inf")).to(like.dtype)
    return mask.to(like.dtype)


# ----------------------------------------------------------------- timm explicit attention


def timm_attention(module: nn.Module, args, kwargs, store: Store) -> Tensor:
    """timm ``Attention`` (VisionTransformer, DeiT-III)."""
    x = args[0]
    heads = module.num_heads
    q, k, v = module.qkv(x).reshape(*x.shape[:2], 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k = module.q_norm(q), module.k_norm(k)
    attn = (q * module.scale @ k.transpose(-2, -1)).softmax(-1)
    z = _finish(store, attn, v)
    return module.proj_drop(module.proj(module.norm(z)))


def class_attention(module: nn.Module, args, kwargs, store: Store) -> Tensor:
    """timm ``ClassAttn`` (CaiT, XCiT): one query, the class token's."""
    x = args[0]
    heads = module.num_heads
    q = _split(module.q(x[:, :1]), heads)  # (N, H, 1, hd)
    k, v = _split(module.k(x), heads), _split(module.v(x), heads)
    attn = (q * module.scale @ k.transpose(-2, -1)).softmax(-1)  # (N, H, 1, T)
    z = _finish(store, attn, v)
    return module.proj_drop(module.proj(z))


def beit_attention(module: nn.Module, args, kwargs, store: Store) -> Tensor:
    """timm BEiT ``Attention``: full relative position bias, per block and shared."""
    x = args[0]
    shared = kwargs.get("shared_rel_pos_bias", args[1] if len(args) > 1 else None)
    heads = module.num_heads
    bias = None
    if module.q_bias is not None:
        bias = torch.cat((module.q_bias, torch.zeros_like(module.q_bias), module.v_bias))
    q, k, v = F.linear(x, module.qkv.weight, bias).reshape(
        *x.shape[:2], 3, heads, -1).permute(2, 0, 3, 1, 4)
    logits = q * module.scale @ k.transpose(-2, -1)
    if module.relative_position_bias_table is not None:
        tokens = x.shape[1]
        table = module.relative_position_bias_table  # (distances, H)
        rel = table[module.relative_position_index.reshape(-1)].reshape(tokens, tokens, heads)
        logits = logits + rel.permute(2, 0, 1)
    if shared is not None:
        logits = logits + shared
    z = _finish(store, logits.softmax(-1), v)
    return module.proj_drop(module.proj(z))


def eva_attention(module: nn.Module, args, kwargs, store: Store) -> Tensor:
    """timm ``EvaAttention``: q/k-norm, rotary embedding of all patch queries and keys."""
    from timm.layers import apply_rot_embed_cat

    x = args[0]
    rope = kwargs.get("rope", args[1] if len(args) > 1 else None)
    mask = kwargs.get("attn_mask", args[2] if len(args) > 2 else None)
    heads = module.num_heads
    if module.qkv is not None:
        bias = None
        if module.q_bias is not None:
            bias = torch.cat((module.q_bias, torch.zeros_like(module.q_bias), module.v_bias))
        q, k, v = F.linear(x, module.qkv.weight, bias).reshape(
            *x.shape[:2], 3, heads, -1).permute(2, 0, 3, 1, 4)
    else:
        q, k, v = (_split(p(x), heads) for p in (module.q_proj, module.k_proj, module.v_proj))
    q, k = module.q_norm(q), module.k_norm(k)
    if rope is not None:
        npt, half = module.num_prefix_tokens, module.rotate_half
        q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], 2)
        k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], 2)
    logits = q * module.scale @ k.transpose(-2, -1) + _mask_bias(mask, q)
    z = _finish(store, logits.softmax(-1), v)
    return module.proj_drop(module.proj(module.norm(z)))


# ---------------------------------------------------------- Hugging Face explicit attention


def hf_attention(module: nn.Module, args, kwargs, store: Store) -> Any:
    """transformers 5 ``ViTAttention`` & co.: returns ``(output, weights)`` like it."""
    x = args[0]
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    heads = module.num_attention_heads
    q, k, v = (_split(p(x), heads) for p in (module.q_proj, module.k_proj, module.v_proj))
    logits = q @ k.transpose(-2, -1) * module.scaling + _mask_bias(mask, q)
    attn = logits.softmax(-1)
    z = _finish(store, attn, v)
    return module.o_proj(z), attn


def hf4_attention(module: nn.Module, args, kwargs, store: Store) -> Tensor:
    """transformers 4.x ``ViTAttention`` wrapper (``attention`` + ``output.dense``)."""
    x = args[0]
    self_attn = module.attention
    heads = self_attn.num_attention_heads
    q, k, v = (_split(p(x), heads) for p in (self_attn.query, self_attn.key, self_attn.value))
    attn = (q @ k.transpose(-2, -1) * self_attn.attention_head_size ** -0.5).softmax(-1)
    z = _finish(store, attn, v)
    return module.output.dense(z)


# --------------------------------------------------------------------------- the reference


@dataclass
class ReferenceFlow:
    block_maps: Tensor  # (N, B, rows, cols)
    accumulated: Tensor  # (N, B, rows, cols)
    token_relevance: Tensor  # (N, B, T)
    targets: Tensor  # (N,)
    logits: Tensor  # (N, classes) of the model with explicit attention


Explicit = Callable[[nn.Module, tuple, dict, Store], Any]


def reference_daam(
    model: nn.Module,
    attention_modules: Sequence[nn.Module],
    explicit: Explicit,
    images: Tensor,
    target: Optional[Sequence[int]] = None,
    token_index: int = 0,
    z_row: Optional[int] = None,
    num_prefix_tokens: int = 1,
    grid_size: Optional[tuple] = None,
    logits_of: Callable[[Any], Tensor] = lambda output: output,
    forward_args: tuple = (),
) -> ReferenceFlow:
    """DAAM the slow way. ``z_row``: the row of Z (and of the attention) holding the
    readout token when the module computes fewer queries than tokens (class attention)."""
    row = token_index if z_row is None else z_row
    rels: List[Tensor] = []
    targets: List[int] = []
    all_logits: List[Tensor] = []
    for i in range(images.shape[0]):
        stores: List[Store] = [dict() for _ in attention_modules]

        def make_hook(store: Store):
            def hook(module, args, kwargs, output):
                return explicit(module, args, kwargs, store)

            return hook

        handles = [
            m.register_forward_hook(make_hook(s), with_kwargs=True)
            for m, s in zip(attention_modules, stores)
        ]
        try:
            with torch.enable_grad():
                logits = logits_of(model(images[i : i + 1], *forward_args))
                t = int(logits.argmax()) if target is None else int(target[i])
                grads = torch.autograd.grad(logits[0, t], [s["z"] for s in stores])
        finally:
            for h in handles:
                h.remove()
        block_rel = []
        for store, grad in zip(stores, grads):
            a0 = store["attn"][0, :, row, :].detach()  # (H, T)
            v = store["v"][0].detach()  # (H, T, hd)
            heads, tokens, head_dim = v.shape
            s = torch.zeros(tokens, heads * head_dim, dtype=v.dtype)
            for h in range(heads):
                s[:, h * head_dim : (h + 1) * head_dim] = a0[h][:, None] * v[h]
            w = grad[0, row].detach().clamp(min=0)
            block_rel.append(s @ w)
        rels.append(torch.stack(block_rel))
        targets.append(t)
        all_logits.append(logits.detach()[0])
    rel = torch.stack(rels)
    maps = rel[:, :, num_prefix_tokens:].clamp(min=0)
    if grid_size is not None:
        maps = maps.reshape(*maps.shape[:2], *grid_size)
    return ReferenceFlow(
        block_maps=maps,
        accumulated=maps.cumsum(dim=1),
        token_relevance=rel,
        targets=torch.tensor(targets),
        logits=torch.stack(all_logits),
    )
