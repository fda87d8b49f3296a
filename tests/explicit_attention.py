"""Textbook attention, one function per supported attention module, for the explicit
references (``reference.py``, ``ssl_reference.py``, ``all_queries_reference.py``).

Each function recomputes its module's output from the full attention matrix (all
queries and the full T x T matrix with the family's relative position bias / rotary
embedding / mask / window mask, or the 1 x T matrix of class attention), stores
``attn`` (N, H, Q, T), ``v`` (N, H, T, hd) and ``Z = attn @ v`` (N, Q, H * hd) in
``store``, and returns what the module returns, so that ``reference_helpers``'s hooks
can substitute it for the module's output. Nothing here uses the package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Store = dict[str, Tensor]
#: ``explicit(module, args, kwargs, store)``: the module's output, the textbook way.
Explicit = Callable[[nn.Module, tuple, dict, Store], Any]


def _finish(store: Store, attn: Tensor, v: Tensor) -> Tensor:
    """Z = attn @ v, heads concatenated head-major; remember everything."""
    batch, heads, queries, _ = attn.shape
    z = (attn @ v).transpose(1, 2).reshape(batch, queries, heads * v.shape[-1])
    store["attn"], store["v"], store["z"] = attn, v, z
    return z


def _split(t: Tensor, heads: int) -> Tensor:
    batch, tokens, _ = t.shape
    return t.reshape(batch, tokens, heads, -1).transpose(1, 2)


def _mask_bias(mask: Tensor | None, like: Tensor) -> Tensor:
    if mask is None:
        return torch.zeros((), dtype=like.dtype)
    if mask.dtype == torch.bool:
        return torch.where(mask, 0.0, float("-inf")).to(like.dtype)
    return mask.to(like.dtype)


# ---------------------------------------------------------------------- timm attention


def timm_attention(module: nn.Module, args, kwargs, store: Store) -> Tensor:
    """timm ``Attention`` (VisionTransformer: ViT, DeiT, DINO, DINOv2, DeiT-III).

    The attention mask and the gate of ``Attention`` are not reproduced.
    """
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
    q, k, v = (
        F.linear(x, module.qkv.weight, bias)
        .reshape(*x.shape[:2], 3, heads, -1)
        .permute(2, 0, 3, 1, 4)
    )
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
        q, k, v = (
            F.linear(x, module.qkv.weight, bias)
            .reshape(*x.shape[:2], 3, heads, -1)
            .permute(2, 0, 3, 1, 4)
        )
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
    attn = (q @ k.transpose(-2, -1) * self_attn.attention_head_size**-0.5).softmax(-1)
    z = _finish(store, attn, v)
    return module.output.dense(z)


# ------------------------------------------------------------------------ Swin (windows)


def swin_attention(module: nn.Module, args, kwargs, store: Store) -> Tensor:
    """timm ``WindowAttention`` (Swin V1): relative position bias, shifted-window mask;
    the batch dimension of the store is the windows'."""
    x = args[0]
    mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
    windows, tokens, _ = x.shape
    heads = module.num_heads
    q, k, v = module.qkv(x).reshape(windows, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
    index = module.relative_position_index.reshape(-1)
    bias = module.relative_position_bias_table[index].reshape(tokens, tokens, heads)
    logits = q * module.scale @ k.transpose(-2, -1) + bias.permute(2, 0, 1)
    if mask is not None:
        nw = mask.shape[0]
        logits = logits.reshape(-1, nw, heads, tokens, tokens) + mask[None, :, None]
        logits = logits.reshape(windows, heads, tokens, tokens)
    z = _finish(store, logits.softmax(-1), v)
    return module.proj_drop(module.proj(z))
