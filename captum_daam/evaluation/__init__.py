"""Measuring DAAM maps against ground truth: boxes through preprocessing, mass inside
boxes (the energy-based pointing game)."""

from .boxes import boxes_mask, boxes_through_transform
from .imagenet import ImageNetSubset, load_subset_boxes
from .pointing import energy_in_boxes

__all__ = [
    "ImageNetSubset",
    "boxes_mask",
    "boxes_through_transform",
    "energy_in_boxes",
    "load_subset_boxes",
]
