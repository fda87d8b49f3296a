"""Measuring maps against ground truth and against the model.

* Boxes through preprocessing and the energy-based pointing game (:mod:`.boxes`,
  :mod:`.pointing`); box datasets in the ImageNet layouts and the synthetic shapes
  (:mod:`.imagenet`, :mod:`.datasets`).
* Box localisation, the WSOL protocol: IoU over thresholds, box accuracy at a tuned
  threshold, MaxBoxAcc / MaxBoxAccV2 (:mod:`.localization`).
* Faithfulness: deletion and insertion over patch tokens, Captum's infidelity and
  sensitivity (:mod:`.faithfulness`).
* Sanity checks by model randomisation, with Spearman, SSIM and HOG similarity
  (:mod:`.sanity`, :mod:`.similarity`).

scipy and scikit-image (the ``eval`` extra) are imported only when a function needs them.
"""

from .boxes import boxes_mask, boxes_through_transform
from .datasets import (
    AnnotatedImage,
    BoxDataset,
    SyntheticBoxes,
    collate_boxes,
    imagenet_synsets,
    load_official_boxes,
    load_xml_boxes,
)
from .faithfulness import (
    DeletionInsertion,
    blurred,
    captum_metrics,
    deletion_insertion,
    explain_in_input_space,
    gaussian_perturbation,
    patch_ranks,
)
from .imagenet import ImageNetSubset, load_subset_boxes
from .localization import (
    box_accuracy,
    box_energy,
    box_iou,
    choose_tau,
    largest_component_box,
    largest_component_boxes,
    localization_ious,
    localization_summary,
    max_box_acc,
)
from .pointing import energy_in_boxes
from .sanity import (
    randomization_layers,
    randomization_test,
    randomize_layer,
    sanity_comparison_figure,
    sanity_figure,
    sanity_table_markdown,
)
from .similarity import hog_similarity, map_similarities, spearman, ssim

__all__ = [
    "AnnotatedImage",
    "BoxDataset",
    "DeletionInsertion",
    "ImageNetSubset",
    "SyntheticBoxes",
    "blurred",
    "box_accuracy",
    "box_energy",
    "box_iou",
    "boxes_mask",
    "boxes_through_transform",
    "captum_metrics",
    "choose_tau",
    "collate_boxes",
    "deletion_insertion",
    "energy_in_boxes",
    "explain_in_input_space",
    "gaussian_perturbation",
    "hog_similarity",
    "imagenet_synsets",
    "largest_component_box",
    "largest_component_boxes",
    "load_official_boxes",
    "load_subset_boxes",
    "load_xml_boxes",
    "localization_ious",
    "localization_summary",
    "map_similarities",
    "max_box_acc",
    "patch_ranks",
    "randomization_layers",
    "randomization_test",
    "randomize_layer",
    "sanity_comparison_figure",
    "sanity_figure",
    "sanity_table_markdown",
    "spearman",
    "ssim",
]
