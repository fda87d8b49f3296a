"""Hugging Face ``transformers`` ViT, DeiT and DINOv2 (optional dependency).

Covers ``ViTForImageClassification`` / ``ViTModel``, ``DeiTForImageClassification``,
``DeiTForImageClassificationWithTeacher`` (distillation token) / ``DeiTModel``,
``Dinov2ForImageClassification`` / ``Dinov2Model`` and their ``*WithRegisters``
counterparts, with any ``attn_implementation`` whose mask is a tensor or ``None``
(``"eager"``, ``"sdpa"``; the readout row never depends on the kernel). Nothing here
imports ``transformers``: models are recognised by the name and module of their classes,
so :meth:`HuggingFaceViTAdapter.matches` is cheap and safe when it is not installed.

Where things live (transformers 5; 4.x in brackets)::

    attn = layer.attention                          # the site; users pass this module
    q = attn.q_proj(x)   [attn.attention.query(x)]  # separate Linear layers, head-major
    k = attn.k_proj(x)   [attn.attention.key(x)]
    v = attn.v_proj(x)   [attn.attention.value(x)]
    z = softmax(attn.scaling * q k^T + attention_mask) v     # eager, SDPA, ...
    out = attn.o_proj(z) [attn.output.dense(z)]     # Z is the input of o_proj [dense]

Hooks read the outputs of the three projections (in whatever order the model calls
them: 4.x computes k, v, then q), so nothing is recomputed, and the mask the attention
module was called with (transformers 5's 4-D ``attention_mask``, additive or boolean).
transformers 4.x's ``head_mask`` (a multiplicative per-head mask after the softmax) is
refused at run time.

Tokens are ``[cls, (dist), (registers...), patches...]``. Hugging Face models return a
``ModelOutput``: :meth:`HuggingFaceViTAdapter.logits` picks ``output.logits`` (the
averaged cls / distillation logits for ``DeiTForImageClassificationWithTeacher``).
``Dinov2*ForImageClassification`` classifies ``cat(cls, mean(patches))``: DAAM explains
the part of the score that flows through the class token (see docs/models.md).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._core.decomposition import compute_dtype, readout_attention_row, readout_row_bias
from ..errors import InvalidInputError, UnsupportedModelError
from .base import AnyModule, AttentionSite, ModelAdapter, RowSink

#: Supported classes by name, and the kind of embedding they use.
_CLASSIFIERS = {
    "ViTForImageClassification": "vit",
    "DeiTForImageClassification": "deit",
    "DeiTForImageClassificationWithTeacher": "deit_teacher",
    "Dinov2ForImageClassification": "dinov2",
    "Dinov2WithRegistersForImageClassification": "dinov2",
}
_BACKBONES = {
    "ViTModel": "vit",
    "DeiTModel": "deit",
    "Dinov2Model": "dinov2",
    "Dinov2WithRegistersModel": "dinov2",
}


def _transformers_class(model: nn.Module) -> Optional[str]:
    """The name of the supported ``transformers`` class ``model`` is (or derives from)."""
    for klass in type(model).__mro__:
        if klass.__module__.startswith("transformers.") and (
            klass.__name__ in _CLASSIFIERS or klass.__name__ in _BACKBONES
        ):
            return klass.__name__
    return None


class _Parts:
    """The projections of one attention module, for transformers 5 or 4.x."""

    def __init__(self, name: str, attn: AnyModule, model_name: str) -> None:
        if all(
            isinstance(getattr(attn, n, None), nn.Linear)
            for n in ("q_proj", "k_proj", "v_proj", "o_proj")
        ):
            self.q, self.k, self.v, self.o = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
            self.heads = int(attn.num_attention_heads)
            self.head_dim = int(attn.head_dim)
            self.scale = float(attn.scaling)
            self.mask_arg, self.mask_is_head_mask = "attention_mask", False
        elif (
            isinstance(getattr(attn, "attention", None), nn.Module)
            and all(
                isinstance(getattr(attn.attention, n, None), nn.Linear)
                for n in ("query", "key", "value")
            )
            and isinstance(getattr(getattr(attn, "output", None), "dense", None), nn.Linear)
        ):
            self_attn = attn.attention
            self.q, self.k, self.v = self_attn.query, self_attn.key, self_attn.value
            self.o = attn.output.dense
            self.heads = int(self_attn.num_attention_heads)
            self.head_dim = int(self_attn.attention_head_size)
            self.scale = float(getattr(self_attn, "scaling", self.head_dim**-0.5))
            self.mask_arg, self.mask_is_head_mask = "head_mask", True
        else:
            raise UnsupportedModelError(
                f"{model_name}: attention module {name} ({type(attn).__name__}) has neither "
                "q_proj/k_proj/v_proj/o_proj (transformers 5) nor attention.query/key/value "
                "and output.dense (transformers 4); this transformers version is not "
                "supported (see docs/models.md)"
            )
        if self.q.out_features != self.heads * self.head_dim:
            raise UnsupportedModelError(
                f"{model_name}: attention {name} has pruned or unusual heads "
                f"({self.q.out_features} channels for {self.heads} heads of {self.head_dim})"
            )


def _install_hooks(
    attn: AnyModule, parts: _Parts, token_index: int, sink: RowSink
) -> List[RemovableHandle]:
    # Per device (one replica each under DataParallel): the call's mask and the q / k / v
    # outputs seen so far; the row is formed when the last of the three arrives.
    masks: Dict[torch.device, Optional[Tensor]] = {}
    seen: Dict[torch.device, Dict[str, Tensor]] = {}
    heads = parts.heads

    def remember_call(module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
        x = args[0] if args else kwargs["hidden_states"]
        mask = kwargs.get(parts.mask_arg, args[1] if len(args) > 1 else None)
        if mask is not None:
            if parts.mask_is_head_mask:
                raise InvalidInputError(
                    "DAAM does not support head_mask (a multiplicative mask after the "
                    "softmax); run the model without it"
                )
            if not isinstance(mask, Tensor):
                raise UnsupportedModelError(
                    f"the attention mask is a {type(mask).__name__}, not a tensor; use "
                    "attn_implementation='eager' or 'sdpa'"
                )
            mask = mask.detach()
        masks[x.device] = mask

    def record(part: str):
        def hook(module: nn.Module, args: Tuple[Any, ...], out: Tensor) -> None:
            device = out.device
            got = seen.setdefault(device, {})
            # Only the readout token's query is kept.
            got[part] = out.detach()[:, token_index] if part == "q" else out.detach()
            if len(got) == 3:
                del seen[device]
                readout_row(masks.pop(device, None), got["q"], got["k"], got["v"])

        return hook

    def readout_row(mask: Optional[Tensor], q: Tensor, k: Tensor, v: Tensor) -> None:
        with torch.no_grad():
            batch, tokens, _ = k.shape
            q_row = q.reshape(batch, heads, -1)
            k = k.reshape(batch, tokens, heads, -1).transpose(1, 2)
            v = v.reshape(batch, tokens, heads, -1).transpose(1, 2)
            bias = readout_row_bias(
                mask, False, token_index, tokens, compute_dtype(v.dtype), v.device
            )
            a0 = readout_attention_row(q_row, k, parts.scale, bias)
        sink(a0, v)

    return [
        attn.register_forward_pre_hook(remember_call, with_kwargs=True),
        parts.q.register_forward_hook(record("q")),
        parts.k.register_forward_hook(record("k")),
        parts.v.register_forward_hook(record("v")),
    ]


def _site(name: str, attn: AnyModule, model_name: str) -> AttentionSite:
    parts = _Parts(name, attn, model_name)

    def install(token_index: int, sink: RowSink) -> List[RemovableHandle]:
        return _install_hooks(attn, parts, token_index, sink)

    return AttentionSite(
        name=name,
        module=attn,
        z_module=parts.o,
        num_heads=parts.heads,
        head_dim=parts.head_dim,
        install=install,
    )


class HuggingFaceViTAdapter(ModelAdapter):
    """Hugging Face ``transformers`` ViT, DeiT (distilled too) and DINOv2 (registers too)."""

    family = "Hugging Face ViT"
    description = (
        "Hugging Face transformers ViTForImageClassification, DeiTForImageClassification"
        "(WithTeacher), Dinov2(WithRegisters)ForImageClassification and the headless "
        "ViTModel, DeiTModel, Dinov2(WithRegisters)Model, eager or sdpa attention"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return _transformers_class(model) is not None

    def __init__(self, model: AnyModule) -> None:
        super().__init__(model)
        class_name = _transformers_class(model)
        assert class_name is not None
        self._kind = _CLASSIFIERS.get(class_name) or _BACKBONES[class_name]
        self._headless = class_name in _BACKBONES
        model_name = type(model).__name__
        config = model.config
        base = model.base_model
        layers = getattr(base, "layers", None)
        if layers is None:
            layers = base.encoder.layer
        names = {id(module): name for name, module in model.named_modules()}
        self._sites = [
            _site(names[id(layer.attention)], layer.attention, model_name) for layer in layers
        ]
        registers = int(getattr(config, "num_register_tokens", 0) or 0)
        self._prefix = 1 + (1 if self._kind.startswith("deit") else 0) + registers
        self._tokens = {"cls": 0}
        if self._kind == "deit_teacher":
            self._tokens["dist"] = 1
        patch = config.patch_size
        self._patch = (patch, patch) if isinstance(patch, int) else tuple(patch)

    @property
    def sites(self) -> Sequence[AttentionSite]:
        return self._sites

    @property
    def num_prefix_tokens(self) -> int:
        return self._prefix

    @property
    def readout_tokens(self) -> Dict[str, int]:
        return dict(self._tokens)

    @property
    def in_chans(self) -> Optional[int]:
        return int(self.model.config.num_channels)

    @property
    def num_classes(self) -> Optional[int]:
        return 0 if self._headless else int(self.model.config.num_labels)

    @property
    def classifier(self) -> Optional[nn.Module]:
        head = getattr(self.model, "classifier", None)
        return (
            head if isinstance(head, nn.Module) and any(True for _ in head.parameters()) else None
        )

    def logits(self, output: object) -> object:
        """``output.logits`` of an ``ImageClassifierOutput`` (or the first element of the
        tuple ``return_dict=False`` gives); anything else unchanged."""
        logits = getattr(output, "logits", None)
        if isinstance(logits, Tensor):
            return logits
        if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
            return output[0]
        return output

    def features(self, model: AnyModule, *inputs: Any) -> Tensor:
        """The class token of the base model's final layer norm (``last_hidden_state[:,
        0]``; the classifier head, and ViT's tanh pooler, are not run)."""
        base = model.base_model
        if base is not model and len(inputs) > 1:
            raise InvalidInputError(
                "the feature embedding of a Hugging Face classifier runs its base model "
                "on the images alone; pass feature_fn=... to use additional arguments"
            )
        return base(*inputs).last_hidden_state[:, 0]

    def grid_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        rows, cols = image_size[0] // self._patch[0], image_size[1] // self._patch[1]
        if rows < 1 or cols < 1:
            raise InvalidInputError(
                f"inputs of size {tuple(image_size)} are smaller than one patch {self._patch}"
            )
        # ViT / DeiT take sizes other than config.image_size only with
        # interpolate_pos_encoding=True (a forward argument), which the model checks
        # itself; DINOv2 always interpolates. The grid is the same either way.
        return int(rows), int(cols)
