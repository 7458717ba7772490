"""Detection: NonMaxSuppression, RoiAlign."""

from __future__ import annotations

import math

import torch

from ..registry import register


def _corners(boxes, center_point_box):
    """[..., 4] boxes as (x_min, y_min, x_max, y_max) whatever the corner order or centre format."""
    if center_point_box:
        half = boxes[..., 2:] / 2
        return torch.cat([boxes[..., :2] - half, boxes[..., :2] + half], -1)
    y1, x1, y2, x2 = boxes.unbind(-1)
    return torch.stack([torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)], -1)


def _suppresses(corners, iou_threshold):
    """[n, n] bool: box i and box j overlap by more than the threshold (degenerate boxes never do)."""
    lo = torch.maximum(corners[:, None, :2], corners[None, :, :2])
    hi = torch.minimum(corners[:, None, 2:], corners[None, :, 2:])
    sides = hi - lo
    inter = sides[..., 0] * sides[..., 1]
    area = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
    union = area[:, None] + area[None, :] - inter
    valid = (sides > 0).all(-1) & (area[:, None] > 0) & (area[None, :] > 0) & (union > 0)
    return valid & (inter / union > iou_threshold)


def _scalar(t, default):
    return t.reshape(-1)[0].item() if t is not None and t.numel() else default


@register("NonMaxSuppression", since=10)
def non_max_suppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None, *, center_point_box):
    limit = max(int(_scalar(max_output_boxes_per_class, 0)), 0)
    iou, floor = _scalar(iou_threshold, 0.0), _scalar(score_threshold, None)
    picked = []
    for b in range(boxes.shape[0]):
        suppress = _suppresses(_corners(boxes[b], center_point_box), iou)
        for c in range(scores.shape[1]):
            # Highest score first; equal scores keep index order (a stable sort).
            order = torch.sort(scores[b, c], descending=True, stable=True).indices.tolist()
            if floor is not None:
                order = [i for i in order if scores[b, c, i] > floor]
            kept: list[int] = []
            for i in order:
                if len(kept) >= limit:
                    break
                if not any(suppress[i, j] for j in kept):
                    kept.append(i)
            picked += [(b, c, i) for i in kept]
    return torch.tensor(picked, dtype=torch.int64, device=boxes.device).reshape(-1, 3)


def _axis_samples(start, bin_size, bins, grid, size, device):
    """Bilinear taps along one axis for `grid` samples per bin: (low, high, weight_low, weight_high)."""
    steps = torch.arange(bins * grid, device=device, dtype=torch.float64)
    pos = start + (steps // grid) * bin_size + (steps % grid + 0.5) * bin_size / grid
    inside = (pos >= -1.0) & (pos <= size)  # samples beyond one pixel outside the map count as 0
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    edge = low >= size - 1
    low = torch.where(edge, size - 1, low)
    high = torch.where(edge, size - 1, low + 1)
    frac = torch.where(edge, torch.zeros_like(pos), pos - low)
    return low, high, (1 - frac) * inside, frac * inside


def _roi_align_one(feat, box, mode, out_h, out_w, sampling_ratio, half_pixel):
    offset = 0.5 if half_pixel else 0.0
    x0, y0, x1, y1 = (float(v) - offset for v in box)
    width, height = x1 - x0, y1 - y0
    if not half_pixel:  # malformed boxes are forced to 1x1
        width, height = max(width, 1.0), max(height, 1.0)
    grid_h = sampling_ratio or math.ceil(height / out_h)
    grid_w = sampling_ratio or math.ceil(width / out_w)
    ylo, yhi, wyl, wyh = _axis_samples(y0, height / out_h, out_h, grid_h, feat.shape[1], feat.device)
    xlo, xhi, wxl, wxh = _axis_samples(x0, width / out_w, out_w, grid_w, feat.shape[2], feat.device)
    taps = [(ylo, xlo, wyl[:, None] * wxl), (ylo, xhi, wyl[:, None] * wxh),
            (yhi, xlo, wyh[:, None] * wxl), (yhi, xhi, wyh[:, None] * wxh)]
    values = torch.stack([feat.index_select(1, ys).index_select(2, xs) * w.to(feat.dtype) for ys, xs, w in taps])
    c = feat.shape[0]
    if mode == "avg":
        return values.sum(0).reshape(c, out_h, grid_h, out_w, grid_w).sum((2, 4)) / max(grid_h * grid_w, 1)
    return values.amax(0).reshape(c, out_h, grid_h, out_w, grid_w).amax((2, 4))


@register("RoiAlign", since=10)
def roi_align(x, rois, batch_indices, *, coordinate_transformation_mode="output_half_pixel", mode, output_height,
              output_width, sampling_ratio, spatial_scale):  # coordinate_transformation_mode: since 16
    # One RoI at a time: its sampling grid depends on its size when sampling_ratio is 0.
    half_pixel = coordinate_transformation_mode == "half_pixel"
    outs = [_roi_align_one(x[int(b)], (rois[i] * spatial_scale).tolist(), mode, output_height, output_width,
                           sampling_ratio, half_pixel) for i, b in enumerate(batch_indices.tolist())]
    if not outs:
        return x.new_zeros((0, x.shape[1], output_height, output_width))
    return torch.stack(outs)
