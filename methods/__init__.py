"""The five ShrinkBench baselines and a structured one (l1-filter), one plain file each; installed as ``pytest_shrinkbench.baselines``.

They are also the examples of how to write a method: copy one to ``methods/mine.py``.
"""

from . import global_gradient, global_magnitude, l1_filter, layer_gradient, layer_magnitude, random_pruning  # noqa: F401  (registers)
