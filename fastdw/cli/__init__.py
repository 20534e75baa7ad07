"""The command line: ``python -m fastdw <command>``, one module per command.

Each command module defines ``add_parser(subparsers)``, which registers its options and sets
``run`` (called as ``run(args, parser)``, returning the exit code). Usage errors exit with 2.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Optional, Sequence

COMMANDS = ("bench", "tune", "params", "viz", "compare", "check")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def device_arg(text: str) -> str:
    """'auto', 'cpu' or 'cuda' (optionally 'cuda:N'); checked against this machine."""
    import torch

    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected auto, cpu or cuda[:N], got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected auto, cpu or cuda[:N], got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("cuda requested but no GPU is visible to torch")
    return text


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="python -m fastdw",
        description="fastdw: fast depthwise and depthwise-separable convolutions for PyTorch.")
    parser.add_argument("--version", action="version", version=f"fastdw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.run(args, args.parser) or 0)
