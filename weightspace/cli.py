"""The ``weightspace`` command: one subcommand per module in ``weightspace/commands``.

A user error (``weightspace.errors.user_errors()``), a bad argument or Ctrl-C ends the command with
one line on stderr, ``weightspace <cmd>: error: <what>``, and exit code 2; a traceback means a bug.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UsageError, user_errors

COMMANDS = ["demo", "spec", "fit-inrs", "make-zoo", "zoo-check", "merge", "train", "evaluate"]
EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): ``weightspace <cmd>: error: <what>``."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def load_factory(text: str, option: str = "--model"):
    """``package.module:attr.attr`` -> the callable it names (a model factory or class)."""
    module, _, attr = text.partition(":")
    if not module or not attr:
        raise UsageError(f"expected MODULE:FACTORY such as weightspace.models:SmallCNN, got {text!r}", option)
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise UsageError(f"cannot import module {module!r}: {e}", option) from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{module!r} has no attribute {attr!r}", option)
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{text!r} is a {type(obj).__name__}, not a model factory or class", option)
    return obj


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = _Parser(prog="weightspace", description="Learning on neural-network weights.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    modules = {}
    for name in COMMANDS:
        mod = importlib.import_module(f"weightspace.commands.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=mod.HELP, description=(mod.__doc__ or "").strip() or mod.HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        modules[name] = mod
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    from .interrupts import deferred_sigint
    interrupted = False
    try:
        with deferred_sigint():
            parser, modules = build_parser()
            args = parser.parse_args(argv)
    except KeyboardInterrupt:
        interrupted = True
    mod = modules[args.command]
    prog = f"weightspace {args.command}"
    try:
        if interrupted:
            raise KeyboardInterrupt
        return mod.run(args) or 0
    except KeyboardInterrupt:
        hint = "; rerun the same command to resume" if getattr(mod, "RESUMABLE", False) else ""
        print(f"{prog}: interrupted{hint}", file=sys.stderr)
        return EXIT_USER_ERROR
    except user_errors() as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR


def _one_line(e: BaseException) -> str:
    text = str(e)
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in text:
        text = f"{e.strerror or text} ({e.filename})"
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
