"""Build the MNIST-INR zoo (DWSNets / Neural Graphs): 70,000 SIRENs 2-32-32-1, splits 55k / 5k / 10k.

    python datasets/mnist_inr.py --root ../shared/data/mnist            # -> datasets/mnist-inr/
    python datasets/mnist_inr.py --root ../shared/data/mnist --limit 1000   # a quick subset

Resumable: run the same command again after a kill. Same as
``weightspace fit-inrs --source mnist --root DIR --out datasets/mnist-inr``. See datasets/README.md.
"""
import sys

from _run import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("mnist-inr", default_out="mnist-inr"))
