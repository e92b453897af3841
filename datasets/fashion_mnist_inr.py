"""Build the Fashion-MNIST-INR zoo (DWSNets / Neural Graphs): 70,000 SIRENs, splits 55k / 5k / 10k.

    python datasets/fashion_mnist_inr.py --root DIR_WITH_FASHION_MNIST_IDX_FILES   # -> datasets/fashion-mnist-inr/

Fashion-MNIST's IDX files use MNIST's names (train-images-idx3-ubyte.gz, ...). Resumable.
See datasets/README.md.
"""
import sys

from _run import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("fashion-mnist-inr", default_out="fashion-mnist-inr"))
