"""Small helpers of the ``sweep`` command line: argument checks and the resume hint."""

from __future__ import annotations

import shlex
import sys


def int_at_least(low: int):
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


class ResumeHint:
    """Logging filter: Ray's "Resume experiment with: Tuner.restore(...)" becomes the fishermask
    command that resumes the sweep (Tuner.restore alone would lose the MLflow parent run)."""

    def __init__(self, command: str):
        self.command = command

    def filter(self, record) -> bool:
        if "Tuner.restore(" in str(record.msg):
            record.msg, record.args = (f"the sweep was interrupted; its state is saved. Continue "
                                       f"it with: {self.command}"), ()
        return True


def resume_command(args) -> str:
    again = sys.argv[1:] if sys.argv[1:2] == ["sweep"] else ["sweep", args.file]
    again = [a for a in again if a not in ("--resume", "--restart")] + ["--resume"]
    return "fishermask " + " ".join(shlex.quote(a) for a in again)
