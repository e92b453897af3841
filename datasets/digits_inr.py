"""Build the digits-INR zoo: one SIREN per scikit-learn digit (1,797 INRs, 8x8), no files needed.

    python datasets/digits_inr.py          # -> datasets/digits-inr/  (about 10 s)

See datasets/README.md.
"""
import sys

from _run import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("digits-inr", default_out="digits-inr"))
