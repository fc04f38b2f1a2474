"""Row magnitude in the 2:4 pattern: of every 4 consecutive weights of a row, the 2 largest |w| stay."""

from pytest_shrinkbench import method
from pytest_shrinkbench.oneshot import keep_rows


@method("row-magnitude-2of4", baseline=True, pattern="2:4")
def row_magnitude_2of4(ctx):
    return keep_rows(ctx, {name: w.detach().abs() for name, w in ctx.prunable.items()})
