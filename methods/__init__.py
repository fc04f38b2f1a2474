"""The five ShrinkBench baselines, a structured one (l1-filter) and a gradual one (gradual-magnitude), one plain file each; installed as ``pytest_shrinkbench.baselines``.

They are also the examples of how to write a method: copy one to ``methods/mine.py``.
"""

from . import global_gradient, global_magnitude, gradual_magnitude, l1_filter, layer_gradient, layer_magnitude, random_pruning  # noqa: F401  (registers)
