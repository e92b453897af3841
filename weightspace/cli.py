"""The ``weightspace`` command: one subcommand per module in ``weightspace/commands``."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["demo", "spec", "fit-inrs", "make-zoo", "merge"]


def load_factory(text: str):
    """``package.module:attr.attr`` -> the object (a model factory or class)."""
    module, _, attr = text.partition(":")
    if not attr:
        raise SystemExit(f"expected MODULE:FACTORY, got {text!r}")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weightspace", description="Learning on neural-network weights.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in COMMANDS:
        mod = importlib.import_module(f"weightspace.commands.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=mod.HELP, description=(mod.__doc__ or "").strip() or mod.HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        modules[name] = mod
    args = parser.parse_args(argv)
    return modules[args.command].run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
