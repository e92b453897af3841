"""weightspace spec

Trace a model and print its weight-space spec: parameters, symmetry groups and dataflow.

  weightspace spec weightspace.models:SmallCNN --input-shape 2,1,28,28
  weightspace spec weightspace.models:resnet20 --input-shape 2,3,32,32

The model's factory is called without arguments and the model is run once on a random input of
``--input-shape`` (integers below ``--tokens`` when given) before tracing, so a wrong shape is
reported as such (naming the option), not as a tracer failure.
"""
HELP = "trace a model and print its weight-space spec"


def add_arguments(p):
    p.add_argument("model", help="MODULE:FACTORY, e.g. weightspace.models:resnet20")
    p.add_argument("--input-shape", required=True, help="example input shape, e.g. 2,3,32,32")
    p.add_argument("--tokens", type=int, default=0, help="integer inputs below this value (token ids)")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"2,3,32,32"`` -> ``(2, 3, 32, 32)``; anything but positive integers is a ``UsageError``."""
    from ..errors import UsageError

    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise UsageError(f"expected positive integers separated by commas such as 2,3,32,32, got {text!r}",
                         "--input-shape")
    return shape


def run(args) -> int:
    from ..cli import load_factory
    from ..errors import UsageError
    from ._common import preload

    shape = parse_shape(args.input_shape)
    if args.tokens < 0:
        raise UsageError(f"--tokens must be >= 0 (0: float inputs), got {args.tokens}", "--tokens")
    factory = load_factory(args.model, "model")
    preload("torch", "weightspace.spec")
    import torch

    from ..spec import WeightSpaceSpec
    try:
        model = factory()
    except TypeError as e:                       # the factory needs arguments: the user's input, not a bug
        raise UsageError(f"cannot build a model with {args.model}() (spec calls it without arguments): {e}",
                         "model") from e
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{args.model}() returned a {type(model).__name__}, not a torch.nn.Module", "model")
    x = torch.randint(0, args.tokens, shape) if args.tokens else torch.randn(shape)
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    except Exception as e:                       # the model cannot take this input: a wrong shape or dtype
        kind = f"integers below {args.tokens}" if args.tokens else "floats"
        raise UsageError(f"the model fails on an input of shape {shape} ({kind}): {type(e).__name__}: {e}",
                         "--input-shape") from e
    model.train(was)
    print(WeightSpaceSpec.from_module(model, x))
    return 0
