"""The result of DAAM: per-block and accumulated maps, as plain tensors."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Optional, Sequence, Tuple, TypeVar, Union

import torch
from torch import Tensor

from .errors import InvalidInputError

FlowT = TypeVar("FlowT", bound="DAAMFlow")


@dataclass
class DAAMFlow:
    """The attention flow of a batch: how the map builds up block by block.

    Attributes:
        block_maps: ``L_b``, (N, blocks, rows, cols): each block's own map, >= 0.
        accumulated: ``D_b = L_1 + ... + L_b``, (N, blocks, rows, cols); the last block is
            the final map returned by ``attribute``.
        targets: Classes explained, (N,) long: the predicted class where ``target=None``.
        scores: The explained score per example (the target logit), (N,).
        token_relevance: Signed relevance of every token before the ReLU, (N, blocks,
            tokens), prefix tokens first, then the patch grid row-major;
            ``token_relevance[:, b].sum(-1)`` equals the weighted readout row of block
            b's attention output (completeness; in the all-queries mode the weighted sum
            over all rows, less what padding tokens of a Swin window take).
        layer_names: Qualified names of the explained attention modules, input side first.
        num_prefix_tokens: Tokens before the patches (class, distillation, registers).
        token_index: Index of the readout token explained (0: class, 1: distillation);
            ``None`` in the all-queries mode.
        input_size: (height, width) of the inputs, for upsampling.
        queries: ``"readout"`` (the readout token's row, the paper's DAAM) or ``"all"``
            (every query row, for models pooled over tokens); see docs/method.md.
    """

    block_maps: Tensor
    accumulated: Tensor
    targets: Tensor
    scores: Tensor
    token_relevance: Tensor
    layer_names: Tuple[str, ...]
    num_prefix_tokens: int
    token_index: Optional[int]
    input_size: Tuple[int, int]
    queries: str

    @property
    def final(self) -> Tensor:
        """The final map ``D_B``, (N, 1, rows, cols), unnormalised."""
        return self.accumulated[:, -1:]

    @property
    def grid_size(self) -> Tuple[int, int]:
        """The patch grid (rows, cols)."""
        return int(self.block_maps.shape[-2]), int(self.block_maps.shape[-1])

    @property
    def num_blocks(self) -> int:
        return int(self.block_maps.shape[1])

    def contributions(self) -> Tensor:
        """Share of the final map's mass contributed by each block, (N, blocks).

        Rows sum to one (all zeros for an example whose final map is zero).
        """
        mass = self.block_maps.sum(dim=(-2, -1))
        total = mass.sum(dim=1, keepdim=True)
        positive = total > 0
        return torch.where(positive, mass / torch.where(positive, total, 1), 0)

    def _per_example(self) -> Tuple[str, ...]:
        """Names of the tensor fields with one entry per example."""
        count = self.block_maps.shape[0]
        return tuple(
            f.name
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
            and getattr(self, f.name).shape[:1] == (count,)
        )

    def select(self: FlowT, index: Union[int, slice, Sequence[int], Tensor]) -> FlowT:
        """The flow of some examples: ``flow.select(slice(0, 2))``, ``flow.select([3])``."""
        if isinstance(index, int):
            index = [index]
        return replace(self, **{name: getattr(self, name)[index] for name in self._per_example()})

    @classmethod
    def cat(cls, flows: Sequence[FlowT]) -> FlowT:
        """Concatenate the flows of several batches explained with the same layers."""
        first = flows[0]
        if any(f.layer_names != first.layer_names for f in flows):
            raise InvalidInputError("cannot concatenate flows of different layers")
        per_example: Dict[str, Any] = {
            name: torch.cat([getattr(f, name) for f in flows]) for name in first._per_example()
        }
        return replace(first, **per_example)

    def upsampled(
        self,
        which: str = "accumulated",
        size: Optional[Tuple[int, int]] = None,
        mode: str = "bilinear",
    ) -> Tensor:
        """``accumulated`` or ``block_maps`` upsampled to ``size`` (default: the input)."""
        from .display import upsample

        maps = {"accumulated": self.accumulated, "block_maps": self.block_maps}[which]
        return upsample(maps, size or self.input_size, mode=mode)
