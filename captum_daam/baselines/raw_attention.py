"""Raw attention: the last block's readout-token attention over the patches, averaged
over heads. A class-agnostic baseline."""

from __future__ import annotations

from typing import Optional

import torch
from captum._utils.common import _format_additional_forward_args
from torch import Tensor, nn

from .._core.capture import record_attention
from .._core.grid import patches_on_grid
from ..adapters import get_adapter
from ._base import Inputs, check_inputs, explanation_pass


def raw_attention(
    model: nn.Module,
    inputs: Inputs,
    additional_forward_args: Optional[object] = None,
    token: Optional[str] = None,
) -> Tensor:
    r"""The last block's attention of the readout token over the patches, mean over heads.

    The attention row is recomputed from the query and keys the last block computed
    (any mask or position bias applied), so fused attention stays on; one forward pass
    without gradients.

    Args:
        model: A Vision Transformer with a readout token, supported by
            :func:`captum_daam.adapters.get_adapter`.
        inputs: Images (N, C, H, W), or a tuple whose first element is the images.
        additional_forward_args: Extra positional arguments for the model.
        token: Readout token, ``"cls"`` (default) or ``"dist"`` for a distilled DeiT.

    Returns:
        Maps (N, 1, rows, cols) on the patch grid, non-negative, float32 (float64 for
        float64 models).

    Raises:
        ValueError: for a model without readout token, or an unknown ``token``.

    Example::

        >>> import timm, torch
        >>> from captum_daam.baselines import raw_attention
        >>> model = timm.create_model("deit_tiny_patch16_224").eval()  # random weights
        >>> raw_attention(model, torch.randn(2, 3, 224, 224)).shape
        torch.Size([2, 1, 14, 14])
    """
    adapter = get_adapter(model)
    inputs_tuple, grid = check_inputs(inputs, adapter)
    row = adapter.readout_token_index(token)
    extra = _format_additional_forward_args(additional_forward_args) or ()
    with explanation_pass(model) as eager, torch.no_grad():
        with record_attention(list(adapter.sites)[-1:], row) as recorder:
            eager(*inputs_tuple, *extra)
    a0, _ = recorder.gather()[0]  # the readout row (N, heads, tokens)
    return patches_on_grid(a0.mean(dim=1), adapter.num_prefix_tokens, grid)[:, None]


__all__ = ["raw_attention"]
