"""Print a benchmark table (markdown) with the torch build and thread count above it."""
from __future__ import annotations

import torch


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| " + " | ".join(str(h).ljust(widths[i]) for i, h in enumerate(header)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)) + " |")
