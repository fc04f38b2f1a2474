"""Global magnitude pruning: drop the smallest |w| across all prunable layers at once.

Per parameter the strongest baseline in ShrinkBench; it tends to prune wide late layers hardest,
which saves fewer FLOPs than the same compression spread evenly (see layer-magnitude).
"""

from pytest_shrinkbench import method


@method("global-magnitude", baseline=True)
def global_magnitude(ctx):
    return ctx.keep_top({name: w.detach().abs() for name, w in ctx.prunable.items()})
