"""The arguments of ``captum-daam`` and its entry point, :func:`main`.

Only argparse and the package's light leaves (:mod:`~captum_daam.errors`,
:mod:`~captum_daam.image_files`) are imported at module level, so ``captum-daam --help``
answers at once; each command imports torch, timm and matplotlib when it runs.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import DAAMError
from ..image_files import DEFAULT_MAX_PIXELS

EXAMPLES = """\
examples:
  captum-daam demo
      the embedded model on freshly drawn shapes, offline: figures, maps, summary.json
  captum-daam explain photos/ --model deit_tiny_patch16_224 --weights deit_tiny.safetensors --html
      a timm model with local weights; --html adds the interactive viewer.html
  captum-daam explain cat.jpg --model deit_small_patch16_224 --target 281
      class index 281 (ImageNet's "tabby cat"); without --weights the weights come
      from the Hugging Face hub (needs the network)
  captum-daam explain shapes/ --topk 3 --gif
      the three most probable classes of the embedded model, each flow also as a GIF
  captum-daam evaluate --num-images 32 --methods daam rollout gradcam --sanity 4
      localisation, faithfulness and sanity checks on synthetic shapes, offline
  torchrun --nproc-per-node 2 -m captum_daam.cli evaluate --dataset subset --root data/
      the same, sharded over two processes

Run "captum-daam COMMAND --help" for the options of a command.
"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (unless the help already says it); the
    description and examples printed as written."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        if "default" in text or action.default is None:
            return text
        if action.nargs == 0 and action.default is False:  # a flag
            return f"{text} (default: off)"
        return super()._get_help_string(action)


def _command(commands, name: str, summary: str, description: str, examples: str = ""):
    return commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 79),
        epilog=examples or None,
        formatter_class=HelpFormatter,
    )


_DEVICE = "where to run: auto takes CUDA when there is one"
_MODEL = (
    "timm model name, e.g. deit_tiny_patch16_224; without --weights its weights come "
    "from the Hugging Face hub (network) (default: the embedded shapes ViT, offline)"
)
_WEIGHTS = (
    "local .safetensors or .pth weights for --model (read safely; default: timm's "
    "pretrained weights, or the embedded model's without --model)"
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``captum-daam explain | evaluate | demo``.

    Every option has a help text with its default, and the top-level help ends with
    examples. Building it imports nothing heavy (checked by ``tests/test_cli.py``).

    Returns:
        The ``argparse.ArgumentParser``.

    Example::

        >>> build_parser().parse_args(["explain", "cat.jpg", "--target", "281"]).target
        281
    """
    parser = argparse.ArgumentParser(
        prog="captum-daam",
        description=textwrap.fill(
            "Dynamic Accumulated Attention Maps (DAAM) for timm Vision Transformers: how a "
            "ViT's evidence for a class builds up, block by block.",
            79,
        ),
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _explain_arguments(
        _command(
            commands,
            "explain",
            "explain images or folders of images",
            "Explain each image with DAAM: per image a flow figure (<name>_flow.png), the raw "
            "maps (<name>_maps.npz) and optionally a GIF; summary.json for all of them.",
            "example:\n  captum-daam explain photos/ --model deit_tiny_patch16_224 "
            "--weights deit_tiny.safetensors --topk 3 --html",
        )
    )
    _evaluate_arguments(
        _command(
            commands,
            "evaluate",
            "localisation, faithfulness and sanity checks of DAAM and its peers",
            "Every method on the same images: the map threshold tau is tuned on one split and "
            "the numbers reported on the other; tables, plots and evaluation.json in --out. "
            "Runs sharded under torchrun.",
            "example:\n  captum-daam evaluate --num-images 32 --methods daam rollout gradcam "
            "--sanity 4",
        )
    )
    dm = _command(
        commands,
        "demo",
        "the embedded model on synthetic images, offline",
        "Draw shapes in clutter, explain them with the embedded ViT and score the "
        "maps against the objects' exact boxes; nothing is downloaded.",
        "example:\n  captum-daam demo --images 4 --html",
    )
    dm.add_argument("--out", default="daam-demo", metavar="DIR", help="output folder")
    dm.add_argument(
        "--images",
        type=int,
        default=6,
        metavar="N",
        help="how many synthetic images to draw and explain",
    )
    _picture_flags(dm)
    return parser


def _picture_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--gif", action="store_true", help="also write each flow as a GIF")
    command.add_argument(
        "--html",
        action="store_true",
        help="also write viewer.html, an interactive offline flow viewer",
    )


def _explain_arguments(ex: argparse.ArgumentParser) -> None:
    ex.add_argument(
        "paths",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files, or folders whose images are all explained",
    )
    ex.add_argument("--model", default=None, metavar="NAME", help=_MODEL)
    ex.add_argument("--weights", default=None, metavar="PATH", help=_WEIGHTS)
    which = ex.add_mutually_exclusive_group()
    which.add_argument(
        "--target",
        type=int,
        default=None,
        metavar="CLASS_INDEX",
        help="the class index to explain for every image, e.g. 281 "
        "(ImageNet's 'tabby cat') (default: each image's --topk "
        "predicted classes)",
    )
    which.add_argument(
        "--topk",
        type=int,
        default=1,
        metavar="N",
        help="explain each image's N most probable classes",
    )
    ex.add_argument("--out", default="daam-out", metavar="DIR", help="output folder")
    ex.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help=_DEVICE)
    ex.add_argument(
        "--batch-size",
        type=int,
        default=8,
        metavar="N",
        help="images explained per forward and backward pass",
    )
    _picture_flags(ex)
    ex.add_argument(
        "--ssl",
        action="store_true",
        help="self-supervised DAAM: explain each image's k-NN vote in a memory bank (needs --bank)",
    )
    ex.add_argument(
        "--bank",
        default=None,
        metavar="FILE",
        help="MemoryBank file (.safetensors) for --ssl (default: none)",
    )
    ex.add_argument("--k", type=int, default=20, help="neighbours of the k-NN vote for --ssl")
    ex.add_argument(
        "--queries",
        choices=("readout", "all"),
        default=None,
        help="decompose the class token's row (readout, the paper) or every "
        "query (all: pooled models, Swin) (default: the model's readout)",
    )
    ex.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="skip (and report) images of more than N pixels, checked from the "
        "file's header before decoding; 0: no cap (default "
        f"{DEFAULT_MAX_PIXELS:,}, PIL's own limit: about 9459 x 9459)",
    )


def _evaluate_arguments(ev: argparse.ArgumentParser) -> None:
    ev.add_argument(
        "--dataset",
        choices=("subset", "official", "xml", "synthetic"),
        default="synthetic",
        help="subset: ROOT/boxes.csv + ROOT/images; official: ROOT holds "
        "localization.txt, class_labels.txt, image_sizes.txt and --images "
        "the image folder; xml: ROOT holds per-image XML and --images the "
        "images; synthetic: the embedded model's shapes, drawn offline",
    )
    ev.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help="the dataset's folder for subset, official and xml (default: none; "
        "synthetic needs none)",
    )
    ev.add_argument(
        "--images",
        default=None,
        metavar="DIR",
        help="the image folder for official and xml (default: none)",
    )
    ev.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="refuse images of more than N pixels, checked from the file's "
        f"header before decoding; 0: no cap (default {DEFAULT_MAX_PIXELS:,})",
    )
    ev.add_argument(
        "--num-images",
        type=int,
        default=64,
        metavar="N",
        help="how many synthetic images (--dataset synthetic)",
    )
    ev.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="use the first N images only (default: all)",
    )
    ev.add_argument("--model", default=None, metavar="NAME", help=_MODEL)
    ev.add_argument("--weights", default=None, metavar="PATH", help=_WEIGHTS)
    ev.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="methods to compare, e.g. daam rollout chefer gradcam "
        "integrated_gradients (default: every available one)",
    )
    ev.add_argument(
        "--split",
        choices=("parity", "halves"),
        default="parity",
        help="tau is tuned on even positions (by id) and reported on odd ones "
        "(parity), or on the first and reported on the second half",
    )
    ev.add_argument(
        "--target",
        choices=("label", "predicted"),
        default="label",
        help="which class index each map explains: the annotated label or the "
        "model's predicted class",
    )
    ev.add_argument(
        "--batch-size", type=int, default=16, metavar="N", help="images explained per pass"
    )
    ev.add_argument(
        "--steps", type=int, default=14, metavar="N", help="deletion / insertion points"
    )
    ev.add_argument("--no-faithfulness", action="store_true", help="skip deletion / insertion")
    ev.add_argument(
        "--faithfulness-images",
        type=int,
        default=None,
        metavar="N",
        help="deletion / insertion on the first N evaluation images only "
        "(default: all evaluation images; never the tuning ones)",
    )
    ev.add_argument(
        "--captum-metrics",
        type=int,
        default=0,
        metavar="N",
        help="Captum's infidelity and sensitivity-max on the first N evaluation "
        "images (sensitivity explains each image 10 more times)",
    )
    ev.add_argument(
        "--option",
        action="append",
        metavar="METHOD.NAME=VALUE",
        help="a method option, e.g. integrated_gradients.n_steps=16 (repeatable; default: none)",
    )
    ev.add_argument(
        "--sanity",
        type=int,
        default=0,
        metavar="N",
        help="run the randomisation sanity checks on N evaluation images",
    )
    ev.add_argument(
        "--sanity-methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="methods of the sanity checks (default: those of --methods but scorecam)",
    )
    ev.add_argument("--out", default="daam-eval", metavar="DIR", help="output folder")
    ev.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="per-image record cache, to resume (default: OUT/cache)",
    )
    ev.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help=_DEVICE)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``).

    Args:
        argv: The arguments after the program name.

    Returns:
        The exit status: 0, or 2 after a user error (printed as one line).

    Example::

        >>> main(["demo", "--out", "daam-demo", "--images", "4"])
        0
    """
    args = build_parser().parse_args(argv)
    from .common import UserError, one_line  # after parsing: --help imports nothing heavy

    try:
        start = time.perf_counter()
        if args.command == "evaluate":
            if args.batch_size < 1:
                raise UserError("--batch-size must be at least 1")
            from .evaluate import evaluate_command

            result = evaluate_command(args)
            if "table" in result:
                from ..evaluation.runner import markdown_table

                print(markdown_table(result["table"]))  # type: ignore[arg-type]
                print(f"wrote the evaluation to {args.out} ({time.perf_counter() - start:.1f} s)")
            return 0
        from .explain import demo, explain_command

        if args.command == "demo":
            summary = demo(Path(args.out), args.images, gif=args.gif, html=args.html)
        else:
            summary = explain_command(args)
        for line in summary["skipped"]:
            print(f"captum-daam: {line}", file=sys.stderr)
        if not summary["images"]:
            raise UserError("none of the images could be read")
    except DAAMError as error:  # every user error: one line, status 2
        print(f"captum-daam: error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # writing the outputs (disk full, permissions changed)
        where = f"{error.filename}: " if error.filename else ""
        print(f"captum-daam: error: {where}{error.strerror or one_line(error)}", file=sys.stderr)
        return 2
    for record in summary["images"]:
        best = record["explained"][0]
        print(f"{record['file']}: {best['name']} (score {best['score']:.2f})")
    if "localisation" in summary:
        loc = summary["localisation"]
        print(
            f"mass inside the object boxes: {loc['mean_energy_in_box']:.3f} "
            f"(a uniform map: {loc['mean_box_area_fraction']:.3f})"
        )
    print(
        f"wrote {len(summary['images'])} explanations to {args.out} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0


__all__ = ["build_parser", "main"]
