"""Procedural "shapes in clutter" dataset used to train and evaluate the embedded ViT.

Every image contains exactly one *object* of one of :data:`CLASS_NAMES`, drawn at a
random position, scale, small tilt and colour on a cluttered, textured background
with *distractors* (lines, bars, arcs, squiggles, specks) that are not instances of
any class.  Classes differ only by shape: colour, texture, position and background
are sampled independently of the label, so a classifier has to look at the object.

Item ``i`` of a dataset with seed ``s`` is a pure function of
``(s, i, image_size, clutter)`` (it is drawn from ``numpy.random.default_rng([s, i])``),
so any subset can be regenerated anywhere without storing images.

Geometry conventions: pixel ``(row y, column x)`` covers the square
``[x, x + 1) x [y, y + 1)``; a box ``(x0, y0, x1, y1)`` is the tight bounding box of
the object's pixel mask in these continuous coordinates, i.e. ``x0``/``y0`` are the
first covered column/row and ``x1``/``y1`` are one past the last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

__all__ = [
    "CLASS_NAMES",
    "MEAN",
    "STD",
    "ShapeBatch",
    "ShapeSample",
    "SyntheticShapes",
    "denormalize",
    "normalize",
    "render",
]

#: Class names, indexed by label.
CLASS_NAMES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "ring", "star")
#: Per-channel mean used to normalise images (images live in ``[0, 1]`` before it).
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
#: Per-channel standard deviation used to normalise images.
STD: tuple[float, float, float] = (0.25, 0.25, 0.25)

_Rng = np.random.Generator
_Points = list[tuple[float, float]]


def _stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if like.dim() < 3 or like.shape[-3] != 3:
        raise ValueError(f"expected an image (..., 3, H, W), got shape {tuple(like.shape)}")
    shape = (1,) * (like.dim() - 3) + (3, 1, 1)
    mean = torch.tensor(MEAN, dtype=like.dtype, device=like.device).view(shape)
    std = torch.tensor(STD, dtype=like.dtype, device=like.device).view(shape)
    return mean, std


def normalize(image: torch.Tensor) -> torch.Tensor:
    """Map a ``[0, 1]`` image ``(..., 3, H, W)`` to the model's input space."""
    mean, std = _stats(image)
    return (image - mean) / std


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Invert :func:`normalize`: model input ``(..., 3, H, W)`` back to ``[0, 1]``."""
    mean, std = _stats(image)
    return (image * std + mean).clamp(0.0, 1.0)


@dataclass(frozen=True)
class ShapeSample:
    """One generated item.

    Attributes:
        image: float32 ``(3, H, W)``, normalised with :data:`MEAN`/:data:`STD`.
        label: class index into :data:`CLASS_NAMES`.
        box: float32 ``(4,)`` tight box ``(x0, y0, x1, y1)`` of ``mask`` in pixels.
        mask: bool ``(H, W)``, ``True`` on pixels showing the object (a ring's hole
            shows background and is ``False``).
    """

    image: torch.Tensor
    label: int
    box: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class ShapeBatch:
    """Stacked items: ``images (N, 3, H, W)``, ``labels (N,)`` int64,
    ``boxes (N, 4)`` and ``masks (N, H, W)`` bool (see :class:`ShapeSample`)."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


# --------------------------------------------------------------------------- shapes


def _rotate(points: _Points, angle: float, cx: float, cy: float, scale: float) -> _Points:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + scale * (c * x - s * y), cy + scale * (s * x + c * y)) for x, y in points]


def _regular_polygon(n: int, phase: float = 0.0) -> _Points:
    return [
        (math.cos(phase + 2 * math.pi * k / n), math.sin(phase + 2 * math.pi * k / n))
        for k in range(n)
    ]


#: Largest tilt of the upright shapes (square, triangle, cross, star), in radians.
MAX_TILT = math.radians(20.0)


def _tilt(rng: _Rng) -> float:
    return float(rng.uniform(-MAX_TILT, MAX_TILT))


def _draw_disc(draw: ImageDraw.ImageDraw, rng: _Rng, cx: float, cy: float, r: float) -> None:
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)


def _draw_ring(draw: ImageDraw.ImageDraw, rng: _Rng, cx: float, cy: float, r: float) -> None:
    inner = r * rng.uniform(0.45, 0.62)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)


def _draw_square(draw: ImageDraw.ImageDraw, rng: _Rng, cx: float, cy: float, r: float) -> None:
    pts = _regular_polygon(4, math.pi / 4)  # corners on the circle of radius 0.95 r
    draw.polygon(_rotate(pts, _tilt(rng), cx, cy, 0.95 * r), fill=255)


def _draw_triangle(draw: ImageDraw.ImageDraw, rng: _Rng, cx: float, cy: float, r: float) -> None:
    pts = _regular_polygon(3, -math.pi / 2)  # apex up
    pts = [(x + rng.uniform(-0.08, 0.08), y + rng.uniform(-0.08, 0.08)) for x, y in pts]
    draw.polygon(_rotate(pts, _tilt(rng), cx, cy, 1.05 * r), fill=255)


def _draw_cross(draw: ImageDraw.ImageDraw, rng: _Rng, cx: float, cy: float, r: float) -> None:
    t = rng.uniform(0.22, 0.34)  # half thickness of each bar, relative to r
    pts = [(-1, -t), (-t, -t), (-t, -1), (t, -1), (t, -t), (1, -t),
           (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t)]  # fmt: skip
    draw.polygon(_rotate(pts, _tilt(rng), cx, cy, r), fill=255)


def _draw_star(draw: ImageDraw.ImageDraw, rng: _Rng, cx: float, cy: float, r: float) -> None:
    inner = rng.uniform(0.38, 0.5)
    pts = [
        ((1.0 if k % 2 == 0 else inner) * math.cos(math.pi * k / 5),
         (1.0 if k % 2 == 0 else inner) * math.sin(math.pi * k / 5))
        for k in range(10)
    ]  # fmt: skip
    draw.polygon(_rotate(pts, _tilt(rng) - math.pi / 2, cx, cy, 1.05 * r), fill=255)  # point up


_DRAWERS: tuple[Callable[[ImageDraw.ImageDraw, _Rng, float, float, float], None], ...] = (
    _draw_disc,
    _draw_square,
    _draw_triangle,
    _draw_cross,
    _draw_ring,
    _draw_star,
)
assert len(_DRAWERS) == len(CLASS_NAMES)
#: Largest distance of any shape's points from its centre, in units of r (triangle:
#: 1.05 * (1 + 0.08 * sqrt(2)) ~= 1.17).
_MAX_EXTENT = 1.2


# ---------------------------------------------------------------------- backgrounds


def _random_colour(rng: _Rng) -> np.ndarray:
    return rng.random(3, dtype=np.float32)


@lru_cache(maxsize=8)
def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    return x, y


def _value_noise(rng: _Rng, size: int, channels: int = 3) -> np.ndarray:
    """Smooth random texture in ``[0, 1]``, float32 ``(size, size, channels)``."""
    cells = int(rng.integers(2, 10))
    low = rng.integers(0, 256, size=(cells, cells, channels), dtype=np.uint8)
    mode = "RGB" if channels == 3 else "L"
    image = Image.fromarray(low if channels == 3 else low[..., 0], mode=mode)
    smooth = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return smooth.reshape(size, size, channels) * np.float32(1.0 / 255.0)


def _background(rng: _Rng, size: int, clutter: float) -> np.ndarray:
    """A random textured background, float32 ``(size, size, 3)`` in ``[0, 1]``.

    ``clutter`` scales the texture contrast (0: a flat colour)."""
    x, y = _coords(size)
    kind = int(rng.integers(4))
    c0, c1 = _random_colour(rng), _random_colour(rng)
    angle = float(rng.uniform(0, 2 * math.pi))
    u = x * math.cos(angle) + y * math.sin(angle)
    if kind == 0:  # coloured value noise
        bg = _value_noise(rng, size)
    elif kind == 1:  # linear gradient
        t = (u - u.min()) / max(float(u.max() - u.min()), 1e-9)
        bg = c0 + t[..., None] * (c1 - c0)
    elif kind == 2:  # soft stripes
        freq, phase = float(rng.uniform(3.0, 9.0)), float(rng.uniform(0, 2 * math.pi))
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * u + phase)
        bg = c0 + t[..., None] * (c1 - c0)
    else:  # blotches: two colours mixed by a smooth noise field
        t = _value_noise(rng, size, channels=1)
        bg = c0 + t * (c1 - c0)
    if rng.random() < 0.5:  # overlay a second, fainter texture
        a = float(rng.uniform(0.15, 0.4))
        bg = (1.0 - a) * bg + a * _value_noise(rng, size)
    # Keep the texture but soften it around its mean colour: clutter is busy yet,
    # on average, less contrasted than the object (distractors stay at full contrast).
    mean = bg.mean(axis=(0, 1), keepdims=True)
    return mean + clutter * float(rng.uniform(0.25, 0.6)) * (bg - mean)


# ---------------------------------------------------------------------- distractors


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(round(255 * float(c))) for c in np.clip(colour, 0.0, 1.0))
    return r, g, b


def _draw_distractors(
    rng: _Rng, size: int, canvas: np.ndarray, object_colour: np.ndarray, clutter: float
) -> np.ndarray:
    """Return ``canvas`` with short bars, lines, arcs, squiggles and specks painted on.

    None of them is a class shape: bars and lines are single straight strokes,
    arcs span less than half a circle, squiggles are open polylines and specks are
    far below the minimum object size.  Some reuse the object's colour, so colour
    alone does not single out the object.  ``clutter`` scales their number.
    """
    image = Image.fromarray((canvas * 255.0 + 0.5).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(round(clutter * int(rng.integers(4, 11)))):
        if rng.random() < 0.3:
            fill = _rgb(object_colour + rng.normal(0.0, 0.05, size=3))
        else:
            fill = _rgb(_random_colour(rng))
        kind = int(rng.integers(5))
        x, y = rng.uniform(0, size, size=2)
        if kind <= 1:  # thin line (kind 0) or thick bar (kind 1)
            length = rng.uniform(0.08, 0.25 if kind == 0 else 0.3) * size
            a = rng.uniform(0, 2 * math.pi)
            width = int(rng.integers(1, 3)) if kind == 0 else int(rng.integers(3, 6))
            draw.line(
                (x, y, x + length * math.cos(a), y + length * math.sin(a)), fill=fill, width=width
            )
        elif kind == 2:  # open arc
            r = rng.uniform(0.06, 0.16) * size
            start = rng.uniform(0, 360)
            draw.arc(
                (x - r, y - r, x + r, y + r),
                start,
                start + rng.uniform(40, 160),
                fill=fill,
                width=int(rng.integers(1, 4)),
            )
        elif kind == 3:  # squiggle: open polyline with random turns
            pts = [(float(x), float(y))]
            for _ in range(int(rng.integers(2, 4))):
                step = rng.uniform(0.04, 0.1) * size
                a = rng.uniform(0, 2 * math.pi)
                pts.append((pts[-1][0] + step * math.cos(a), pts[-1][1] + step * math.sin(a)))
            draw.line(pts, fill=fill, width=int(rng.integers(1, 3)))
        else:  # cluster of specks
            for _ in range(int(rng.integers(2, 6))):
                px, py = x + rng.normal(0, 3), y + rng.normal(0, 3)
                r = rng.uniform(0.5, 1.5)
                draw.ellipse((px - r, py - r, px + r, py + r), fill=fill)
    return np.asarray(image, dtype=np.float32) * np.float32(1.0 / 255.0)


# --------------------------------------------------------------------------- object


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _object_colour(rng: _Rng, under: np.ndarray) -> np.ndarray:
    """A random colour that contrasts with ``under``, the mean background colour
    below the object: in colour (RGB distance > 0.45) and in luminance (> 0.25,
    lighter or darker), so the object's outline is visible in any channel mix."""
    for _ in range(64):
        colour = _random_colour(rng)
        if np.linalg.norm(colour - under) > 0.45 and abs(float((colour - under) @ _LUMA)) > 0.25:
            return colour
    return np.where(under @ _LUMA > 0.5, 0.0, 1.0).astype(np.float32) * np.ones(3, dtype=np.float32)


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def render(
    seed: int, index: int, image_size: int = 64, with_object: bool = True, clutter: float = 1.0
) -> tuple[np.ndarray, int, np.ndarray]:
    """Render item ``index`` of the dataset with ``seed``.

    With ``with_object=False`` the very same scene is rendered without the object
    (background, clutter and noise are identical), which gives the exact
    counterfactual "object deleted" image; label and mask are still returned.
    ``clutter`` in ``[0, 1]`` scales background contrast, the number of
    distractors and the pixel noise (1: the standard dataset; 0: the object on a
    flat background).

    Returns:
        ``(image, label, mask)``: float32 ``(H, W, 3)`` image in ``[0, 1]`` (not
        normalised), the class index and the bool ``(H, W)`` object mask.
    """
    rng = np.random.default_rng([seed, index])
    size = image_size
    label = int(rng.integers(len(CLASS_NAMES)))

    if not 0.0 <= clutter <= 1.0:
        raise ValueError(f"clutter must be in [0, 1], got {clutter}")
    background = _background(rng, size, clutter)

    # Object geometry: nominal radius r of 17%..28% of the image side.  Every shape
    # extends at most _MAX_EXTENT * r from the centre, so it lies fully inside the image.
    r = rng.uniform(0.17, 0.28) * size
    margin = _MAX_EXTENT * r + 1.0
    cx, cy = rng.uniform(margin, size - margin, size=2)
    layer = Image.new("L", (size, size), 0)
    _DRAWERS[label](ImageDraw.Draw(layer), rng, float(cx), float(cy), float(r))
    mask = np.asarray(layer) > 127
    colour = _object_colour(rng, background[mask].mean(axis=0))

    # Clutter below the object, then the object with a smoothly shaded fill.
    canvas = _draw_distractors(rng, size, background, colour, clutter)
    shade = float(rng.uniform(0.0, 0.25)) * (_value_noise(rng, size, channels=1) - 0.5)
    if with_object:
        canvas[mask] = np.clip(colour + shade, 0.0, 1.0)[mask]

    # Sensor noise over everything.
    sigma = np.float32(clutter * rng.uniform(0.0, 0.06))
    canvas += sigma * rng.standard_normal(canvas.shape, dtype=np.float32)
    np.clip(canvas, 0.0, 1.0, out=canvas)
    return canvas, label, mask


class SyntheticShapes(Dataset[tuple[torch.Tensor, int, torch.Tensor]]):
    """Deterministic procedural dataset of shapes in clutter.

    Args:
        num_images: dataset length.
        seed: dataset seed; item ``i`` depends only on ``(seed, i, image_size, clutter)``.
        image_size: side of the square images in pixels.
        clutter: in ``[0, 1]``, scales background contrast, distractor count and
            pixel noise; 1 (the default) is the dataset the model is trained and
            evaluated on, lower values give easier, cleaner scenes.

    ``dataset[i]`` returns ``(image, label, box)``: the normalised float32 image
    ``(3, H, W)``, the int label and the float32 box ``(x0, y0, x1, y1)``.  Use
    :meth:`sample` to also get the object mask.
    """

    def __init__(
        self, num_images: int, seed: int = 0, image_size: int = 64, clutter: float = 1.0
    ) -> None:
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.image_size = int(image_size)
        if not 0.0 <= clutter <= 1.0:
            raise ValueError(f"clutter must be in [0, 1], got {clutter}")
        self.clutter = float(clutter)

    def __len__(self) -> int:
        return self.num_images

    def _check(self, index: int) -> int:
        if index < 0:
            index += self.num_images
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return index

    def sample(self, index: int, with_object: bool = True) -> ShapeSample:
        """Item ``index`` with its object mask.

        ``with_object=False`` renders the same scene with the object left out
        (see :func:`render`); label, box and mask still describe the object.
        """
        index = self._check(index)
        image, label, mask = render(self.seed, index, self.image_size, with_object, self.clutter)
        tensor = normalize(torch.from_numpy(image).permute(2, 0, 1).contiguous())
        box = torch.tensor(_mask_box(mask), dtype=torch.float32)
        return ShapeSample(tensor, label, box, torch.from_numpy(mask.copy()))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        s = self.sample(index)
        return s.image, s.label, s.box

    def batch(self, indices: Sequence[int] | None = None, with_object: bool = True) -> ShapeBatch:
        """Render items (all by default) and stack them into a :class:`ShapeBatch`."""
        idx = range(self.num_images) if indices is None else indices
        samples = [self.sample(i, with_object) for i in idx]
        s = self.image_size
        if not samples:
            return ShapeBatch(
                torch.empty(0, 3, s, s),
                torch.empty(0, dtype=torch.long),
                torch.empty(0, 4),
                torch.empty(0, s, s, dtype=torch.bool),
            )
        return ShapeBatch(
            torch.stack([x.image for x in samples]),
            torch.tensor([x.label for x in samples], dtype=torch.long),
            torch.stack([x.box for x in samples]),
            torch.stack([x.mask for x in samples]),
        )
