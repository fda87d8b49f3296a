"""DAAM beside Captum's own methods, judged with Captum's own metrics.

    python docs/side_by_side.py --data $CAPTUM_DAAM_DATA --images 16 --out side_by_side
    python docs/side_by_side.py --tiny --out side_by_side      # no data: a tiny random ViT

Explains the same images, for each image's predicted class, with

* **DAAM** (:class:`captum_daam.DAAMInput`: the final accumulated map in input space),
* **Grad-CAM** on the ViT's patch tokens (:class:`captum_daam.ViTLayerGradCam`, Captum's
  ``LayerGradCam`` on ``model.blocks[-1].norm1`` laid out on the patch grid),
* **Integrated Gradients** (Captum's ``IntegratedGradients``, zero baseline), and
* **attention rollout** (:func:`captum_daam.attention_rollout`, Abnar & Zuidema; a
  class-agnostic baseline),

plots them side by side with Captum's ``visualize_image_attr``, and reports for each
method, per image and then averaged:

* ``captum.metrics.infidelity`` (``normalize=True``) under two perturbations: removing
  random patches (each patch set to the normalised-space zero, i.e. the dataset mean, with
  probability ``--drop``) and Gaussian noise (std ``--noise``); lower is better;
* ``captum.metrics.sensitivity_max`` under uniform noise of radius ``--radius``
  (L-infinity, normalised input units); lower is better;
* with real data, the energy-based pointing game (share of the map's mass inside the
  ground-truth boxes; for IG, of ``|attribution|`` summed over channels); higher is better.

A uniform map (the same value on every pixel) is scored alongside as a reference: its
infidelity is what merely counting the removed or perturbed pixels achieves, and its
energy in the boxes is the boxes' area.

Grad-CAM and rollout maps are put in input space with :func:`captum_daam.to_input_space`,
the same upsampling DAAMInput uses, so all four are compared as attributions of the input.
With real data the images are the first ``--images`` of the "report" half of
``imagenet_val_subset`` (odd positions by file name, as in tests/test_real_weights.py).

Writes to ``--out``: ``side_by_side.png`` (the figure), ``table.md`` (the table),
``results.json`` (per-image values and settings) and ``flow_viewer.html`` (the DAAM flow
of the top 3 classes, unless ``--no-viewer``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import timm
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients
from captum.metrics import infidelity, sensitivity_max
from torch import Tensor, nn

from captum_daam import DAAM, DAAMInput, ViTLayerGradCam, attention_rollout, to_input_space
from captum_daam.adapters import get_adapter
from captum_daam.evaluation import energy_in_boxes
from captum_daam.viewer import explain_top_k, write_flow_viewer
from captum_daam.visualization import class_names_for, to_display_image

Explain = Callable[..., object]
METHODS = ("DAAM", "Grad-CAM (ViT tokens)", "Integrated Gradients", "Attention rollout")
#: A reference, not an explanation: the same value on every pixel. Its infidelity says
#: what "count the removed pixels" achieves; a method should do better.
UNIFORM = "Uniform map (reference)"


def tiny_model() -> nn.Module:
    """A tiny random timm ViT (32x32 inputs, 3 blocks, 10 classes), as in the tests."""
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
        embed_dim=48, num_heads=3, depth=3, num_classes=10,
    )
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0, 0.2)
    return model.eval()


def load_real(data: Path, count: int):
    """DeiT-Tiny with its ImageNet weights and the first ``count`` "report" images."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from localization_deit_tiny import load_deit_tiny, split_files
    from timm.data import create_transform, resolve_data_config

    from captum_daam.evaluation import ImageNetSubset

    model = load_deit_tiny(data)
    config = resolve_data_config({}, model=model)
    files = split_files(data, "report")[:count]
    subset = ImageNetSubset(data / "imagenet_val_subset", create_transform(**config), files)
    items = [subset[i] for i in range(len(subset))]
    images = torch.stack([item[0] for item in items])
    labels = torch.tensor([item[1] for item in items])
    masks = torch.stack([item[2] for item in items])
    names = [entry.file for entry in subset.entries]
    return model, images, labels, masks, names, config["mean"], config["std"]


def explainers(model: nn.Module, ig_steps: int, internal_batch: int) -> Dict[str, Explain]:
    """Each method as ``explain(inputs, target=...)`` returning input-space attributions,
    tensor in / tensor out and tuple in / tuple out, as Captum's metrics call them."""
    daam = DAAMInput(model)
    gradcam = ViTLayerGradCam(model, model.blocks[-1].norm1)
    ig = IntegratedGradients(model)

    def gradcam_input(inputs, target=None):
        return to_input_space(gradcam.attribute(inputs, target=target), inputs)

    def ig_input(inputs, target=None):
        return ig.attribute(inputs, target=target, n_steps=ig_steps,
                            internal_batch_size=internal_batch)

    def rollout_input(inputs, target=None):  # class-agnostic: target unused
        return to_input_space(attention_rollout(model, inputs), inputs)

    def uniform_input(inputs, target=None):
        images = inputs[0] if isinstance(inputs, tuple) else inputs
        return to_input_space(images.new_ones(images.shape[0], 1, 1, 1), inputs)

    return dict(zip(METHODS + (UNIFORM,),
                    (daam.attribute, gradcam_input, ig_input, rollout_input, uniform_input)))


def patch_removal(grid: Tuple[int, int], drop: float, seed: int):
    """Infidelity perturbation: each patch of the grid set to zero with probability
    ``drop``; returns (perturbation, perturbed inputs) as Captum expects."""
    generator = torch.Generator().manual_seed(seed)

    def perturb(inputs: Tensor):
        keep = torch.rand(inputs.shape[0], 1, *grid, generator=generator) >= drop
        keep = F.interpolate(keep.to(inputs.dtype), size=inputs.shape[-2:], mode="nearest")
        perturbed = inputs * keep.to(inputs.device)
        return inputs - perturbed, perturbed

    return perturb


def gaussian_noise(std: float, seed: int):
    generator = torch.Generator().manual_seed(seed)

    def perturb(inputs: Tensor):
        noise = torch.randn(inputs.shape, generator=generator).to(inputs) * std
        return noise, inputs - noise

    return perturb


def uniform_noise(seed: int):
    """Sensitivity perturbation: uniform in the L-infinity ball, seeded."""
    generator = torch.Generator().manual_seed(seed)

    def perturb(inputs, radius: float):
        noise = torch.rand(inputs.shape, generator=generator).to(inputs) * 2 - 1
        return inputs + radius * noise

    return perturb


def mean_sem(values: Sequence[float]) -> Tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    sem = array.std(ddof=1) / math.sqrt(len(array)) if len(array) > 1 else float("nan")
    return float(array.mean()), float(sem)


def figure(images, attributions, names, targets, class_names, mean, std, rows, path):
    from captum.attr import visualization as viz
    from matplotlib.figure import Figure

    rows = min(rows, images.shape[0])
    fig = Figure(figsize=(2.2 * (len(METHODS) + 1), 2.3 * rows))
    axes = fig.subplots(rows, len(METHODS) + 1, squeeze=False)
    for i in range(rows):
        picture = to_display_image(images[i], mean, std)
        axes[i, 0].imshow(picture)
        target = int(targets[i])
        label = class_names[target] if class_names else f"class {target}"
        axes[i, 0].set_title(f"{names[i]}\n{label[:28]}", fontsize=7)
        for j, method in enumerate(METHODS):
            attr = attributions[method][i].detach().float().permute(1, 2, 0).numpy()
            sign = "absolute_value" if method == "Integrated Gradients" else "positive"
            if not np.any(attr):
                attr = attr + 1e-12  # Captum's normalisation divides by the maximum
            viz.visualize_image_attr(
                attr, picture, method="blended_heat_map", sign=sign, alpha_overlay=0.5,
                show_colorbar=False, plt_fig_axis=(fig, axes[i, j + 1]), use_pyplot=False,
            )
            axes[i, j + 1].set_title(method if i == 0 else "", fontsize=8)
    for axis in axes.flat:
        axis.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CAPTUM_DAAM_DATA"),
                        help="the shared data folder (default: $CAPTUM_DAAM_DATA)")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny random ViT on random images, even with data")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--out", default="side_by_side")
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--perturbations", type=int, default=16,
                        help="perturbations per image for infidelity")
    parser.add_argument("--sensitivity-samples", type=int, default=4,
                        help="perturbations per image for sensitivity_max")
    parser.add_argument("--radius", type=float, default=0.02)
    parser.add_argument("--drop", type=float, default=0.25)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=16, help="examples per pass")
    parser.add_argument("--figure-rows", type=int, default=8)
    parser.add_argument("--no-viewer", action="store_true")
    parser.add_argument("--viewer-images", type=int, default=8,
                        help="images on the flow viewer page (the first ones)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    real = bool(args.data) and not args.tiny and (
        Path(args.data) / "deit_tiny_patch16_224" / "model.safetensors").is_file()
    if real:
        model, images, labels, masks, names, mean, std = load_real(Path(args.data), args.images)
        source = f"DeiT-Tiny (ImageNet weights), {len(names)} images from {args.data}"
    else:
        model = tiny_model()
        images = torch.randn(args.images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        labels, masks, mean, std = None, None, None, None
        names = [f"random {i}" for i in range(args.images)]
        source = "tiny random ViT (3 blocks, 32x32), random images"
    print(source, flush=True)
    class_names = class_names_for(get_adapter(model).num_classes)
    with torch.no_grad():
        targets = model(images).argmax(dim=1)
    grid = get_adapter(model).grid_size(tuple(images.shape[-2:]))
    methods = explainers(model, args.ig_steps, args.batch * 4)

    def chunk(samples: int) -> int:
        """Examples per pass for Captum's metrics, which expand images x perturbations:
        at least every image once, at most every perturbation of every image."""
        return min(max(len(images), 4 * args.batch), len(images) * samples)


    attributions: Dict[str, Tensor] = {}
    results: Dict[str, Dict[str, List[float]]] = {}
    for method, explain in methods.items():
        values: Dict[str, List[float]] = {}
        start = time.perf_counter()
        attr = torch.cat([explain(images[s : s + args.batch], target=targets[s : s + args.batch])
                          for s in range(0, len(images), args.batch)])
        values["seconds per image"] = [(time.perf_counter() - start) / len(images)]
        assert attr.shape == images.shape, (method, attr.shape)
        attributions[method] = attr
        for name, perturb in (
            ("infidelity (patches)", patch_removal(grid, args.drop, args.seed)),
            ("infidelity (noise)", gaussian_noise(args.noise, args.seed)),
        ):
            values[name] = infidelity(
                model, perturb, images, attr, target=targets,
                n_perturb_samples=args.perturbations,
                max_examples_per_batch=chunk(args.perturbations),
                normalize=True,
            ).tolist()
        values["sensitivity max"] = sensitivity_max(
            explain, images, perturb_func=uniform_noise(args.seed),
            perturb_radius=args.radius, n_perturb_samples=args.sensitivity_samples,
            max_examples_per_batch=chunk(args.sensitivity_samples), target=targets,
        ).tolist()
        if masks is not None:
            heat = attr.detach().abs().sum(dim=1)
            values["energy in boxes"] = energy_in_boxes(heat, masks).tolist()
        results[method] = values
        print(f"{method}: " + ", ".join(f"{k} {mean_sem(v)[0]:.4g}" for k, v in values.items()),
              flush=True)

    columns = ["infidelity (patches)", "infidelity (noise)", "sensitivity max"]
    arrows = {"infidelity (patches)": "↓", "infidelity (noise)": "↓", "sensitivity max": "↓",
              "energy in boxes": "↑", "seconds per image": ""}
    if masks is not None:
        columns.append("energy in boxes")
    columns.append("seconds per image")
    lines = [
        f"{source}; predicted classes; mean ± standard error over images.",
        "",
        "| method | " + " | ".join(f"{c} {arrows[c]}".strip() for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for method in METHODS + (UNIFORM,):
        cells = []
        for column in columns:
            centre, sem = mean_sem(results[method][column])
            cells.append(f"{centre:.4g}" if math.isnan(sem) else f"{centre:.4g} ± {sem:.2g}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if masks is not None:
        accuracy = float((targets == labels).double().mean())
        lines += ["", f"top-1 accuracy of the model on these images: {accuracy:.3f}"]
    lines += ["", "settings: " + ", ".join(
        f"{k}={getattr(args, k)}" for k in
        ("ig_steps", "perturbations", "sensitivity_samples", "radius", "drop", "noise",
         "seed"))]
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table, flush=True)

    figure(images, attributions, names, targets, class_names, mean, std, args.figure_rows,
           out / "side_by_side.png")
    if not args.no_viewer:
        shown = images[: args.viewer_images]
        flows = explain_top_k(DAAM(model), shown, k=min(3, int(get_adapter(model).num_classes)))
        write_flow_viewer(out / "flow_viewer.html", shown, flows, class_names=class_names,
                          image_names=names[: len(shown)], mean=mean, std=std)
    summary = {
        "source": source,
        "images": names,
        "targets": targets.tolist(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "results": results,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
