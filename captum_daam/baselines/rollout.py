"""Attention rollout (Abnar & Zuidema, ACL 2020): the head-fused attention matrices,
with the residual connection, multiplied through the blocks. A class-agnostic baseline.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from captum._utils.common import _format_additional_forward_args
from torch import Tensor, nn

from .._core.flow import attention_matrices
from .._core.grid import patches_on_grid
from ..adapters import get_adapter
from ..errors import InvalidInputError, UnsupportedModelError
from ._base import Inputs, check_inputs, explanation_pass


def _attention_matrices(
    model: nn.Module, inputs: Tuple[Tensor, ...], extra: Tuple[Any, ...]
) -> List[Tensor]:
    """Every block's post-softmax attention (N, heads, T, T), from the adapter's
    all-queries hooks (see :func:`captum_daam._core.flow.attention_matrices`)."""
    adapter = get_adapter(model)
    refusal = adapter.token_attention_refusal
    if refusal is not None:
        raise UnsupportedModelError(
            f"attention rollout needs every block's attention matrix: {refusal}"
        )
    with explanation_pass(model) as eager:
        return attention_matrices(eager, list(adapter.sites), inputs, extra)


def attention_rollout(
    model: nn.Module,
    inputs: Inputs,
    additional_forward_args: Optional[object] = None,
    head_fusion: str = "mean",
    residual: float = 0.5,
    token: Optional[str] = None,
) -> Tensor:
    r"""Attention rollout (Abnar & Zuidema, ACL 2020) on the patch grid: a baseline.

    Each block's attention is fused over heads (``A_b``), the residual connection is
    added, ``Â_b = residual * I + (1 - residual) * A_b`` with rows renormalised to one,
    and the blocks are multiplied from the input side, ``R = Â_B … Â_1``. The map is the
    readout token's row of ``R`` over the patch tokens. It is class-agnostic.

    The attention is recomputed from the queries and keys each block computed (q/k-norm
    and any attention mask applied), so timm's fused attention stays on. Implemented
    for the models whose adapter has the all-queries hooks and a readout token (timm
    ``VisionTransformer`` and its subclasses; docs/models.md).

    Args:
        model: A timm ``VisionTransformer`` (eval mode).
        inputs: Images (N, C, H, W), or a tuple whose first element is the images.
        additional_forward_args: Extra positional arguments for the model.
        head_fusion: ``"mean"`` (Abnar & Zuidema), ``"max"`` or ``"min"`` over heads.
        residual: Weight of the identity for the residual connection (0.5 in the paper).
        token: Readout token, ``"cls"`` (default) or ``"dist"`` for a distilled DeiT.

    Returns:
        Maps (N, 1, rows, cols), non-negative, float32 (float64 for float64 models).

    Raises:
        UnsupportedModelError: for a model without a readout token or without one
            token-by-token attention per block (Swin's windows).

    Example::

        >>> import timm, torch
        >>> from captum_daam import attention_rollout
        >>> model = timm.create_model("deit_tiny_patch16_224").eval()  # random weights
        >>> attention_rollout(model, torch.randn(2, 3, 224, 224)).shape
        torch.Size([2, 1, 14, 14])
    """
    adapter = get_adapter(model)
    inputs_tuple, grid = check_inputs(inputs, adapter)
    if not adapter.readout_tokens:
        raise UnsupportedModelError(
            f"attention rollout reads the readout token's row; "
            f"{type(adapter.model).__name__} has no readout token"
        )
    row = adapter.readout_token_index(token)
    fusions = {
        "mean": lambda a: a.mean(dim=1),
        "max": lambda a: a.amax(dim=1),
        "min": lambda a: a.amin(dim=1),
    }
    if head_fusion not in fusions:
        raise InvalidInputError(f"head_fusion {head_fusion!r}: choose one of {sorted(fusions)}")
    if not 0.0 <= residual <= 1.0:
        raise InvalidInputError(f"residual must lie in [0, 1], got {residual}")
    extra = _format_additional_forward_args(additional_forward_args) or ()
    matrices = _attention_matrices(model, inputs_tuple, extra)
    rollout: Optional[Tensor] = None
    for attention in matrices:
        fused = fusions[head_fusion](attention)
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        step = residual * eye + (1.0 - residual) * fused
        step = step / step.sum(dim=-1, keepdim=True)
        rollout = step if rollout is None else step @ rollout
    assert rollout is not None
    return patches_on_grid(rollout[:, row], adapter.num_prefix_tokens, grid)[:, None]


__all__ = ["attention_rollout"]
