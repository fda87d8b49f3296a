"""What timm's class-token models share: the head, the patch embedding, and the way an
attention module becomes a site. Family files keep only what differs."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..errors import InvalidInputError, UnsupportedModelError
from .base import AnyModule, AttentionSite, ModelAdapter, QuerySink, RowSink, TokenLayout

#: ``installer(attn, token_index, sink)``: registers the hooks of one attention module.
Installer = Callable[[Any, int, RowSink], List[RemovableHandle]]
#: ``query_installer(attn, sink)``: the same for the all-queries mode.
QueryInstaller = Callable[[Any, QuerySink], List[RemovableHandle]]


def attention_site(
    name: str,
    attn: AnyModule,
    installer: Installer,
    head_dim: Optional[int] = None,
    z_row: Optional[int] = None,
    query_installer: Optional[QueryInstaller] = None,
) -> AttentionSite:
    """The site of a timm attention module whose projection input is ``Z``."""

    def install(token_index: int, sink: RowSink) -> List[RemovableHandle]:
        return installer(attn, token_index, sink)

    def install_queries(sink: QuerySink) -> List[RemovableHandle]:
        assert query_installer is not None
        return query_installer(attn, sink)

    return AttentionSite(
        name=name,
        module=attn,
        z_module=attn.proj,
        num_heads=attn.num_heads,
        head_dim=attn.head_dim if head_dim is None else head_dim,
        install=install,
        z_row=z_row,
        install_queries=None if query_installer is None else install_queries,
    )


def prefix_layout(num_prefix_tokens: int) -> TokenLayout:
    """The token layout of a plain ViT: prefix tokens, then the patch grid row-major."""

    def layout(relevance: Tensor, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        tokens = relevance[:, 0]
        patches = tokens[:, num_prefix_tokens:]
        if patches.shape[-1] != grid[0] * grid[1]:
            raise RuntimeError(
                f"{tokens.shape[-1]} tokens do not match {num_prefix_tokens} prefix tokens "
                f"and a {grid[0]}x{grid[1]} patch grid; the adapter for this model is wrong"
            )
        return tokens[:, :num_prefix_tokens], patches.reshape(-1, *grid)

    return layout


def check_attention(
    attn: nn.Module, expected: type, name: str, model_name: str, unsupported: str
) -> None:
    """Refuse attention modules other than ``expected``, or ones that normalise or gate
    their output before the projection (the decomposition would no longer sum to the
    projection input)."""
    if type(attn) is not expected:
        raise UnsupportedModelError(
            f"{model_name}: attention {name} is {type(attn).__name__}, not timm's "
            f"{expected.__name__}; {unsupported} (see docs/models.md)"
        )
    norm = getattr(attn, "norm", None)
    if (norm is not None and not isinstance(norm, nn.Identity)) or getattr(
        attn, "gate", None
    ) is not None:
        raise UnsupportedModelError(
            f"{model_name}: attention {name} normalises or gates its output before the "
            "projection (scale_norm / scale_attn_inner / gated), so the class-token "
            "decomposition no longer sums to the projection input; such models are not "
            "supported yet"
        )


def patch_grid(model: AnyModule, image_size: Tuple[int, int]) -> Tuple[int, int]:
    """Patch grid of a timm ``PatchEmbed`` for ``image_size``: any size for
    ``dynamic_img_size=True`` models, else the size the model was built for."""
    patch_embed = model.patch_embed
    if getattr(model, "dynamic_img_size", False):
        rows, cols = patch_embed.dynamic_feat_size(image_size)
        if rows < 1 or cols < 1:
            raise InvalidInputError(
                f"inputs of size {tuple(image_size)} are smaller than one patch "
                f"{tuple(patch_embed.patch_size)}"
            )
        return int(rows), int(cols)
    if tuple(image_size) != tuple(patch_embed.img_size):
        dynamic = hasattr(model, "dynamic_img_size")
        raise InvalidInputError(
            f"{type(model).__name__} was built for {tuple(patch_embed.img_size)} inputs, "
            f"got {tuple(image_size)}; resize the images"
            + (", or create the model with dynamic_img_size=True" if dynamic else "")
        )
    rows, cols = (int(g) for g in patch_embed.grid_size)
    return rows, cols


def architecture_name(model: nn.Module) -> Optional[str]:
    """The name a timm model carries in its ``pretrained_cfg``, or ``None``."""
    config = getattr(model, "pretrained_cfg", None)
    if isinstance(config, dict) and config.get("architecture"):
        return str(config["architecture"])
    return None


#: Where each family's state dict keeps its classifier weight (rows: classes).
CLASSIFIER_WEIGHT_KEYS = ("head.weight", "head.fc.weight")


class TimmClassTokenAdapter(ModelAdapter):
    """A timm model read out from its class token, first among the tokens, through
    ``forward_head``; subclasses fill ``self._sites`` and override what differs."""

    _sites: List[AttentionSite]

    @property
    def sites(self) -> Sequence[AttentionSite]:
        return self._sites

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 1))

    @property
    def readout_tokens(self) -> Dict[str, int]:
        return {"cls": 0}

    @property
    def in_chans(self) -> Optional[int]:
        proj = getattr(self.model.patch_embed, "proj", None)
        return getattr(proj, "in_channels", None)

    @property
    def input_dtype(self) -> Optional[torch.dtype]:
        """timm models do not convert their inputs: the dtype of their parameters."""
        for param in self.model.parameters():
            if param.is_floating_point():
                return param.dtype
        return None

    @property
    def num_classes(self) -> Optional[int]:
        return int(self.model.num_classes)

    @property
    def classifier(self) -> Optional[nn.Module]:
        head = self.model.get_classifier()
        return (
            head if isinstance(head, nn.Module) and any(True for _ in head.parameters()) else None
        )

    @property
    def gradcam_layer(self) -> nn.Module:
        blocks = getattr(self.model, "blocks", None)
        norm1 = getattr(blocks[-1], "norm1", None) if blocks is not None and len(blocks) else None
        if not isinstance(norm1, nn.Module):
            return super().gradcam_layer
        return norm1

    def features(self, model: AnyModule, *inputs: Any) -> Tensor:
        """The pooled pre-logits class-token embedding (the head, if any, is not run):
        ``model.forward_head(model.forward_features(x, ...), pre_logits=True)``."""
        return model.forward_head(model.forward_features(*inputs), pre_logits=True)

    def grid_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        return patch_grid(self.model, image_size)
