"""Helpers for calibration-based one-shot methods (Wanda, SparseGPT and methods written like them).

``layer`` holds one layer's mathematics, with no knowledge of any model; ``walk`` runs a model's blocks in order
over the calibration windows and applies a per-layer rule. Methods import them on their side of the boundary.
"""

from .layer import Inputs, keep_per_row, sparsegpt, wanda_scores
from .walk import keep_fraction, keep_rows, prune_in_order

__all__ = ["Inputs", "keep_fraction", "keep_per_row", "keep_rows", "prune_in_order", "sparsegpt", "wanda_scores"]
