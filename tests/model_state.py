"""A snapshot of everything about a model that an explainer must leave as it was."""

from typing import Dict

import torch
from torch import nn

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


def snapshot(model: nn.Module) -> Dict[str, object]:
    state = {}
    for name, module in model.named_modules():
        state[f"{name}.training"] = module.training
        for attr in ("fused_attn", "distilled_training", "grad_checkpointing"):
            if hasattr(module, attr):
                state[f"{name}.{attr}"] = getattr(module, attr)
        for hooks in _HOOK_DICTS:
            state[f"{name}.{hooks}"] = tuple(getattr(module, hooks, {}).keys())
    for name, param in model.named_parameters():
        state[f"{name}.requires_grad"] = param.requires_grad
        state[f"{name}.grad"] = None if param.grad is None else param.grad.clone()
    for name, tensor in model.state_dict().items():
        state[f"{name}.value"] = tensor.clone()
    state["global_forward_hooks"] = tuple(nn.modules.module._global_forward_hooks.keys())
    return state


def assert_unchanged(model: nn.Module, before: Dict[str, object]) -> None:
    after = snapshot(model)
    assert after.keys() == before.keys()
    for key, value in before.items():
        other = after[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), f"{key} changed"
        else:
            assert value == other, f"{key} changed: {value!r} -> {other!r}"
