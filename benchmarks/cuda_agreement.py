"""DAAM on CUDA against DAAM on the CPU in float64, for every supported family.

    python benchmarks/cuda_agreement.py               # needs a CUDA device
    python benchmarks/cuda_agreement.py --json out.json

For each model (random timm weights, seeded; the same weights on both devices) and each
decomposition the model supports, the flow of the same batch and targets is computed
three times: on the CPU in float64 (the reference), on CUDA in float32 and on CUDA in
bfloat16. Reported per row:

* ``max_rel_f32``: max |D_b(cuda, f32) - D_b(cpu, f64)| over every block map and image,
  divided by the largest reference value (0 would be exact);
* ``spearman_bf16``: mean over images of the rank correlation of the final map in
  bfloat16 with the reference (maps are returned in float32 whatever the model's dtype);
* ``unchanged``: the model's hooks, training flags, ``requires_grad`` flags and which
  parameters hold a ``.grad`` are the same after the three calls as before;
* ``ms_f32``: median wall time of one CUDA float32 flow (after a warm-up).

Nothing here is a test: the suite runs on machines without a GPU. The figures go into
docs/benchmarks.md with the commit they were measured at.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Dict, List, Optional, Tuple

import torch

#: (timm name, create_model overrides, image size, queries modes).
MODELS: Tuple[Tuple[str, Dict[str, Any], int, Tuple[Optional[str], ...]], ...] = (
    ("deit_tiny_patch16_224", {}, 224, ("readout", "all")),
    ("deit_tiny_distilled_patch16_224", {}, 224, ("readout",)),
    (
        "vit_small_patch14_reg4_dinov2",
        {"img_size": 224, "num_classes": 1000},
        224,
        ("readout", "all"),
    ),
    ("vit_small_patch16_224", {"global_pool": "avg", "class_token": False}, 224, (None,)),
    ("cait_xxs24_224", {}, 224, ("readout",)),
    ("xcit_nano_12_p16_224", {}, 224, ("readout",)),
    ("beit_base_patch16_224", {"global_pool": "token"}, 224, ("readout",)),
    ("eva02_tiny_patch14_224", {"global_pool": "token", "num_classes": 1000}, 224, ("readout",)),
    ("swin_tiny_patch4_window7_224", {}, 224, (None,)),
)


def _state(model: torch.nn.Module) -> List[Any]:
    hooks = [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), m.training)
        for m in model.modules()
    ]
    return [hooks, [(p.requires_grad, p.grad is None) for p in model.parameters()]]


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.flatten().argsort().argsort().double()
    rb = b.flatten().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def _row(
    name: str,
    overrides: Dict[str, Any],
    size: int,
    queries: Optional[str],
    batch: int,
    repeats: int,
) -> Dict[str, Any]:
    import timm

    from captum_daam import DAAM

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **overrides).eval()
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(images).argmax(1)
    before = _state(model)

    reference = (
        DAAM(model.double(), queries=queries)
        .attribute(images.double(), target=targets, return_flow=True)
        .accumulated
    )
    model.float().cuda()
    daam = DAAM(model, queries=queries)
    x = images.cuda()
    flow = daam.attribute(x, target=targets.cuda(), return_flow=True)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        daam.attribute(x, target=targets.cuda(), return_flow=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    got = flow.accumulated.double().cpu()
    scale = float(reference.abs().max())
    model.bfloat16()
    half = DAAM(model, queries=queries).attribute(
        x.bfloat16(), target=targets.cuda(), return_flow=True
    )
    model.float().cpu()
    after = _state(model)
    final_ref = reference[:, -1]
    return {
        "model": name,
        "queries": daam.queries,
        "blocks": int(reference.shape[1]),
        "grid": list(reference.shape[-2:]),
        "max_rel_f32": float((got - reference).abs().max()) / max(scale, 1e-300),
        "spearman_bf16": statistics.mean(
            _spearman(half.final[i, 0].double().cpu(), final_ref[i]) for i in range(batch)
        ),
        "bf16_dtype_out": str(half.accumulated.dtype),
        "unchanged": before == after,
        "ms_f32": 1000 * statistics.median(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark compares CUDA with the CPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, batch {args.batch}")
    print(
        "| model | queries | blocks | max rel. error f32 | Spearman bf16 | model unchanged | ms f32 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, overrides, size, modes in MODELS:
        for queries in modes:
            try:
                row = _row(name, overrides, size, queries, args.batch, args.repeats)
            except Exception as error:  # report and go on: one family must not hide the rest
                row = {
                    "model": name,
                    "queries": queries,
                    "error": f"{type(error).__name__}: {error}",
                }
                print(f"| {name} | {queries} | error: {row['error'][:200]} |")
            else:
                print(
                    f"| {name} | {row['queries']} | {row['blocks']} | {row['max_rel_f32']:.2e} | "
                    f"{row['spearman_bf16']:.3f} | {row['unchanged']} | {row['ms_f32']:.1f} |"
                )
            rows.append(row)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
