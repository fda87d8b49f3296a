"""Model-randomisation sanity checks (Adebayo et al., 2018, "Sanity Checks for
Saliency Maps").

A copy of the model has its layers re-initialised one after another and the method's
maps on the copy are compared with its maps on the trained model:

* **cascading**: from the top (the classifier head, then the last block, down to the
  first), each step randomising one more layer on top of the previous ones;
* **independent**: each layer alone, on a fresh copy of the trained model.

A method that depends on what the model learned shows similarity falling towards zero;
one that does not (an edge detector) stays at 1. Targets stay the original ones at
every step. Similarities (:mod:`.similarity`) are computed at the images' resolution:
maps are upsampled with :func:`captum_daam.upsample` first.

Re-initialisation follows timm's own ViT initialisation (``init_weights_vit_timm``),
seeded: every ``nn.Linear`` weight is drawn from a truncated normal of std 0.02 (bounds
±2, timm's ``trunc_normal_``) and its bias set to zero; a module with
``init_weights()`` or ``reset_parameters()`` (LayerNorm: ones and zeros; LayerScale:
its ``init_values``; convolutions: PyTorch's default) is reset with it; any other
parameter is drawn like a Linear weight. Children are reset before their parent, as
timm's ``named_apply`` does. The user's model is deep-copied and never touched.
"""

from __future__ import annotations

import copy
import math
import os
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from ..adapters import get_adapter, unwrap_model
from ..display import upsample
from ..errors import InvalidInputError
from .faithfulness import logits_function
from .plotting import line_style
from .similarity import METRICS, channel_maps, map_similarities

Explain = Callable[[Tensor, Tensor], Tensor]
Row = Dict[str, Union[str, int, float]]

#: Standard deviation of timm's ViT weight initialisation.
TIMM_INIT_STD = 0.02
MODES = ("cascading", "independent")


def randomization_layers(model: nn.Module) -> List[str]:
    """Layers to randomise, top first: the classifier head (the adapter's
    :attr:`~captum_daam.adapters.ModelAdapter.classifier`, when it has parameters), then
    the blocks from the last to the first.

    Blocks come from the attention modules found by the model's adapter
    (:func:`captum_daam.adapters.get_adapter`): each is the element of the block list
    that holds one (site ``"blocks.3.attn"`` gives block ``"blocks.3"``).

    Args:
        model: A model supported by the adapters (``DataParallel`` is unwrapped).

    Returns:
        Qualified module names, for ``model.get_submodule``.

    Example::

        >>> randomization_layers(timm.create_model("deit_tiny_patch16_224"))[:3]
        ['head', 'blocks.11', 'blocks.10']
    """
    base = unwrap_model(model)
    adapter = get_adapter(base)
    modules = dict(base.named_modules())
    blocks: List[str] = []
    for block in reversed(adapter.block_names):
        if block not in blocks:
            blocks.append(block)
    names = {id(module): name for name, module in modules.items()}
    head = adapter.classifier
    return ([names[id(head)]] if head is not None and id(head) in names else []) + blocks


def _generator_seed(seed: int, position: int) -> int:
    return (int(seed) * 1_000_003 + position) % (2**63)


def _reset_module(module: nn.Module, generator: torch.Generator) -> None:
    """timm's ViT init of one module's own parameters (see the module docstring)."""

    def draw(param: Tensor) -> None:
        values = torch.empty(param.shape, dtype=torch.float64)
        nn.init.trunc_normal_(values, std=TIMM_INIT_STD, a=-2.0, b=2.0, generator=generator)
        param.copy_(values)

    if isinstance(module, nn.Linear):
        draw(module.weight)
        if module.bias is not None:
            module.bias.zero_()
        return
    reset = getattr(module, "init_weights", None) or getattr(module, "reset_parameters", None)
    if callable(reset):
        # Own draws come from the (seeded) CPU generator: run the reset on the CPU.
        own = list(module.parameters(recurse=False))
        device = own[0].device if own else torch.device("cpu")
        if device.type != "cpu":
            module.to("cpu")
        reset()
        if device.type != "cpu":
            module.to(device)
        return
    for param in module.parameters(recurse=False):
        draw(param)


def randomize_layer(layer: nn.Module, seed: int = 0) -> None:
    """Re-initialise ``layer`` in place as timm initialises a ViT, seeded.

    Modules with their own ``reset_parameters`` draw from torch's CPU generator; it
    is seeded from ``seed`` and restored afterwards, so the global random state is
    unchanged.

    Args:
        layer: The module to randomise (work on a copy of the user's model).
        seed: Seed of the draw.

    Example::

        >>> twin = copy.deepcopy(model)
        >>> randomize_layer(twin.get_submodule(randomization_layers(twin)[1]), seed=0)
    """
    generator = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.default_generator.manual_seed(int(seed))
        for module in reversed(list(layer.modules())):  # children before parents
            _reset_module(module, generator)


def _at_image_size(maps: Tensor, size: Tuple[int, int]) -> Tensor:
    """An explainer's maps upsampled to the images, (N, 1, H, W) float64."""
    maps = channel_maps(maps, "maps from explain").detach()
    return upsample(maps.to(torch.float64), size)


def _rows(
    mode: str, step: int, layer: str, reference: Tensor, maps: Tensor, metrics: Sequence[str]
) -> Iterable[Row]:
    for metric, values in map_similarities(reference, maps, metrics).items():
        defined = values[~torch.isnan(values)]
        yield {
            "mode": mode,
            "step": step,
            "layer": layer,
            "metric": metric,
            "mean": float(defined.mean()) if len(defined) else math.nan,
            "std": float(defined.std(unbiased=False)) if len(defined) else math.nan,
            "count": int(len(defined)),
        }


def randomization_test(
    model: nn.Module,
    make_explain: Callable[[nn.Module], Explain],
    images: Tensor,
    targets: Optional[Tensor],
    mode: str = "cascading",
    layers: Optional[Sequence[str]] = None,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
) -> List[Row]:
    """Similarity of a method's maps on randomised copies of the model to its maps on
    the model itself.

    Step 0 explains an untouched deep copy (similarity 1 for a deterministic method);
    step s >= 1 randomises ``layers[s - 1]`` (cascading: together with all layers
    before it in ``layers``; independent: alone). Every layer gets the same seeded
    draw in both modes.

    Args:
        model: The trained model; never modified (a deep copy is randomised).
        make_explain: ``make_explain(model) -> explain(images, targets) -> maps`` with
            maps (N, 1, h, w) (or (N, h, w)) at any resolution, e.g. the evaluation
            method registry.
        images: (N, C, H, W) preprocessed images.
        targets: (N,) classes to explain, kept fixed at every step; ``None`` takes
            the trained model's predictions (and keeps them).
        mode: ``"cascading"`` or ``"independent"``.
        layers: Module names to randomise, in order; default
            :func:`randomization_layers` (head, then blocks from the top).
        seed: Seed of the re-initialisations.
        metrics: Similarity measures among ``"spearman"``, ``"ssim"``, ``"hog"``.

    Returns:
        Rows ``{"mode", "step", "layer", "metric", "mean", "std", "count"}``: mean and
        standard deviation over the images where the metric is defined (``count`` of
        them; NaN when none is), step 0 with layer ``"original"``.

    Example::

        >>> rows = randomization_test(model, lambda m: make_explainer("daam", m),
        ...                           images, labels)
        >>> print(sanity_table_markdown(rows))
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise InvalidInputError("images must be a tensor (N, C, H, W)")
    if targets is None:
        with torch.no_grad():
            targets = logits_function(model)(images).argmax(dim=-1)
    targets = torch.as_tensor(targets, dtype=torch.long, device=images.device).reshape(-1)
    if targets.numel() != images.shape[0]:
        raise InvalidInputError(
            f"need one target per image: {images.shape[0]} images, {targets.numel()} targets"
        )
    base = unwrap_model(model)
    names = list(randomization_layers(base) if layers is None else layers)
    known = dict(base.named_modules())
    missing = [n for n in names if n not in known or not n]
    if missing:
        raise InvalidInputError(f"layers {missing} are not modules of {type(base).__name__}")
    size = (int(images.shape[-2]), int(images.shape[-1]))

    def maps_of(copy_: nn.Module) -> Tensor:
        return _at_image_size(make_explain(copy_)(images, targets), size)

    reference = _at_image_size(make_explain(model)(images, targets), size)
    rows: List[Row] = list(
        _rows(mode, 0, "original", reference, maps_of(copy.deepcopy(base)), metrics)
    )
    cascade = copy.deepcopy(base)
    for step, name in enumerate(names, start=1):
        target_model = cascade if mode == "cascading" else copy.deepcopy(base)
        randomize_layer(target_model.get_submodule(name), _generator_seed(seed, step))
        rows.extend(_rows(mode, step, name, reference, maps_of(target_model), metrics))
        if mode == "independent":
            del target_model
    return rows


def _metric_order(rows: Sequence[Row]) -> List[str]:
    return list(dict.fromkeys(str(r["metric"]) for r in rows))


def sanity_table_markdown(rows: Sequence[Row]) -> str:
    """Rows of :func:`randomization_test` as a Markdown table, one line per step and
    one column per metric (``mean ± std``).

    Example::

        >>> print(sanity_table_markdown(rows))
        | mode | step | layer | spearman | ssim | hog |
        ...
    """
    metrics = _metric_order(rows)
    header = "| mode | step | layer | " + " | ".join(metrics) + " |"
    lines = [header, "|" + " --- |" * (3 + len(metrics))]
    cells: Dict[Tuple[str, int, str], Dict[str, str]] = {}
    for row in rows:
        key = (str(row["mode"]), int(row["step"]), str(row["layer"]))
        cells.setdefault(key, {})[str(row["metric"])] = f"{row['mean']:.3f} ± {row['std']:.3f}"
    for (mode, step, layer), values in cells.items():
        cells_row = " | ".join(values.get(m, "") for m in metrics)
        lines.append(f"| {mode} | {step} | {layer} | {cells_row} |")
    return "\n".join(lines)


def _similarity_panel(
    axes,
    lines: Dict[str, List[Row]],
    labels: Dict[int, str],
    title: str,
    bands: bool = True,
    emphasis: Optional[str] = None,
) -> None:
    """One panel: a line (with a ±std band if ``bands``) per entry of ``lines`` (rows of
    one mode), randomisation steps on the x axis named by ``labels``. Lines with no
    defined value (Spearman of a constant map) are listed as such in the legend."""
    for index, (name, chosen) in enumerate(lines.items()):
        chosen = sorted(chosen, key=lambda r: int(r["step"]))
        steps = [int(r["step"]) for r in chosen]
        mean = torch.tensor([float(r["mean"]) for r in chosen])
        std = torch.tensor([float(r["std"]) for r in chosen])
        defined = bool(torch.isfinite(mean).any())
        style = line_style(index, name, emphasis)
        axes.plot(
            steps,
            mean.numpy(),
            marker="o",
            markersize=3,
            label=name if defined else f"{name} (undefined)",
            **style,
        )
        if bands:
            axes.fill_between(
                steps, (mean - std).numpy(), (mean + std).numpy(), color=style["color"], alpha=0.2
            )
    axes.set_xticks(sorted(labels))
    axes.set_xticklabels([labels[s] for s in sorted(labels)], rotation=45, ha="right", fontsize=8)
    axes.axhline(0.0, color="grey", linewidth=0.5)
    axes.set_ylim(-1.05, 1.05)
    axes.set_ylabel("similarity to original")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def _figure(
    rows: Sequence[Row],
    path: Union[str, os.PathLike],
    group: str,
    panel_title: Callable[[str], str],
    bands: bool = True,
    emphasis: Optional[str] = None,
) -> "Figure":
    """One panel per mode, one line per value of ``group`` (a row key)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        raise InvalidInputError("no rows to plot; run randomization_test first")
    modes = list(dict.fromkeys(str(r["mode"]) for r in rows))
    num_steps = len({int(r["step"]) for r in rows})
    figure = Figure(figsize=(max(6.4, 0.55 * num_steps) + 1.8, 3.4 * len(modes)))
    FigureCanvasAgg(figure)
    for panel, mode in enumerate(modes):
        chosen = [r for r in rows if r["mode"] == mode]
        lines: Dict[str, List[Row]] = {}
        for row in chosen:
            lines.setdefault(str(row[group]), []).append(row)
        labels = {int(r["step"]): str(r["layer"]) for r in chosen}
        _similarity_panel(
            figure.add_subplot(len(modes), 1, panel + 1),
            lines,
            labels,
            panel_title(mode),
            bands,
            emphasis,
        )
    figure.tight_layout()
    figure.savefig(str(path), dpi=120)
    return figure


def sanity_figure(rows: Sequence[Row], path: Union[str, os.PathLike], title: str = "") -> "Figure":
    """Plot similarity against randomisation step, one panel per mode, one line per
    metric with a ±std band, layer names on the x axis; saved to ``path`` (PNG, PDF,
    ... by extension) and returned (a matplotlib ``Figure``). Uses matplotlib's Agg
    canvas, never a window.

    Example::

        >>> sanity_figure(rows_cascading + rows_independent, "sanity.png")
    """
    metrics = _metric_order(rows) if rows else []
    ordered = sorted(rows, key=lambda r: metrics.index(str(r["metric"])))
    return _figure(
        ordered, path, "metric", lambda mode: f"{title + ': ' if title else ''}{mode} randomisation"
    )


def sanity_comparison_figure(
    rows: Sequence[Row],
    path: Union[str, os.PathLike],
    metric: str = "spearman",
    emphasis: Optional[str] = "daam",
) -> "Figure":
    """Several methods side by side: ``metric`` against randomisation step, one panel
    per mode, one line per method (rows carry a ``"method"`` key, as
    ``captum-daam evaluate --sanity`` writes them), the ``emphasis`` method drawn
    thicker, means only (the per-method figures show the spread); saved to ``path`` and
    returned. A method that depends on the weights falls towards 0; one that ignores
    them stays at 1 (a constant map, e.g. the uniform one, has no rank correlation: its
    legend entry says "undefined").

    Example::

        >>> for name in ("daam", "gradcam"):
        ...     rows += [dict(r, method=name) for r in randomization_test(...)]
        >>> sanity_comparison_figure(rows, "sanity_spearman.png")
    """
    if any("method" not in r for r in rows):
        raise InvalidInputError("every row needs a 'method' key to compare methods")
    chosen = [r for r in rows if r["metric"] == metric]
    if rows and not chosen:
        raise InvalidInputError(f"no rows of metric {metric!r}; have {_metric_order(rows)}")
    return _figure(
        chosen,
        path,
        "method",
        lambda mode: f"{metric}, {mode} randomisation",
        bands=False,
        emphasis=emphasis,
    )


__all__ = [
    "TIMM_INIT_STD",
    "randomization_layers",
    "randomization_test",
    "randomize_layer",
    "sanity_comparison_figure",
    "sanity_figure",
    "sanity_table_markdown",
]
