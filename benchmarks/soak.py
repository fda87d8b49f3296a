"""Soak: thousands of consecutive ``attribute`` calls on CPU, memory flat, nothing left.

    python benchmarks/soak.py                    # 3000 calls, a record every 100
    python benchmarks/soak.py --calls 500 --every 50

One tiny random timm ViT (``vit_tiny_patch16_224`` with 32 x 32 images, 8 x 8 patches,
3 blocks of width 48), float32, CPU, one thread. Call ``i`` varies, in cycles of
different lengths so that every combination occurs: the batch size (1-4), the target
(``None``, an int, a list, a tensor), the explained layers (all, the last, a subset of
two), the query mode (``readout``, ``all``), ``return_flow``, and every seventh call a
``SelfSupervisedDAAM`` with a small memory bank. Each explainer is built for its call
and dropped, as a service would do.

Every ``--every`` calls, after ``gc.collect()`` and glibc's ``malloc_trim(0)``:

* ``rss_mb``: the resident set (``VmRSS`` of ``/proc/self/status``);
* ``hooks``: hooks on the model's modules (every hook dictionary) plus global module
  hooks: must be 0 between calls;
* ``grads``: parameters holding a ``.grad``: must be 0 (DAAM takes gradients with
  ``torch.autograd.grad``);
* ``locks``: entries in the model-lock registry (weak references: one per locked
  module that is alive);
* ``caches``: total length of every module-level dict / list / set and ``lru_cache``
  in the loaded ``captum_daam`` modules (the constant tables count too: what matters is
  that the figure does not grow).

The verdict compares the resident set at call ``--baseline`` (500: after the allocator
and torch's caches warmed up) with the end, in MB and per call. Timings are printed only
to show progress: other jobs share the machine, and speed is not what this measures.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import re
import sys
import time
from typing import Dict, List

import timm
import torch
from torch import nn

import captum_daam
from captum_daam import DAAM, MemoryBank, SelfSupervisedDAAM
from captum_daam._core.capture import lock_registry_size

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def rss_mb() -> float:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass
    with open("/proc/self/status") as handle:
        return int(re.search(r"VmRSS:\s+(\d+) kB", handle.read()).group(1)) / 1024


def hook_count(model: nn.Module) -> int:
    local = sum(len(getattr(m, name, {})) for m in model.modules() for name in _HOOK_DICTS)
    glob = nn.modules.module
    return (
        local
        + len(glob._global_forward_hooks)
        + len(glob._global_forward_pre_hooks)
        + len(glob._global_backward_hooks)
    )


def cache_sizes() -> Dict[str, int]:
    """Length of every module-level container and lru_cache in captum_daam."""
    sizes = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("captum_daam"):
            continue
        for attr, value in vars(module).items():
            key = f"{name}.{attr}"
            if isinstance(value, (dict, list, set)) and not attr.startswith("__"):
                sizes[key] = len(value)
            elif hasattr(value, "cache_info"):
                sizes[key] = value.cache_info().currsize
    sizes["_core.capture._LOCKS"] = lock_registry_size()
    return sizes


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=48,
        depth=3,
        num_heads=3,
        num_classes=10,
    ).eval()


def one_call(i: int, model: nn.Module, bank: MemoryBank) -> None:
    batch = 1 + i % 4
    images = torch.randn(batch, 3, 32, 32)
    target = [None, 3, [j % 10 for j in range(batch)], torch.tensor([7])][(i // 4) % 4]
    layers = [None, model.blocks[-1].attn, [model.blocks[0].attn, model.blocks[2].attn]]
    layer = layers[i % 3]
    queries = ("readout", "all")[(i // 3) % 2]
    return_flow = i % 5 == 0
    if i % 7 == 0:
        explainer = SelfSupervisedDAAM(model, bank, k=3, layer=layer, queries=queries)
        target = None if not isinstance(target, int) else target % 3
    else:
        explainer = DAAM(model, layer=layer, queries=queries)
    out = explainer.attribute(images, target=target, return_flow=return_flow)
    final = out.final if return_flow else out
    assert final.shape == (batch, 1, 4, 4) and bool(torch.isfinite(final).all())


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--baseline", type=int, default=500)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = tiny_vit()
    bank = MemoryBank(torch.randn(30, 48), torch.arange(30) % 3)
    rows = []
    start = time.time()
    print(f"captum_daam {captum_daam.__version__}, torch {torch.__version__}, {args.calls} calls")
    print("| calls | rss_mb | hooks | grads | locks | caches | seconds |")
    print("|---|---|---|---|---|---|---|")
    for i in range(args.calls + 1):
        if i % args.every == 0:
            sizes = cache_sizes()
            grads = sum(p.grad is not None for p in model.parameters())
            row = dict(
                calls=i,
                rss=rss_mb(),
                hooks=hook_count(model),
                grads=grads,
                locks=sizes["_core.capture._LOCKS"],
                caches=sum(sizes.values()),
                sizes=sizes,
            )
            rows.append(row)
            print(
                f"| {i} | {row['rss']:.1f} | {row['hooks']} | {grads} | {row['locks']} "
                f"| {row['caches']} | {time.time() - start:.0f} |",
                flush=True,
            )
        if i < args.calls:
            one_call(i, model, bank)
    base = next((r for r in rows if r["calls"] >= args.baseline), rows[0])
    end = rows[-1]
    growth = end["rss"] - base["rss"]
    per_call_kb = growth * 1024 / max(1, end["calls"] - base["calls"])
    grown = {
        k: (base["sizes"].get(k), v) for k, v in end["sizes"].items() if v != base["sizes"].get(k)
    }
    clean = all(r["hooks"] == 0 and r["grads"] == 0 for r in rows)
    print(
        f"\nRSS at call {base['calls']}: {base['rss']:.1f} MB; at call {end['calls']}: "
        f"{end['rss']:.1f} MB; growth {growth:+.1f} MB ({per_call_kb:+.2f} kB per call); "
        f"peak {max(r['rss'] for r in rows):.1f} MB"
    )
    print(
        f"hooks and .grad between calls: {'always 0' if clean else 'LEFT BEHIND'}; "
        f"caches that changed after call {base['calls']}: {grown or 'none'}"
    )
    flat = abs(per_call_kb) < 1.0 and clean and not grown
    print(f"verdict: {'FLAT' if flat else 'GROWING'} (threshold: 1 kB per call)")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
