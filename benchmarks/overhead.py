"""Time and peak memory of DAAM against a plain forward+backward, and against peers.

    python benchmarks/overhead.py                      # CPU, deit_tiny/deit_small, batch 1 and 8
    python benchmarks/overhead.py --device cuda        # on a GPU

Every (model, batch, method) runs in its own subprocess so that peak memory is clean.
Methods, all explaining the predicted class of the same batch with the same weights:

* ``forward_backward``: ``model(x)[range, pred].sum().backward()``, the reference point;
* ``daam``: ``DAAM(model).attribute(x, return_flow=True)``, every block;
* ``layer_gradcam``: Captum ``LayerGradCam`` on the last block (a peer with one pass);
* ``saliency``: Captum ``Saliency`` (input gradients, a peer with one pass).

Time is the median of ``--repeats`` runs after a warm-up. Peak memory is the increase of
the process's resident set (CPU; glibc is told to return freed blocks at once) or of
``torch.cuda.max_memory_allocated`` (CUDA) over the memory held before the call.
Weights are random (timm's init): speed does not depend on them. Output: a Markdown table
with ratios to ``forward_backward`` in the same run.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import subprocess
import sys
import time

METHODS = ("forward_backward", "daam", "layer_gradcam", "saliency")


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as handle:
        return int(re.search(rf"{key}:\s+(\d+) kB", handle.read()).group(1)) * 1024


def time_and_peak(run, device: str, repeats: int, warmup=None) -> dict:
    """Median seconds of ``repeats`` calls of ``run`` after a warm-up call of ``warmup``
    (default ``run``), and the peak memory of the last timed call above what the process
    held before it (CUDA allocator peak, or the resident-set high-water mark on CPU).
    Measuring memory in a timed call rather than an extra one, and warming up on a
    smaller input, matter for the slow methods (ScoreCAM at batch 32 takes minutes per
    call)."""
    import torch

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    (warmup or run)()
    sync()
    times = []
    peak = 0
    for repeat in range(repeats):
        last = repeat == repeats - 1
        if last and device.startswith("cuda"):
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        elif last:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            base = _status_bytes("VmRSS")
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # reset the peak resident set size
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
        if last:
            peak = (
                torch.cuda.max_memory_allocated()
                if device.startswith("cuda")
                else _status_bytes("VmHWM")
            ) - base
    return {"seconds": statistics.median(times), "peak_bytes": peak}


def _measure(model_name: str, batch: int, method: str, device: str, repeats: int) -> dict:
    import timm
    import torch
    from captum.attr import LayerGradCam, Saliency

    from captum_daam import DAAM

    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False).eval().to(device)
    images = torch.randn(batch, 3, 224, 224, device=device)
    with torch.no_grad():
        predicted = model(images).argmax(1)

    if method == "forward_backward":

        def run():
            model(images).gather(1, predicted[:, None]).sum().backward()
            model.zero_grad(set_to_none=True)
    elif method == "daam":
        daam = DAAM(model)

        def run():
            daam.attribute(images, target=predicted, return_flow=True)
    elif method == "layer_gradcam":
        gradcam = LayerGradCam(model, model.blocks[-1].norm1)

        def run():
            gradcam.attribute(images, target=predicted)
    else:
        saliency = Saliency(model)

        def run():
            saliency.attribute(images, target=predicted)

    return time_and_peak(run, device, repeats)


def _child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = _measure(args.model, args.batch, args.method, args.device, args.repeats)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description="DAAM overhead benchmark")
    parser.add_argument(
        "--models", nargs="+", default=["deit_tiny_patch16_224", "deit_small_patch16_224"]
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    print(f"device={args.device} threads={args.threads} repeats={args.repeats}\n")
    print("| model | batch | method | ms | peak MB | time ratio | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models:
        for batch in args.batches:
            base = None
            for method in ["forward_backward"] + [
                m for m in args.methods if m != "forward_backward"
            ]:
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--model",
                    model,
                    "--batch",
                    str(batch),
                    "--method",
                    method,
                    "--device",
                    args.device,
                    "--repeats",
                    str(args.repeats),
                    "--threads",
                    str(args.threads),
                ]
                out = subprocess.run(
                    command, env=env, capture_output=True, text=True, check=True
                ).stdout
                result = json.loads(out.strip().splitlines()[-1])
                base = base or result
                print(
                    f"| {model} | {batch} | {method} | {result['seconds'] * 1e3:.1f} | "
                    f"{result['peak_bytes'] / 2**20:.1f} | "
                    f"{result['seconds'] / base['seconds']:.3f} | "
                    f"{result['peak_bytes'] / base['peak_bytes']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
