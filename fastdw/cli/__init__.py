"""The command line: ``python -m fastdw <command>``, one module per command.

Each command module defines ``add_parser(subparsers)``, which makes its parser with
``command_parser`` (its module docstring is the description) and adds its options, and ``run``
(called as ``run(args, parser)``, returning the exit code). Usage errors exit with 2.
"""
from __future__ import annotations

import argparse
import importlib
from typing import Optional, Sequence

COMMANDS = ("bench", "tune", "params", "viz", "compare", "check")


def command_parser(sub, name: str, help: str, description: str, run,
                   **kwargs) -> argparse.ArgumentParser:
    """The parser of command ``name``, whose ``run(args, parser)`` does the work."""
    parser = sub.add_parser(name, help=help, description=description,
                            formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    parser.set_defaults(run=run, parser=parser)
    return parser


def _positive(convert, what: str):
    """An argparse type: ``convert(text)``, which must be > 0."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value
    return parse


positive_int = _positive(int, "a positive integer")
positive_float = _positive(float, "a positive number")


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
