"""Argument types and the one error path shared by every ``posefleet`` subcommand."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from posefleet.common.errors import PosefleetError


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` -> (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 353x481, got {text!r}") from None
    if h <= 0 or w <= 0 or h > 8192 or w > 8192:
        raise argparse.ArgumentTypeError(f"input size {text} is out of range (1..8192 per side)")
    return h, w


def report(args: argparse.Namespace, table: str, data: Any) -> None:
    """A benchmark's result: the markdown table printed, and written to ``--markdown``; ``data`` to ``--json``."""
    print(table, end="")
    if getattr(args, "markdown", None):
        args.markdown.write_text(table)
    if getattr(args, "json", None):
        args.json.write_text(json.dumps(data, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    """Run a parsed subcommand; a user error (``PosefleetError``) is one line on stderr and exit status 2."""
    try:
        return int(args.func(args))
    except PosefleetError as exc:
        print(f"posefleet {args.command}: error: {exc}", file=sys.stderr)
        return 2
