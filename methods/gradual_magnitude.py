"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune"): an iterative baseline.

Global magnitude pruning applied 4 times within the suite's fine-tuning budget: before fine-tuning
and after 3 optimizer steps evenly spread over its first half (Zhu & Gupta prune every Δt steps),
with the whole-model compression raised along the cubic schedule up to the requested ratio (the
harness computes the schedule: see ``pytest_shrinkbench.run.gradual.gradual_schedule``). Pruned weights are exactly zero, so ranking the
current |w| keeps every pruned weight pruned: no regrowth.
"""

from pytest_shrinkbench import method


@method("gradual-magnitude", baseline=True, steps=4)
def gradual_magnitude(ctx):
    return ctx.keep_top({name: w.detach().abs() for name, w in ctx.prunable.items()})
