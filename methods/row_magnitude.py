"""Row magnitude: the magnitude reference of the Wanda paper; every output row keeps its largest |w|."""

from pytest_shrinkbench import method
from pytest_shrinkbench.oneshot import keep_fraction, keep_per_row


@method("row-magnitude", baseline=True)
def row_magnitude(ctx):
    keep = keep_fraction(ctx)
    return {name: keep_per_row(w.detach().abs().flatten(1), keep).view_as(w) for name, w in ctx.prunable.items()}
