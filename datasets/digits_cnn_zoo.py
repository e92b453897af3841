"""Build a small CNN zoo on digits for generalization prediction (Small CNN Zoo architecture).

    python datasets/digits_cnn_zoo.py                    # 200 models -> datasets/digits-cnn-zoo/
    python datasets/digits_cnn_zoo.py --num-models 1000

Same as ``weightspace make-zoo --out datasets/digits-cnn-zoo``. See datasets/README.md.
"""
import sys
from pathlib import Path

from weightspace.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", str(Path(__file__).resolve().parent / "digits-cnn-zoo")]
    sys.exit(main(["make-zoo", *args]))
