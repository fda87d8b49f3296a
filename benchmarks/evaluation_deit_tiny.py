"""DAAM against its peers on DeiT-Tiny and the 400 real ImageNet images, side by side.

    CAPTUM_DAAM_DATA=../shared/data python benchmarks/evaluation_deit_tiny.py [--out DIR]

Runs ``captum-daam evaluate`` with the settings of docs/evaluation.md: every method on
the same images in one run; of the first ``--limit`` images sorted by file name, tau is
tuned on the even positions (as the "select" half of benchmarks/localization_deit_tiny.py)
and every number reported on the odd positions ("report"); the ground-truth class
explained (the WSOL protocol); deletion / insertion (10 steps, blurred baseline) on the
first ``--faithfulness-images`` report images; Captum's infidelity and sensitivity-max
on the first ``--captum-metrics`` report images; the randomisation sanity checks on the
first ``--sanity`` report images. ScoreCAM (192 masked forward passes per image) runs
separately, beside DAAM and the uniform map, on the first ``--scorecam-limit`` images
(``--parts`` runs either part alone). Records are cached in ``--cache``,
so an interrupted run resumes; tuning and report images are explained alternately, so
a partial run can still be summarised. The defaults are the run of docs/evaluation.md:
all 400 images (200 / 200), deletion / insertion on 64 report images, Captum's metrics
on 16, sanity checks on 4, ScoreCAM on 32 (16 / 16; no Captum metrics: sensitivity
would explain each image ten more times); about 40 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from captum_daam.cli import main as cli
from captum_daam.evaluation.methods import METHODS as ALL_METHODS

#: Every method of the registry but ScoreCAM, which has a run of its own (minutes per image).
METHODS = [name for name in ALL_METHODS if name != "scorecam"]
SCORECAM_RUN = ["daam", "scorecam", "uniform"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CAPTUM_DAAM_DATA", "../shared/data"))
    parser.add_argument("--out", default="docs/evaluation/deit_tiny")
    parser.add_argument("--cache", default="benchmark-cache/evaluation")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--faithfulness-images", type=int, default=64)
    parser.add_argument("--captum-metrics", type=int, default=16)
    parser.add_argument("--sanity", type=int, default=4)
    parser.add_argument("--scorecam-limit", type=int, default=32)
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("main", "scorecam"),
        default=["main", "scorecam"],
        help="the run of every method but ScoreCAM, and/or ScoreCAM's run",
    )
    args = parser.parse_args()
    data = Path(args.data)
    common = [
        "evaluate",
        "--dataset",
        "subset",
        "--root",
        str(data / "imagenet_val_subset"),
        "--model",
        "deit_tiny_patch16_224",
        "--weights",
        str(data / "deit_tiny_patch16_224" / "model.safetensors"),
        "--split",
        "parity",
        "--target",
        "label",
        "--device",
        "cpu",
        "--batch-size",
        "16",
        "--steps",
        "10",
    ]
    code = 0
    if "main" in args.parts:
        code = cli(
            common
            + [
                "--methods",
                *args.methods,
                "--limit",
                str(args.limit),
                "--option",
                "integrated_gradients.n_steps=16",
                "--faithfulness-images",
                str(args.faithfulness_images),
                "--captum-metrics",
                str(args.captum_metrics),
                "--sanity",
                str(args.sanity),
                "--out",
                args.out,
                "--cache",
                str(Path(args.cache) / "main"),
            ]
        )
    if code == 0 and "scorecam" in args.parts:
        # DAAM and the uniform map again on ScoreCAM's images, for paired differences.
        code = cli(
            common
            + [
                "--methods",
                *SCORECAM_RUN,
                "--limit",
                str(args.scorecam_limit),
                "--faithfulness-images",
                str(args.scorecam_limit // 2),
                "--out",
                args.out + "_scorecam",
                "--cache",
                str(Path(args.cache) / "scorecam"),
            ]
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
