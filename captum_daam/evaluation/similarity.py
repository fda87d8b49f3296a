"""How alike two maps are: Spearman rank correlation, SSIM and HOG similarity.

The three measures of Adebayo et al. (2018), "Sanity Checks for Saliency Maps", used by
:mod:`captum_daam.evaluation.sanity` to compare a method's maps on a model with its maps
on a randomised copy. Every function takes a single pair of maps (H, W) or a batch
(N, 1, H, W), the harness's map shape ((N, H, W) is accepted too, see
:func:`channel_maps`), and returns a float for a pair, a float64 tensor (N,) for a batch.

A measure that is undefined for a pair (a rank correlation with a constant map, a HOG
similarity with a featureless map) is NaN, never a made-up number.

scikit-image and scipy come with the ``eval`` extra (``pip install 'captum-daam[eval]'``).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..display import check_maps
from ..errors import InvalidInputError, InvalidInputTypeError

Similarity = Union[float, Tensor]

#: The measures :func:`map_similarities` knows, in the order they are reported.
METRICS: Tuple[str, ...] = ("spearman", "ssim", "hog")


def require_extra(module: str) -> ModuleType:
    """Import ``module`` (scipy, skimage, ...), or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:  # pragma: no cover - the test extra installs both
        raise ImportError(
            f"captum_daam.evaluation needs {module.split('.')[0]}; install the evaluation "
            "extra: pip install 'captum-daam[eval]'"
        ) from error


def channel_maps(maps: Tensor, what: str = "maps") -> Tensor:
    """A batch of maps in the harness's one shape, (N, 1, h, w).

    Explainers return (N, 1, h, w), as ``DAAM.attribute`` and Captum's layer methods do;
    (N, h, w) is accepted everywhere in :mod:`captum_daam.evaluation` and converted here.

    Args:
        maps: (N, 1, h, w) or (N, h, w).
        what: What the maps are, for the message.

    Returns:
        ``maps`` as (N, 1, h, w) (a view).

    Raises:
        TypeError / ValueError: for anything else, naming the shape.

    Example::

        >>> import torch
        >>> from captum_daam.evaluation import channel_maps
        >>> channel_maps(torch.rand(4, 14, 14)).shape
        torch.Size([4, 1, 14, 14])
    """
    if not isinstance(maps, Tensor):
        raise InvalidInputTypeError(f"{what} must be a tensor, got {type(maps).__name__}")
    if maps.dim() == 3:
        maps = maps[:, None]
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise InvalidInputError(
            f"expected {what} (N, 1, h, w) or (N, h, w), got shape {tuple(maps.shape)}"
        )
    return check_maps(maps, f"{what} (N, 1, h, w) or (N, h, w)")


def _pairs(a: Tensor, b: Tensor) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Both inputs as float64 arrays (N, H, W), and whether a single pair was given."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise InvalidInputTypeError(
            f"expected two tensors of maps, got {type(a).__name__} and {type(b).__name__}"
        )
    if a.shape != b.shape:
        raise InvalidInputError(
            f"maps to compare must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}; upsample both to one size first (captum_daam.upsample)"
        )
    single = a.dim() == 2
    if single:
        a, b = a[None], b[None]
    what = "maps to compare, one pair (H, W) or a batch"
    x = channel_maps(a, what)[:, 0].detach().to("cpu", torch.float64).numpy()
    y = channel_maps(b, what)[:, 0].detach().to("cpu", torch.float64).numpy()
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InvalidInputError("maps contain NaN or infinite values; compare finite maps only")
    return x, y, single


def _result(values: np.ndarray, single: bool) -> Similarity:
    return float(values[0]) if single else torch.from_numpy(values)


def _unit_range(x: np.ndarray) -> np.ndarray:
    """Min-max each map of (N, H, W) to [0, 1]; a constant map becomes zeros."""
    low = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - low
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, (x - low) / safe, 0.0)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows of (N, D) arrays; NaN for a constant row."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=1) / norm
    return np.where(norm > 0, np.clip(r, -1.0, 1.0), np.nan)


def spearman(a: Tensor, b: Tensor) -> Similarity:
    """Spearman rank correlation of two maps over their pixels.

    Ties get their average rank, as ``scipy.stats.spearmanr``. Insensitive to any
    increasing rescaling of either map.

    Args:
        a: A map (H, W) or a batch of maps (N, H, W).
        b: Maps of the same shape.

    Returns:
        The correlation in [-1, 1] (a float for one pair, (N,) float64 for a batch);
        NaN where either map is constant.

    Example::

        >>> import torch
        >>> from captum_daam.evaluation import spearman
        >>> spearman(torch.rand(4, 14, 14), torch.rand(4, 14, 14)).shape
        torch.Size([4])
    """
    x, y, single = _pairs(a, b)
    stats = require_extra("scipy.stats")
    n = x.shape[0]
    rx = stats.rankdata(x.reshape(n, -1), axis=1)
    ry = stats.rankdata(y.reshape(n, -1), axis=1)
    return _result(_pearson_rows(rx, ry), single)


def _ssim_window(height: int, width: int) -> int:
    side = min(7, height, width)
    side -= 1 - side % 2  # the largest odd window that fits
    if side < 3:
        raise InvalidInputError(
            f"maps of {height}x{width} pixels are too small for SSIM (3x3 at least); "
            "upsample them to the image size first (captum_daam.upsample)"
        )
    return side


def ssim(a: Tensor, b: Tensor) -> Similarity:
    """Structural similarity (``skimage.metrics.structural_similarity``) of two maps.

    Each map is min-max normalised to [0, 1] first (a constant map becomes zeros) and
    SSIM is computed with ``data_range=1`` and a 7x7 window (the largest odd window
    that fits, for maps smaller than 7 pixels).

    Args:
        a: A map (H, W) or a batch of maps (N, H, W), at least 3x3.
        b: Maps of the same shape.

    Returns:
        SSIM, 1 for identical maps (a float for one pair, (N,) float64 for a batch).

    Example::

        >>> import torch
        >>> from captum_daam.evaluation import ssim
        >>> x = torch.rand(32, 32)
        >>> ssim(x, x)                                      # one pair: a float
        1.0
        >>> ssim(torch.rand(2, 32, 32), torch.rand(2, 32, 32)).shape
        torch.Size([2])
    """
    x, y, single = _pairs(a, b)
    metrics = require_extra("skimage.metrics")
    win = _ssim_window(x.shape[1], x.shape[2])
    x, y = _unit_range(x), _unit_range(y)
    values = np.array(
        [
            metrics.structural_similarity(p, q, data_range=1.0, win_size=win)
            for p, q in zip(x, y, strict=True)
        ],
        dtype=np.float64,
    )
    return _result(values, single)


def hog_similarity(
    a: Tensor,
    b: Tensor,
    orientations: int = 9,
    pixels_per_cell: Tuple[int, int] = (8, 8),
    cells_per_block: Tuple[int, int] = (3, 3),
) -> Similarity:
    """Pearson correlation of the HOG descriptors of two maps (Adebayo et al., 2018).

    Each map is min-max normalised to [0, 1], described with
    ``skimage.feature.hog`` (scikit-image's defaults unless given), and the two
    descriptors are correlated.

    Args:
        a: A map (H, W) or a batch of maps (N, H, W), at least one block of cells.
        b: Maps of the same shape.
        orientations: Orientation bins of the HOG.
        pixels_per_cell: Cell size (rows, cols) in pixels.
        cells_per_block: Block size (rows, cols) in cells.

    Returns:
        The correlation in [-1, 1] (a float for one pair, (N,) float64 for a batch); NaN
        where either descriptor is constant (a map with no gradients).

    Example::

        >>> import torch
        >>> from captum_daam.evaluation import hog_similarity
        >>> maps = torch.rand(2, 64, 64)
        >>> hog_similarity(maps, maps)
        tensor([1., 1.], dtype=torch.float64)
    """
    x, y, single = _pairs(a, b)
    feature = require_extra("skimage.feature")
    need = (pixels_per_cell[0] * cells_per_block[0], pixels_per_cell[1] * cells_per_block[1])
    if x.shape[1] < need[0] or x.shape[2] < need[1]:
        raise InvalidInputError(
            f"maps of {x.shape[1]}x{x.shape[2]} pixels are smaller than one HOG block "
            f"({need[0]}x{need[1]}); upsample them to the image size first "
            "(captum_daam.upsample) or pass smaller pixels_per_cell"
        )

    def describe(maps: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                feature.hog(
                    m,
                    orientations=orientations,
                    pixels_per_cell=pixels_per_cell,
                    cells_per_block=cells_per_block,
                    feature_vector=True,
                )
                for m in _unit_range(maps)
            ]
        )

    return _result(_pearson_rows(describe(x), describe(y)), single)


def map_similarities(a: Tensor, b: Tensor, metrics: Sequence[str] = METRICS) -> Dict[str, Tensor]:
    """Several similarity measures of matching maps of two batches at once.

    Args:
        a: Maps (N, 1, H, W) (or (N, H, W)).
        b: Maps of the same shape.
        metrics: Names among ``"spearman"``, ``"ssim"`` and ``"hog"``.

    Returns:
        ``{name: (N,) float64}`` in the order of ``metrics``.

    Example::

        >>> import torch
        >>> from captum_daam.evaluation import map_similarities
        >>> maps = torch.rand(4, 1, 64, 64)
        >>> maps_random = torch.rand(4, 1, 64, 64)   # e.g. after model randomisation
        >>> sims = map_similarities(maps, maps_random)
        >>> sorted(sims), sims["spearman"].shape
        (['hog', 'spearman', 'ssim'], torch.Size([4]))
    """
    functions = {"spearman": spearman, "ssim": ssim, "hog": hog_similarity}
    unknown = [m for m in metrics if m not in functions]
    if unknown:
        raise InvalidInputError(
            f"unknown similarity metric(s) {unknown}; choose from {list(METRICS)}"
        )
    if isinstance(a, Tensor) and a.dim() == 2:
        raise InvalidInputError(
            "map_similarities takes batches (N, 1, H, W); add a batch dimension"
        )
    return {m: torch.as_tensor(functions[m](a, b)) for m in metrics}


__all__ = ["METRICS", "channel_maps", "hog_similarity", "map_similarities", "spearman", "ssim"]
