"""weightspace evaluate

Metrics of a training run's best model (best.safetensors) on a split of its zoo, or of another zoo
of the same architecture:

  weightspace evaluate runs/nggnn
  weightspace evaluate runs/nggnn --split val --zoo datasets/other-digits-inr
"""
HELP = "evaluate a training run's best model on a split"


def add_arguments(p):
    p.add_argument("run_dir", help="run folder written by weightspace train")
    p.add_argument("--split", default="test", help="train, val or test (default test)")
    p.add_argument("--zoo", help="another zoo of the same architecture (default: the run's zoo)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run(args) -> int:
    import json

    from ..train import evaluate

    m = evaluate(args.run_dir, zoo=args.zoo, split=args.split)
    if args.json:
        print(json.dumps(m))
    else:
        print(f"{args.run_dir} on {args.split}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
    return 0
