"""Time and peak memory of every evaluation method against a plain forward+backward.

    python benchmarks/speed.py                                   # batch 1 and 32, CPU
    CAPTUM_DAAM_DATA=../shared/data python benchmarks/speed.py   # the real DeiT-Tiny
    python benchmarks/speed.py --batch-sizes 1 4 --repeats 2 --methods daam chefer
    python benchmarks/speed.py --device cuda

The model is DeiT-Tiny: the real weights from ``CAPTUM_DAAM_DATA`` (through
``benchmarks/localization_deit_tiny.py:load_deit_tiny``) when the variable is set, else
a randomly initialised ``deit_tiny_patch16_224`` (speed does not depend on the weights).
Every method of ``captum_daam.evaluation.methods.available_methods()`` explains the
predicted classes of the same random 224x224 batch, each ``(batch, method)`` in its own
subprocess so that peak memory is clean, with the machinery of
``benchmarks/overhead.py``: the median of ``--repeats`` timed runs (by default 3 below
batch 16 and 1 above) after a warm-up call on the first image, and peak memory, in the last timed run, as the
increase of the resident set (CPU; glibc returns freed blocks at
once) or of ``torch.cuda.max_memory_allocated`` (CUDA) over what the process held before
the call. ``forward_backward`` is ``model(x)[range, pred].sum().backward()``, the
reference point of the ratios, measured in the same run.

Costs to expect: ``scorecam`` runs one forward per channel of ``norm1`` (192 for
DeiT-Tiny) per image and holds all masked copies of the batch at once (the grad-cam
package's implementation: about 3.7 GB of inputs at batch 32);
``integrated_gradients`` runs 50 forward+backward passes of the batch.

Output: a Markdown table, ms per image, peak MB, and both as ratios to
``forward_backward``. A method that fails prints its error in the row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from overhead import time_and_peak

REFERENCE = "forward_backward"


def _load_model(device: str):
    import timm

    data = os.environ.get("CAPTUM_DAAM_DATA")
    if data:
        from localization_deit_tiny import load_deit_tiny

        model, source = load_deit_tiny(Path(data)), f"DeiT-Tiny weights from {data}"
    else:
        model = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
        source = "random deit_tiny_patch16_224 (CAPTUM_DAAM_DATA unset)"
    return model.to(device), source


def _child(args: argparse.Namespace) -> None:
    import torch

    from captum_daam.evaluation.methods import make_explainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, source = _load_model(args.device)
    images = torch.randn(args.batch, 3, 224, 224, device=args.device)
    with torch.no_grad():
        predicted = model(images).argmax(1)
    if args.method == REFERENCE:

        def call(x, y):
            model(x).gather(1, y[:, None]).sum().backward()
            model.zero_grad(set_to_none=True)
    else:
        call = make_explainer(args.method, model)
    # Warm-up (one-time initialisation) on the first image only.
    result = time_and_peak(
        lambda: call(images, predicted),
        args.device,
        args.repeats,
        warmup=lambda: call(images[:1], predicted[:1]),
    )
    print(json.dumps({**result, "source": source}))


def _measure(args: argparse.Namespace, batch: int, method: str, repeats: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--batch",
        str(batch),
        "--method",
        method,
        "--device",
        args.device,
        "--repeats",
        str(repeats),
        "--threads",
        str(args.threads),
    ]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
        return {"error": lines[-1][:120]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument(
        "--methods", nargs="+", default=None, help="default: every method of available_methods()"
    )
    parser.add_argument(
        "--repeats",
        nargs="+",
        type=int,
        default=None,
        help="timed calls per measurement, one value for every batch size "
        "or one per --batch-sizes entry (default: 3 below batch 16, "
        "else 1: ScoreCAM at batch 32 takes minutes per call)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.repeats = args.repeats[0]
        _child(args)
        return
    if args.repeats is None:
        args.repeats = [3 if batch < 16 else 1 for batch in args.batch_sizes]
    if len(args.repeats) not in (1, len(args.batch_sizes)):
        parser.error(
            f"--repeats takes one value or one per batch size "
            f"({len(args.batch_sizes)}), got {len(args.repeats)}"
        )
    repeats = dict(
        zip(
            args.batch_sizes,
            args.repeats * len(args.batch_sizes) if len(args.repeats) == 1 else args.repeats,
        )
    )

    from captum_daam.evaluation.methods import METHODS, available_methods

    methods = args.methods or list(available_methods())
    unknown = sorted(set(methods) - set(METHODS) - {REFERENCE})
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    print(f"device={args.device} threads={args.threads} repeats per batch size={repeats}")
    print("| batch | method | ms / image | peak MB | time ratio | memory ratio |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch_sizes:
        base = _measure(args, batch, REFERENCE, repeats[batch])
        if "error" in base:
            print(f"| {batch} | {REFERENCE} | failed: {base['error']} | | | |", flush=True)
            continue
        for method in [REFERENCE] + [m for m in methods if m != REFERENCE]:
            result = base if method == REFERENCE else _measure(args, batch, method, repeats[batch])
            if "error" in result:
                print(f"| {batch} | {method} | failed: {result['error']} | | | |", flush=True)
                continue
            print(
                f"| {batch} | {method} | {result['seconds'] * 1e3 / batch:.1f} | "
                f"{result['peak_bytes'] / 2**20:.1f} | "
                f"{result['seconds'] / base['seconds']:.2f} | "
                f"{result['peak_bytes'] / max(base['peak_bytes'], 1):.2f} |",
                flush=True,
            )
    print(f"\nmodel: {base.get('source', '?')}")


if __name__ == "__main__":
    main()
