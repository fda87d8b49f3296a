"""The flow viewer: one self-contained interactive HTML page for DAAM results.

Captum Insights was retired in Captum 0.9, and it only ever took input-attribution
methods. The flow viewer is its successor for DAAM: a single HTML file, with every
picture embedded and a little inline script, that opens offline in any browser with no
server. For several images it shows the image with a block slider, the accumulated maps
``D_b`` or each block's own map ``L_b``, an opacity control, each block's share of the
final map, and buttons that switch between the explained classes (e.g. the top k).

    >>> from captum_daam import DAAM
    >>> from captum_daam.viewer import explain_top_k, write_flow_viewer
    >>> flows = explain_top_k(DAAM(model), images, k=3)
    >>> write_flow_viewer("flow.html", images, flows, class_names=names, mean=m, std=s)

The page takes its initial state from the URL fragment, e.g.
``flow.html#block=3&mode=block&opacity=0.4&rank=1``, and keeps the fragment up to date,
so a view can be shared as a link.

Frames are rendered as by :func:`captum_daam.visualization.flow_figure`: the maps are
upsampled to the image and put through the same display mapping
(:func:`~captum_daam.visualization.display_frames`) and colour map; the page only blends
them over the image with the chosen opacity.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .attr import DAAM
from .result import DAAMFlow
from .visualization import MAPPINGS, PathLike, display_frames, to_display_image

_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg")}


def explain_top_k(
    daam: DAAM,
    images: Tensor,
    k: int = 3,
    additional_forward_args: Optional[object] = None,
    token: Optional[str] = None,
) -> List[DAAMFlow]:
    """DAAM flows for each image's k highest-scoring classes.

    One forward pass without gradients finds the top k classes of every image, then one
    DAAM pass per rank explains them.

    Args:
        daam: The explainer.
        images: Images (N, C, H, W).
        k: How many classes per image.
        additional_forward_args: Extra positional arguments for the model.
        token: Readout token, as for :meth:`DAAM.attribute`.

    Returns:
        ``k`` flows; flow ``j`` explains every image's class of rank ``j`` (0 = top).
    """
    extra = additional_forward_args
    if extra is not None and not isinstance(extra, tuple):
        extra = (extra,)
    with torch.no_grad():
        logits = daam.adapter.logits(daam.forward_func(images, *(extra or ())))
    if k < 1 or k > logits.shape[1]:
        raise ValueError(f"k must lie in [1, {logits.shape[1]}], got {k}")
    ranks = logits.topk(k, dim=1).indices
    return [
        daam.attribute(
            images, target=ranks[:, j], additional_forward_args=additional_forward_args,
            return_flow=True, token=token,
        )
        for j in range(k)
    ]


def _data_url(pixels: np.ndarray, image_format: str, quality: int) -> str:
    from PIL import Image

    pil_format, mime = _FORMATS[image_format]
    buffer = io.BytesIO()
    options = {"quality": quality} if pil_format == "JPEG" else {"optimize": True}
    Image.fromarray(pixels).save(buffer, pil_format, **options)
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _as_uint8(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def viewer_data(
    images: Tensor,
    flows: Union[DAAMFlow, Sequence[DAAMFlow]],
    class_names: Optional[Sequence[str]] = None,
    image_names: Optional[Sequence[str]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    mapping: str = "sigmoid",
    cmap: str = "jet",
    image_format: str = "jpeg",
    quality: int = 90,
) -> Dict[str, object]:
    """Everything the viewer page shows, as JSON-ready data (frames as data URLs).

    Arguments as for :func:`write_flow_viewer`. The result has ``blocks``,
    ``layer_names`` and ``images``: per image its ``name``, ``src`` (the image) and
    ``classes``, per class ``target``, ``label``, ``score``, ``contributions`` (each
    block's share of the final map) and the frames ``accumulated`` and ``block_maps``
    (one data URL per block).
    """
    from matplotlib import colormaps

    flow_list = [flows] if isinstance(flows, DAAMFlow) else list(flows)
    if not flow_list:
        raise ValueError("no flows to show: pass a DAAMFlow or a list of them")
    if images.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
    count = int(images.shape[0])
    first = flow_list[0]
    for flow in flow_list:
        if flow.block_maps.shape[0] != count:
            raise ValueError(
                f"a flow explains {flow.block_maps.shape[0]} images but {count} images "
                "were given; every flow must cover the same images"
            )
        if flow.num_blocks != first.num_blocks or flow.layer_names != first.layer_names:
            raise ValueError("every flow must come from the same explainer (same blocks)")
    if mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; choose one of {sorted(MAPPINGS)}")
    if image_format not in _FORMATS:
        raise ValueError(f"image_format must be one of {sorted(_FORMATS)}, got {image_format!r}")
    if image_names is not None and len(image_names) != count:
        raise ValueError(f"{len(image_names)} image names for {count} images")
    colour = colormaps[cmap]
    entries: List[Dict[str, object]] = []
    for i in range(count):
        picture = to_display_image(images[i], mean, std)
        size = picture.shape[:2]
        classes = []
        for flow in flow_list:
            target = int(flow.targets[i])
            if class_names is not None and 0 <= target < len(class_names):
                label = str(class_names[target])
            else:
                label = f"class {target}"
            frames = {}
            for which in ("accumulated", "block_maps"):
                shown = display_frames(flow, i, mapping, which, size)
                frames[which] = [
                    _data_url(_as_uint8(colour(frame)[..., :3]), image_format, quality)
                    for frame in shown
                ]
            classes.append(
                {
                    "target": target,
                    "label": label,
                    "score": float(flow.scores[i]),
                    "contributions": [float(c) for c in flow.contributions()[i]],
                    **frames,
                }
            )
        entries.append(
            {
                "name": str(image_names[i]) if image_names is not None else f"image {i}",
                "src": _data_url(_as_uint8(picture), "png", quality),
                "classes": classes,
            }
        )
    return {
        "blocks": first.num_blocks,
        "layer_names": list(first.layer_names),
        "mapping": mapping,
        "images": entries,
    }


_CSS = """
:root { --size: %(size)dpx; font-family: system-ui, sans-serif; }
body { margin: 0; background: #f4f4f5; color: #18181b; }
header { position: sticky; top: 0; z-index: 2; background: #fff; padding: 8px 16px;
         border-bottom: 1px solid #d4d4d8; display: flex; flex-wrap: wrap; gap: 18px;
         align-items: center; }
header h1 { font-size: 16px; margin: 0 12px 0 0; }
header label { font-size: 13px; display: flex; align-items: center; gap: 6px; }
#block { width: 240px; }
#block-label { font-variant-numeric: tabular-nums; min-width: 230px; white-space: nowrap;
                font-size: 13px; }
main { display: flex; flex-wrap: wrap; gap: 16px; padding: 16px; }
.panel { background: #fff; border: 1px solid #d4d4d8; border-radius: 6px; padding: 10px;
         width: var(--size); }
.panel h2 { font-size: 13px; margin: 0 0 6px 0; overflow: hidden; text-overflow: ellipsis;
            white-space: nowrap; }
.stack { position: relative; width: var(--size); height: var(--size); }
.stack img { position: absolute; inset: 0; width: 100%%; height: 100%%; }
.classes { display: flex; flex-direction: column; gap: 3px; margin-top: 6px; }
.classes button { text-align: left; font-size: 12px; padding: 3px 6px; cursor: pointer;
                  border: 1px solid #d4d4d8; background: #fafafa; border-radius: 4px;
                  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.classes button.active { background: #dbeafe; border-color: #2563eb; }
.bars { display: flex; align-items: flex-end; gap: 2px; height: 40px; margin-top: 6px; }
.bars div { flex: 1; background: #93c5fd; min-height: 1px; cursor: pointer; }
.bars div.current { background: #1d4ed8; }
.caption { font-size: 11px; color: #52525b; margin-top: 2px; }
"""

_SCRIPT = r"""
(function () {
  const DATA = JSON.parse(document.getElementById("daam-data").textContent);
  const B = DATA.blocks;
  const state = { block: B - 1, mode: "accumulated", opacity: %(alpha)s, rank: null };
  const ranks = DATA.images.map(() => 0);
  const slider = document.getElementById("block");
  const opacity = document.getElementById("opacity");
  const label = document.getElementById("block-label");
  const play = document.getElementById("play");
  const rankSelect = document.getElementById("rank");
  let timer = null;

  function buildPanels() {
    const main = document.querySelector("main");
    DATA.images.forEach((image, i) => {
      const panel = document.createElement("section");
      panel.className = "panel";
      panel.id = "panel-" + i;
      const title = document.createElement("h2");
      title.textContent = image.name;
      const stack = document.createElement("div");
      stack.className = "stack";
      const base = document.createElement("img");
      base.className = "image";
      base.alt = image.name;
      base.src = image.src;
      const heat = document.createElement("img");
      heat.className = "heat";
      heat.alt = "DAAM map";
      stack.append(base, heat);
      const classes = document.createElement("div");
      classes.className = "classes";
      image.classes.forEach((entry, r) => {
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.rank = r;
        button.textContent = "#" + (r + 1) + " " + entry.label +
          " (logit " + entry.score.toFixed(2) + ")";
        button.title = entry.label;
        button.addEventListener("click", () => {
          ranks[i] = r; state.rank = null; rankSelect.value = ""; render();
        });
        classes.append(button);
      });
      const bars = document.createElement("div");
      bars.className = "bars";
      bars.title = "share of the final map per block";
      for (let b = 0; b < B; b++) {
        const bar = document.createElement("div");
        bar.dataset.block = b;
        bar.addEventListener("click", () => { state.block = b; render(); });
        bars.append(bar);
      }
      const caption = document.createElement("div");
      caption.className = "caption";
      caption.textContent = "share of the final map per block";
      panel.append(title, stack, classes, bars, caption);
      main.append(panel);
    });
  }

  function render() {
    const b = state.block;
    slider.value = String(b + 1);
    opacity.value = String(Math.round(state.opacity * 100));
    const symbol = state.mode === "accumulated" ? "D" : "L";
    const layer = DATA.layer_names[b] || "";
    label.replaceChildren(symbol, Object.assign(document.createElement("sub"),
      { textContent: String(b + 1) }), " of " + B + (layer ? " (" + layer + ")" : ""));
    document.querySelectorAll("input[name=mode]").forEach((radio) => {
      radio.checked = radio.value === state.mode;
    });
    DATA.images.forEach((image, i) => {
      const panel = document.getElementById("panel-" + i);
      const rank = Math.min(ranks[i], image.classes.length - 1);
      const entry = image.classes[rank];
      const heat = panel.querySelector("img.heat");
      heat.src = entry[state.mode][b];
      heat.dataset.frame = [i, rank, state.mode, b].join("/");
      heat.style.opacity = String(state.opacity);
      panel.querySelectorAll(".classes button").forEach((button) => {
        button.classList.toggle("active", Number(button.dataset.rank) === rank);
      });
      const peak = Math.max(...entry.contributions, 1e-12);
      panel.querySelectorAll(".bars div").forEach((bar, k) => {
        bar.style.height = (100 * entry.contributions[k] / peak) + "%%";
        bar.title = "block " + (k + 1) + ": " + (100 * entry.contributions[k]).toFixed(1) + "%%";
        bar.classList.toggle("current", k === b);
      });
    });
    const fragment = "#block=" + (b + 1) + "&mode=" +
      (state.mode === "accumulated" ? "acc" : "block") +
      "&opacity=" + state.opacity.toFixed(2) +
      (state.rank === null ? "" : "&rank=" + state.rank);
    if (location.hash !== fragment) history.replaceState(null, "", fragment);
  }

  function readFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    const block = parseInt(params.get("block"), 10);
    if (block >= 1 && block <= B) state.block = block - 1;
    const mode = params.get("mode");
    if (mode === "acc" || mode === "accumulated") state.mode = "accumulated";
    if (mode === "block" || mode === "block_maps") state.mode = "block_maps";
    const alpha = parseFloat(params.get("opacity"));
    if (alpha >= 0 && alpha <= 1) state.opacity = alpha;
    const rank = parseInt(params.get("rank"), 10);
    if (rank >= 0) { state.rank = rank; ranks.fill(rank); rankSelect.value = String(rank); }
  }

  function stop() { clearInterval(timer); timer = null; play.textContent = "Play"; }

  buildPanels();
  slider.max = String(B);
  const depth = Math.max(...DATA.images.map((image) => image.classes.length));
  for (let r = 0; r < depth; r++) {
    const option = document.createElement("option");
    option.value = String(r);
    option.textContent = "top-" + (r + 1);
    rankSelect.append(option);
  }
  slider.addEventListener("input", () => { state.block = Number(slider.value) - 1; render(); });
  opacity.addEventListener("input", () => { state.opacity = Number(opacity.value) / 100; render(); });
  document.querySelectorAll("input[name=mode]").forEach((radio) => {
    radio.addEventListener("change", () => { state.mode = radio.value; render(); });
  });
  rankSelect.addEventListener("change", () => {
    if (rankSelect.value === "") { state.rank = null; render(); return; }
    state.rank = Number(rankSelect.value); ranks.fill(state.rank); render();
  });
  play.addEventListener("click", () => {
    if (timer !== null) { stop(); return; }
    play.textContent = "Pause";
    state.block = state.block >= B - 1 ? 0 : state.block;
    render();
    timer = setInterval(() => {
      if (state.block >= B - 1) { stop(); return; }
      state.block += 1; render();
    }, %(frame_ms)d);
  });
  window.addEventListener("hashchange", () => { readFragment(); render(); });
  readFragment();
  render();
  document.body.dataset.ready = "true";
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%(title)s</title>
<style>%(css)s</style>
</head>
<body>
<header>
  <h1>%(title)s</h1>
  <label>block <input type="range" id="block" min="1" max="1" step="1" value="1"></label>
  <span id="block-label"></span>
  <button type="button" id="play">Play</button>
  <label><input type="radio" name="mode" value="accumulated" checked> accumulated D<sub>b</sub></label>
  <label><input type="radio" name="mode" value="block_maps"> per block L<sub>b</sub></label>
  <label>opacity <input type="range" id="opacity" min="0" max="100" step="1" value="55"></label>
  <label>class <select id="rank"><option value="">per image</option></select></label>
</header>
<main></main>
<script type="application/json" id="daam-data">%(data)s</script>
<script>%(script)s</script>
</body>
</html>
"""


def render_flow_viewer(
    images: Tensor,
    flows: Union[DAAMFlow, Sequence[DAAMFlow]],
    class_names: Optional[Sequence[str]] = None,
    image_names: Optional[Sequence[str]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    mapping: str = "sigmoid",
    cmap: str = "jet",
    alpha: float = 0.55,
    display_size: int = 256,
    frame_ms: int = 400,
    image_format: str = "jpeg",
    quality: int = 90,
    title: str = "DAAM attention flow",
) -> str:
    """The flow viewer page as an HTML string; see :func:`write_flow_viewer`."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    data = viewer_data(
        images, flows, class_names, image_names, mean, std, mapping, cmap,
        image_format, quality,
    )
    # "<" escaped so that no string in the data can close the script element.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return _PAGE % {
        "title": html.escape(title),
        "css": _CSS % {"size": int(display_size)},
        "data": payload,
        "script": _SCRIPT % {"alpha": repr(float(alpha)), "frame_ms": int(frame_ms)},
    }


def write_flow_viewer(
    path: PathLike,
    images: Tensor,
    flows: Union[DAAMFlow, Sequence[DAAMFlow]],
    class_names: Optional[Sequence[str]] = None,
    image_names: Optional[Sequence[str]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    mapping: str = "sigmoid",
    cmap: str = "jet",
    alpha: float = 0.55,
    display_size: int = 256,
    frame_ms: int = 400,
    image_format: str = "jpeg",
    quality: int = 90,
    title: str = "DAAM attention flow",
) -> Path:
    """Write the interactive flow viewer: one self-contained HTML file, opens offline.

    The page shows every image in a panel with its map over it; a block slider (and a
    play button) steps through the blocks, a switch shows the accumulated maps ``D_b``
    or each block's own map ``L_b``, a slider sets the opacity of the map, and per image
    buttons (or one selector for all images) switch between the explained classes. Bars
    under each image give every block's share of the final map; clicking one jumps to
    that block. The state is kept in the URL fragment
    (``#block=3&mode=acc&opacity=0.55&rank=0``).

    Args:
        path: Where to write the page (``.html``).
        images: The preprocessed images (N, C, H, W) that were explained.
        flows: A :class:`~captum_daam.DAAMFlow` of these images, or several (one per
            class to switch between, e.g. :func:`explain_top_k`), each over all N images.
        class_names: Names of the classes by index (e.g.
            :func:`captum_daam.visualization.imagenet_class_names`).
        image_names: A name per image (file names), shown above it.
        mean, std: The model's normalisation, to show the images in their colours.
        mapping: Display mapping of the maps, ``"sigmoid"`` (the paper's, default) or
            ``"linear"``.
        cmap: Matplotlib colour map of the maps.
        alpha: Initial opacity of the maps.
        display_size: Width and height of each image on the page, in CSS pixels.
        frame_ms: Time per block when playing.
        image_format: Encoding of the map frames, ``"jpeg"`` (default, small) or
            ``"png"`` (lossless; larger pages). Images are always PNG.
        quality: JPEG quality.
        title: Page title.

    Returns:
        The path written.
    """
    page = render_flow_viewer(
        images, flows, class_names, image_names, mean, std, mapping, cmap, alpha,
        display_size, frame_ms, image_format, quality, title,
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["explain_top_k", "render_flow_viewer", "viewer_data", "write_flow_viewer"]
