"""Measuring maps against ground truth and against the model.

* Boxes through preprocessing and the energy-based pointing game (:mod:`.boxes`,
  :mod:`.pointing`); one annotation record and its readers for the ImageNet layouts
  (:mod:`.annotations`), box datasets over them and the synthetic shapes
  (:mod:`.datasets`, :mod:`.imagenet`).
* Box localisation, the WSOL protocol: IoU over thresholds, box accuracy at a tuned
  threshold, MaxBoxAcc / MaxBoxAccV2 (:mod:`.localization`).
* Faithfulness: deletion and insertion over patch tokens, Captum's infidelity and
  sensitivity (:mod:`.faithfulness`).
* Sanity checks by model randomisation, with Spearman, SSIM and HOG similarity
  (:mod:`.sanity`, :mod:`.similarity`).
* The harness (:mod:`.runner`): every method of the registry (:mod:`.methods`) on the
  same images, cached per image (:mod:`.cache`), run by :mod:`.loop` and
  :mod:`.measure`, summarised by :mod:`.statistics` and written out by :mod:`.reports`
  and :mod:`.plotting`; the tuning / report split and the sanity loop of
  ``captum-daam evaluate`` (:mod:`.protocol`). Maps have one shape, (N, 1, h, w)
  (:func:`.similarity.channel_maps`).

scipy and scikit-image (the ``eval`` extra) are imported only when a function needs them.
"""

from .annotations import (
    AnnotatedImage,
    imagenet_synsets,
    load_official_boxes,
    load_subset_boxes,
    load_xml_boxes,
)
from .boxes import boxes_mask, boxes_through_transform
from .datasets import BoxDataset, SyntheticBoxes, collate_boxes
from .faithfulness import (
    DeletionInsertion,
    blurred,
    captum_metrics,
    deletion_insertion,
    explain_in_input_space,
    gaussian_perturbation,
    patch_ranks,
)
from .imagenet import ImageNetSubset
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
from .protocol import (
    SPLITS,
    OnDevice,
    interleave,
    item_id,
    sanity_checks,
    split_tuning_and_report,
)
from .sanity import (
    randomization_layers,
    randomization_test,
    randomize_layer,
    sanity_comparison_figure,
    sanity_figure,
    sanity_table_markdown,
)
from .similarity import channel_maps, hog_similarity, map_similarities, spearman, ssim

__all__ = [
    "SPLITS",
    "AnnotatedImage",
    "BoxDataset",
    "DeletionInsertion",
    "ImageNetSubset",
    "OnDevice",
    "SyntheticBoxes",
    "blurred",
    "box_accuracy",
    "box_energy",
    "box_iou",
    "boxes_mask",
    "boxes_through_transform",
    "captum_metrics",
    "channel_maps",
    "choose_tau",
    "collate_boxes",
    "deletion_insertion",
    "energy_in_boxes",
    "explain_in_input_space",
    "gaussian_perturbation",
    "hog_similarity",
    "imagenet_synsets",
    "interleave",
    "item_id",
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
    "sanity_checks",
    "sanity_comparison_figure",
    "sanity_figure",
    "sanity_table_markdown",
    "spearman",
    "split_tuning_and_report",
    "ssim",
]
