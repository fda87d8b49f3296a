"""The arguments of ``captum-daam`` and its entry point, :func:`main`.

Only argparse is imported at module level, so ``captum-daam --help`` stays fast; each
command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import DAAMError
from .common import UserError, one_line
from ..image_files import DEFAULT_MAX_PIXELS


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``captum-daam explain | evaluate | demo``."""
    parser = argparse.ArgumentParser(
        prog="captum-daam",
        description="Dynamic Accumulated Attention Maps for timm Vision Transformers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ex = commands.add_parser("explain", help="explain images or folders of images")
    ex.add_argument("paths", nargs="+", metavar="IMAGE_OR_FOLDER")
    ex.add_argument("--model", default=None,
                    help="timm model name (default: the embedded shapes ViT)")
    ex.add_argument("--weights", default=None, help="local .safetensors or .pth weights")
    which = ex.add_mutually_exclusive_group()
    which.add_argument("--target", type=int, default=None, help="class to explain")
    which.add_argument("--topk", type=int, default=1, help="explain the top-k classes")
    ex.add_argument("--out", default="daam-out", help="output folder")
    ex.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ex.add_argument("--batch-size", type=int, default=8)
    ex.add_argument("--gif", action="store_true", help="also write the flow as a GIF")
    ex.add_argument("--html", action="store_true",
                    help="also write viewer.html, an interactive offline flow viewer")
    ex.add_argument("--ssl", action="store_true",
                    help="self-supervised DAAM through a memory bank (needs --bank)")
    ex.add_argument("--bank", default=None, help="MemoryBank file (.safetensors) for --ssl")
    ex.add_argument("--k", type=int, default=20, help="neighbours for --ssl")
    ex.add_argument("--queries", choices=("readout", "all"), default=None,
                    help="decompose the class token's row (readout, the paper) or every "
                         "query (all: pooled models, Swin); default: the model's readout")
    ex.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                    help="skip (and report) images of more than N pixels, checked from the "
                         "file's header before decoding; 0: no cap (default "
                         f"{DEFAULT_MAX_PIXELS:,}, PIL's own limit: about 9459 x 9459)")
    ev = commands.add_parser(
        "evaluate", help="localisation, faithfulness and sanity checks of DAAM and its peers")
    ev.add_argument("--dataset", choices=("subset", "official", "xml", "synthetic"),
                    default="synthetic",
                    help="subset: ROOT/boxes.csv + ROOT/images; official: ROOT holds "
                         "localization.txt, class_labels.txt, image_sizes.txt and --images "
                         "the image folder; xml: ROOT holds per-image XML and --images the "
                         "images; synthetic: the embedded model's shapes (default)")
    ev.add_argument("--root", default=None)
    ev.add_argument("--images", default=None, help="image folder (official, xml)")
    ev.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                    help="refuse images of more than N pixels, checked from the file's "
                         "header before decoding; 0: no cap (default "
                         f"{DEFAULT_MAX_PIXELS:,})")
    ev.add_argument("--num-images", type=int, default=64, help="synthetic images")
    ev.add_argument("--limit", type=int, default=None, help="use the first N images only")
    ev.add_argument("--model", default=None,
                    help="timm model name (default: the embedded shapes ViT)")
    ev.add_argument("--weights", default=None, help="local .safetensors or .pth weights")
    ev.add_argument("--methods", nargs="+", default=None,
                    help="methods to compare (default: every available one)")
    ev.add_argument("--split", choices=("parity", "halves"), default="parity",
                    help="tau is tuned on even positions (by id) and reported on odd ones "
                         "(parity), or on the first and reported on the second half")
    ev.add_argument("--target", choices=("label", "predicted"), default="label")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--steps", type=int, default=14, help="deletion / insertion points")
    ev.add_argument("--no-faithfulness", action="store_true",
                    help="skip deletion / insertion")
    ev.add_argument("--faithfulness-images", type=int, default=None,
                    help="deletion / insertion on the first N evaluation images only "
                         "(default: all evaluation images; never the tuning ones)")
    ev.add_argument("--captum-metrics", type=int, default=0, metavar="N",
                    help="Captum's infidelity and sensitivity-max on the first N evaluation "
                         "images (default 0: sensitivity explains each image 10 more times)")
    ev.add_argument("--option", action="append", metavar="METHOD.NAME=VALUE",
                    help="a method option, e.g. integrated_gradients.n_steps=16 (repeatable)")
    ev.add_argument("--sanity", type=int, default=0,
                    help="run the randomisation sanity checks on N evaluation images")
    ev.add_argument("--sanity-methods", nargs="+", default=None)
    ev.add_argument("--out", default="daam-eval", help="output folder")
    ev.add_argument("--cache", default=None,
                    help="per-image record cache, to resume (default: OUT/cache)")
    ev.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    dm = commands.add_parser("demo", help="the embedded model on synthetic images, offline")
    dm.add_argument("--out", default="daam-demo", help="output folder")
    dm.add_argument("--images", type=int, default=6)
    dm.add_argument("--gif", action="store_true")
    dm.add_argument("--html", action="store_true")
    return parser



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
                print(f"wrote the evaluation to {args.out} "
                      f"({time.perf_counter() - start:.1f} s)")
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
        print(f"captum-daam: error: {where}{error.strerror or one_line(error)}",
              file=sys.stderr)
        return 2
    for record in summary["images"]:
        best = record["explained"][0]
        print(f"{record['file']}: {best['name']} (score {best['score']:.2f})")
    if "localisation" in summary:
        loc = summary["localisation"]
        print(f"mass inside the object boxes: {loc['mean_energy_in_box']:.3f} "
              f"(a uniform map: {loc['mean_box_area_fraction']:.3f})")
    print(f"wrote {len(summary['images'])} explanations to {args.out} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


__all__ = ["build_parser", "main"]
