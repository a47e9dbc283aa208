"""Command line: `python -m vavae_lab <command> ...`, also under `torchrun -m vavae_lab ...`."""
from __future__ import annotations

import argparse
import sys

from ..errors import VavaeLabError
from .evaluation import add_evaluation_commands
from .stages import add_stage_commands
from .study import add_study_commands


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line: what was typed wrong, the closest command or flag, where help is."""

    def error(self, message: str):
        hint = _close_match(self, message)
        if hint and " (choose from " in message:  # the match says enough; the full list is in --help
            message = message.split(" (choose from ", 1)[0]
        self.exit(2, f"error: {message}{hint} (see `{self.prog} --help`)\n")


def _close_match(parser: argparse.ArgumentParser, message: str) -> str:
    """'; did you mean ...?' for a mistyped command or flag (flags of every command), or how an override is written."""
    import difflib
    import re

    top = parser if parser.prog == "python -m vavae_lab" else None
    words = re.findall(r"invalid choice: '([^']+)'", message) or (
        message.split("unrecognized arguments: ", 1)[1].split() if "unrecognized arguments: " in message else [])
    for word in words:
        if word.startswith("--") and "=" in word and "." in word.split("=", 1)[0]:
            return f"; an override is written without dashes: {word[2:]}"
        known = re.findall(r"'([^']+)'", message.split("choose from", 1)[1]) if "choose from" in message else []
        if not known:
            parsers = [parser] + ([p for a in (top or parser)._actions if isinstance(a, argparse._SubParsersAction)
                                   for p in a.choices.values()])
            known = sorted({o for p in parsers for o in p._option_string_actions})
        close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
        if close:
            return f"; did you mean {close[0]}?"
    return ""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per stage."""
    parser = _Parser(prog="python -m vavae_lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_stage_commands(sub)
    add_evaluation_commands(sub)
    add_study_commands(sub)
    return parser


def _close_progress_bars() -> None:
    """End any progress bar a failed stage left open, so the error starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _user_message(exc: Exception) -> str:
    """The text of a user error; one raised in a DataLoader worker arrives wrapped in the worker's traceback."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


_RESUME_HINT = {
    "train-tokenizer": "resume with the same command plus --resume (the newest checkpoint is kept)",
    "train-dit": "resume with the same command plus --resume (the newest checkpoint is kept)",
    "sample": "run the same sample command again to continue (the PNGs already written are kept)",
    "extract-latents": "run the same command again to continue (finished shards are kept)",
    "extract-features": "run the same command again to continue (finished shards are kept)",
    "reproduce": "run the same command again to continue (finished runs are cached)",
    "evaluate-checkpoints": "run the same command again to continue (finished runs and gFIDs are cached)",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point; user mistakes print one clear line and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except VavaeLabError as exc:
        _close_progress_bars()
        print(f"error: {_user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _close_progress_bars()
        print(f"interrupted; {_RESUME_HINT.get(args.command, 'run the same command again')}", file=sys.stderr)
        return 130
    finally:
        from .. import dist

        dist.cleanup()
    return 0
