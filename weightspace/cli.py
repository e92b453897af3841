"""The ``weightspace`` command."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weightspace", description="Learning on neural-network weights.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main demo on embedded data (no downloads)")
    demo.add_argument("--out", default="out/demo", help="folder for the demo's files (default: out/demo)")
    spec = sub.add_parser("spec", help="trace a model and print its weight-space spec")
    spec.add_argument("model", help="MODULE:FACTORY, e.g. weightspace.models:resnet20")
    spec.add_argument("--input-shape", required=True, help="example input shape, e.g. 2,3,32,32")
    spec.add_argument("--tokens", type=int, default=0, help="integer inputs below this value (token ids)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run
        run(args.out)
    elif args.command == "spec":
        return _spec(args)
    return 0


def load_factory(text: str):
    import importlib
    module, _, attr = text.partition(":")
    if not attr:
        raise SystemExit(f"expected MODULE:FACTORY, got {text!r}")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _spec(args) -> int:
    import torch

    from .spec import WeightSpaceSpec
    model = load_factory(args.model)()
    shape = tuple(int(s) for s in args.input_shape.split(","))
    x = torch.randint(0, args.tokens, shape) if args.tokens else torch.randn(shape)
    print(WeightSpaceSpec.from_module(model, x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
