"""Detection post-processing: NonMaxSuppression."""

from __future__ import annotations

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
