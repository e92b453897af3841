"""weightspace demo"""
HELP = "run the main demo on embedded data (no downloads)"


def add_arguments(p):
    p.add_argument("--out", default="out/demo", help="folder for the demo's files (default: out/demo)")
    p.add_argument("--steps", nargs="*", help="run only these steps")


def run(args) -> int:
    from ..demo import run as demo
    demo(args.out, args.steps)
    return 0
