"""Control flow: If, Loop, Scan. Their bodies arrive compiled (program.Subgraph): calling one with its
formal inputs returns its outputs as a list, reading outer-scope values itself."""

from __future__ import annotations

import torch

from ..registry import register


@register("If", since=1)
def if_(cond, *, then_branch, else_branch):
    return tuple((then_branch if bool(cond) else else_branch)())


@register("Loop", since=1)
def loop(trip_count=None, cond=None, *carried, body):
    device = next((t.device for t in (trip_count, cond, *carried) if isinstance(t, torch.Tensor)), None)
    limit = int(trip_count) if trip_count is not None else None
    going = bool(cond) if cond is not None else True
    carried, scans, i = list(carried), [], 0
    while going and (limit is None or i < limit):
        out = body(torch.tensor(i, dtype=torch.int64, device=device), torch.tensor(going, device=device), *carried)
        going, carried = bool(out[0]), out[1:1 + len(carried)]
        scans.append(out[1 + len(carried):])
        i += 1
    if not scans:  # no iteration: each scan output is empty (its element shape is unknown)
        n_scans = len(body.program.outputs) - 1 - len(carried)
        return tuple(carried) + tuple(torch.empty(0, device=device) for _ in range(n_scans))
    # Scan outputs stack the per-iteration values along a new first axis.
    return tuple(carried) + tuple(torch.stack(list(values)) for values in zip(*scans))


def _axes(values, n, rank_of):
    return [(values[i] if values and i < len(values) else 0) % max(rank_of(i), 1) for i in range(n)]


@register("Scan", since=9)
def scan(*inputs, body, num_scan_inputs, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None):
    n_state = len(inputs) - num_scan_inputs
    states, xs = list(inputs[:n_state]), inputs[n_state:]
    in_axes = _axes(scan_input_axes, len(xs), lambda i: xs[i].dim())
    xs = [x.movedim(a, 0) for x, a in zip(xs, in_axes)]
    xs = [x.flip(0) if scan_input_directions and scan_input_directions[i] else x for i, x in enumerate(xs)]
    steps = []
    for t in range(xs[0].shape[0]):
        out = body(*states, *[x[t] for x in xs])
        states = out[:n_state]
        steps.append(out[n_state:])
    ys = [torch.stack(list(values)) for values in zip(*steps)]
    ys = [y.flip(0) if scan_output_directions and scan_output_directions[i] else y for i, y in enumerate(ys)]
    out_axes = _axes(scan_output_axes, len(ys), lambda i: ys[i].dim())
    return tuple(states) + tuple(y.movedim(0, a) for y, a in zip(ys, out_axes))


@register("Scan", since=8)
def scan_8(sequence_lens, *inputs, body, num_scan_inputs, directions=None):
    # Opset 8: every input has a batch axis 0 and scans along axis 1; run opset 9's Scan per batch item.
    if sequence_lens is not None and bool((sequence_lens != inputs[-1].shape[1]).any()):
        raise NotImplementedError("Scan-8 with sequence_lens shorter than the sequence axis")
    per_item = [scan(*[x[b] for x in inputs], body=body, num_scan_inputs=num_scan_inputs,
                     scan_input_directions=directions) for b in range(inputs[0].shape[0])]
    return tuple(torch.stack(list(values)) for values in zip(*per_item))
