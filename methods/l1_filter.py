"""L1-norm filter pruning (after Li et al. 2017, "Pruning Filters for Efficient ConvNets"): a structured baseline.

Whole filters (conv output channels) and whole rows (linear output features) with the smallest
L1 norm go first, so the masks remove output channels and the harness's structured FLOPs
accounting credits the consumer layers too.

How it reaches the requested whole-model compression exactly (the harness allows 0.5%):

* Filters are ranked within their layer by L1 norm, as Li et al. do. To rank filters of all layers
  together, each L1 norm is divided by the mean L1 norm of its layer's filters, so layers of
  different scale and fan-in compare fairly and each layer loses roughly the same fraction of its
  filters, more where its norms spread more. (Li et al. chose each layer's ratio by a sensitivity
  analysis; one relative ranking needs no per-model tuning, which a benchmark needs.)
* The last prunable layer (the classifier: its rows are the classes) keeps all its rows, and every
  other layer keeps at least its strongest filter, so no layer is cut off entirely.
* Removing a filter also removes the weights that read its output channel in the consumer layers
  (found by ``torch.fx`` tracing, as for the structured FLOPs): they would multiply a removed
  channel, so keeping them would spend the parameter budget on dead weights. They count towards
  the weights removed. Past a depthwise conv (MobileNetV2's expand → depthwise → project), a
  removed expand filter takes the depthwise filter reading it and the project columns reading
  that with it, and a removed depthwise filter takes its project columns.
* Whole filters (with their consumer columns) are removed, weakest first, while they fit in the
  number of weights to remove.
  The first filter that does not fit entirely is pruned *partly*: its smallest weights, as many as
  are still missing (when the filter alone has fewer live weights than are missing, all of them
  go and the next filter in order is tried). Usually one filter is thus unstructured.
* If removing every removable filter is still not enough (very high ratios, or a model whose
  classifier holds most weights), the rest comes from the smallest remaining individual weights
  of the whole model (global magnitude), so the case is still compared at the requested ratio.
  The row's ``channels_removed`` says how much of the result is structured.
"""

import torch

from pytest_shrinkbench import method
from pytest_shrinkbench.measure.structured import channel_links
from pytest_shrinkbench.prunable import prunable_modules


@method("l1-filter", baseline=True)
def l1_filter(ctx):
    names = list(ctx.prunable)
    weights = {n: ctx.prunable[n].detach() for n in names}
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    missing = sum(w.numel() for w in weights.values()) - ctx.keep_budget()
    if missing <= 0:
        return masks
    consumers = {}  # producer parameter -> [(consumer parameter, input columns per channel, consumer is depthwise)]
    by_module = prunable_modules(ctx.model)
    for module, link in (channel_links(ctx.model) or {}).items():
        for producer in (link.producer, *link.through):  # a depthwise conv on the way removes the channel too
            consumers.setdefault(by_module[producer], []).append((by_module[module], link.group, link.depthwise))
    filters = []  # (L1 norm relative to its layer's mean, layer order, filter index)
    for order, name in enumerate(names[:-1]):
        norms = weights[name].reshape(weights[name].shape[0], -1).abs().sum(dim=1)
        scores = norms / norms.mean().clamp_min(torch.finfo(norms.dtype).tiny)
        strongest = int(scores.argmax())
        filters += [(float(s), order, i) for i, s in enumerate(scores.tolist()) if i != strongest]
    for _score, order, index in sorted(filters):
        if missing == 0:
            break
        name = names[order]
        row = masks[name].view(masks[name].shape[0], -1)[index]
        # (out, in, ...) viewed as (out, channels, columns per channel, rest): the consumer's inputs from this filter;
        # a depthwise consumer's input from it is its filter ``index`` (which then is a removed channel of its own)
        columns = [masks[c].view(masks[c].shape[0], -1)[index] if depthwise
                   else masks[c].view(masks[c].shape[0], masks[c].shape[1] // g, g, -1)[:, index]
                   for c, g, depthwise in consumers.get(name, [])]
        fresh = int(row.sum()) + sum(int(c.sum()) for c in columns)
        if fresh <= missing:
            row.fill_(False)
            for column in columns:
                column.fill_(False)
            missing -= fresh
        else:  # the budget ends inside this filter: drop its smallest live weights only
            live = int(row.sum())
            drop = min(missing, live)
            values = torch.where(row, weights[name].reshape(weights[name].shape[0], -1)[index].abs(), -1.0)
            row[torch.topk(values, k=drop + row.numel() - live, largest=False).indices] = False
            missing -= drop
    if missing > 0:  # every removable filter is gone: the rest by global magnitude over what is left
        scores = {n: torch.where(masks[n], weights[n].abs(), torch.full_like(weights[n], -1.0)) for n in names}
        return ctx.keep_top(scores)
    return masks
