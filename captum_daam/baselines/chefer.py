"""Gradient-weighted attention rollout (Chefer, Gur & Wolf, ICCV 2021, "Generic
Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
Transformers"): the attention of every block weighted by its gradient, rolled out."""

from __future__ import annotations

from typing import Optional

import torch
from captum._utils.common import _format_additional_forward_args
from captum._utils.typing import TargetType
from torch import Tensor, nn

from .._core.attention_gradients import attention_and_gradients
from .._core.grid import patches_on_grid
from .._core.targets import logits_tensor
from ..adapters import get_adapter
from ..errors import UnsupportedModelError
from ._base import Inputs, check_inputs, explanation_pass, require_gradients, resolve_targets


def gradient_weighted_rollout(
    model: nn.Module,
    inputs: Inputs,
    target: TargetType = None,
    additional_forward_args: Optional[object] = None,
    token: Optional[str] = None,
) -> Tensor:
    r"""Chefer et al.'s gradient-weighted rollout on the patch grid: a baseline.

    ``R = I``; for every block ``b``, input side first, ``Ā_b = mean_h ReLU(∇A_b ⊙ A_b)``
    with ``∇A_b = d score / d A_b`` and ``R = R + Ā_b R``. The map is the readout token's
    row of ``R`` over the patch tokens.

    ``A_b`` and ``∇A_b`` come from one forward and one backward pass for the whole batch
    (DAAM's pass, :mod:`captum_daam._core.attention_gradients`): the attention is
    recomputed from the recorded queries and keys, and its gradient from the gradient at
    the attention output, so timm's fused attention stays on and the model is not
    modified. Gradients are enabled inside (``torch.no_grad()`` is fine).

    Args:
        model: A Vision Transformer classifier with a readout token and the all-queries
            hooks (timm ``VisionTransformer`` and its subclasses; docs/models.md), in
            eval mode.
        inputs: Images (N, C, H, W), or a tuple whose first element is the images.
        target: Classes to explain: an int, a list of N ints or an integer tensor;
            ``None`` (default) explains each image's predicted class (one extra forward
            pass without gradients).
        additional_forward_args: Extra positional arguments for the model.
        token: Readout token, ``"cls"`` (default) or ``"dist"`` for a distilled DeiT.

    Returns:
        Maps (N, 1, rows, cols), non-negative, detached, float32 (float64 for float64
        models).

    Raises:
        UnsupportedModelError: for a model without every block's token-by-token
            attention (no all-queries hooks, Swin's windows).
        ValueError: for a model without readout token, an unknown ``token``, or
            targets outside the model's classes.

    Example::

        >>> import timm, torch
        >>> from captum_daam.baselines import gradient_weighted_rollout
        >>> model = timm.create_model("deit_tiny_patch16_224").eval()
        >>> maps = gradient_weighted_rollout(model, torch.randn(2, 3, 224, 224), [3, 7])
        >>> maps.shape
        torch.Size([2, 1, 14, 14])
    """
    require_gradients("gradient-weighted rollout")
    adapter = get_adapter(model)
    inputs_tuple, grid = check_inputs(inputs, adapter)
    row = adapter.readout_token_index(token)
    refusal = adapter.token_attention_refusal
    if refusal is not None:
        raise UnsupportedModelError(
            f"gradient-weighted rollout needs every block's attention matrix: {refusal}"
        )
    extra = _format_additional_forward_args(additional_forward_args)

    def score(output: object) -> Tensor:
        logits = logits_tensor(adapter.logits(output))
        return logits.gather(1, targets[:, None]).squeeze(1)

    with explanation_pass(model) as eager, torch.enable_grad():
        targets = resolve_targets(eager, adapter, inputs_tuple, target, extra or ())
        pairs = attention_and_gradients(eager, list(adapter.sites), inputs_tuple, score, extra)
    relevance: Optional[Tensor] = None
    for attention, gradient in pairs:
        fused = (gradient * attention).clamp(min=0).mean(dim=1)
        if relevance is None:
            relevance = torch.eye(
                fused.shape[-1], dtype=fused.dtype, device=fused.device
            ).expand_as(fused)
        relevance = relevance + torch.matmul(fused, relevance)
    assert relevance is not None
    maps = patches_on_grid(relevance[:, row], adapter.num_prefix_tokens, grid)[:, None]
    return maps.detach()


__all__ = ["gradient_weighted_rollout"]
