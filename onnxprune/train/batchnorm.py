"""`--bn-statistics recalibrate`: BatchNormalization's running statistics re-estimated on the training
data, then kept while the weights train (adaptive BatchNorm).

Channel pruning moves the activations a BatchNorm sees, so its trained statistics no longer fit; a
small recovery set unlike the original's data, on the other hand, makes training on batch statistics
(and eval on their running average) drift. One pass in train mode, without gradients, with the
running statistics replaced by the cumulative average over the batches (momentum 1 / k at batch k),
gives statistics that fit the pruned network on this data; training then keeps them.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from ..twin.module import Twin
from .loop import call, to_device


def recalibrate(twin: Twin, dataset, batch_size: int, device: torch.device) -> int:
    """Re-estimate every BatchNormalization's running statistics on `dataset`; then train with them
    kept (twin.ctx.batch_statistics False). Returns the batches read (0: the graph has none)."""
    if not any(n.op_type == "BatchNormalization" for n in twin.facts.nodes):
        return 0
    twin.train()
    twin.ctx.batch_statistics = True
    seen = 0
    with torch.no_grad():
        for x, _ in DataLoader(dataset, batch_size=batch_size):
            seen += 1
            twin.ctx.bn_momentum = 1.0 / seen
            call(twin, to_device(x, device))
    twin.ctx.bn_momentum = None
    twin.ctx.batch_statistics = False
    twin.eval()
    return seen
