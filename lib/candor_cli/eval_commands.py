"""The ``candor eval`` and ``candor model calibrate`` arguments. Kept apart from what runs them
(``candor_eval.cli``, which loads the models, SciPy and matplotlib), so that every other ``candor``
command starts without loading them."""

from __future__ import annotations

import argparse
from pathlib import Path

from candor_kit.cores import usable_cores


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    """Register ``eval`` and ``model calibrate`` on the ``candor`` parser."""
    evaluate = commands.add_parser("eval", parents=[common], help="measure accuracy and per-group error rates")
    evaluate.add_argument("dataset", type=Path, help="folder of <identity>/<image>")
    evaluate.add_argument("--out", type=Path, default=Path("eval-report"))
    evaluate.add_argument("--pairs", type=Path, default=None, help="pair list (default: DATASET/pairs.csv if present)")
    evaluate.add_argument("--groups", type=Path, default=None, help="group labels (default: DATASET/groups.csv)")
    evaluate.add_argument("--threshold", type=float, default=None, help="operating threshold (default: the model's)")
    evaluate.add_argument("--crop-fallback", action="store_true", help="treat a faceless tight crop as one face")
    evaluate.add_argument("--anchor", action="store_true", help="also run plain dlib on the same images")
    evaluate.add_argument(
        "--model",
        choices=("sface", "dlib-resnet-v1"),
        default="sface",
        help="the model of Candor's pipeline: sface (the default) or dlib's ResNet; --model-pack for a pack's",
    )
    _add_embedding_options(evaluate)
    evaluate.add_argument(
        "--via-stack", action="store_true", help="embed through the running services instead of in-process"
    )

    model = commands.add_parser("model", help="face models").add_subparsers(dest="action", required=True)
    cal = model.add_parser("calibrate", parents=[common], help="set a model's threshold from labelled data")
    cal.add_argument("model", help="model id: sface (the default model), dlib-resnet-v1, or a pack's (--model-pack)")
    cal.add_argument("--dataset", type=Path, required=True)
    cal.add_argument("--target-fmr", type=float, required=True)
    cal.add_argument(
        "--target-fpir",
        type=float,
        default=0.01,
        help="with --per-group: the FPIR of 1:N searches every group must meet too (default 0.01)",
    )
    cal.add_argument("--pairs", type=Path, default=None)
    cal.add_argument("--groups", type=Path, default=None)
    cal.add_argument("--crop-fallback", action="store_true")
    cal.add_argument("--registry", type=Path, default=None, help="registry folder (CANDOR_MODEL_REGISTRY)")
    cal.add_argument(
        "--per-group",
        action="store_true",
        help="the threshold at which every group (groups.csv) meets the target FMR, not only all pairs together",
    )
    cal.add_argument(
        "--leave-out-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="with --per-group: a group too small to measure the targets, left out by name (repeatable; recorded)",
    )
    _add_embedding_options(cal)


def _add_embedding_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--face",
        choices=("centre", "largest"),
        default="centre",
        help="which face of a photo with several is measured: the one nearest the centre (default) or the widest",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=usable_cores(),
        help="processes embedding images (default: every core this process may use)",
    )
    parser.add_argument(
        "--detector", choices=("yunet", "dlib"), default="yunet", help="face finder for dlib-resnet-v1's chips"
    )
    parser.add_argument(
        "--model-pack",
        type=Path,
        default=None,
        help="an ONNX model pack's folder: its detector and recogniser instead of dlib's "
        "(a restricted licence must be accepted in CANDOR_ACCEPT_MODEL_LICENCES)",
    )
