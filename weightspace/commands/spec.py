"""weightspace spec"""
HELP = "trace a model and print its weight-space spec"


def add_arguments(p):
    p.add_argument("model", help="MODULE:FACTORY, e.g. weightspace.models:resnet20")
    p.add_argument("--input-shape", required=True, help="example input shape, e.g. 2,3,32,32")
    p.add_argument("--tokens", type=int, default=0, help="integer inputs below this value (token ids)")


def run(args) -> int:
    import torch

    from ..cli import load_factory
    from ..spec import WeightSpaceSpec
    model = load_factory(args.model)()
    shape = tuple(int(s) for s in args.input_shape.split(","))
    x = torch.randint(0, args.tokens, shape) if args.tokens else torch.randn(shape)
    print(WeightSpaceSpec.from_module(model, x))
    return 0
