"""Row magnitude: the magnitude reference of the Wanda paper; every output row keeps its largest |w|."""

from pytest_shrinkbench import method
from pytest_shrinkbench.oneshot import keep_rows


@method("row-magnitude", baseline=True)
def row_magnitude(ctx):
    return keep_rows(ctx, {name: w.detach().abs() for name, w in ctx.prunable.items()})
