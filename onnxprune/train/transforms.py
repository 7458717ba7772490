"""Image transforms: to float, resize / crop to the model's size, augment, normalize, fit the layout.

They accept a PIL image or a [C, H, W] (or batched [..., C, H, W]) tensor, so torchvision's datasets
and in-memory npz arrays share them; deterministic ones also run on whole batches at once.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from .layout import Layout


class _Finish:
    """Normalize, then fit the model's layout; returns a plain tensor (not a tv_tensors.Image)."""

    def __init__(self, stats, layout: Layout):
        self.normalize = v2.Normalize(*stats) if stats else None
        self.layout = layout

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.as_subclass(torch.Tensor)
        return self.layout(self.normalize(x) if self.normalize else x)


def _to_float_image():
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


def fixed_size_transform(native: tuple[int, int], layout: Layout, stats, augment: bool):
    """MNIST/CIFAR/npz images: resize only if the model wants another size; CIFAR-style augmentation."""
    steps = _to_float_image()
    if layout.size != native:
        steps.append(v2.Resize(layout.size, antialias=True))
    if augment:
        steps += [v2.RandomCrop(layout.size, padding=max(1, min(layout.size) // 8)), v2.RandomHorizontalFlip()]
    return v2.Compose(steps + [_Finish(stats, layout)])


class _Cover:
    """Resize so the image covers `size` * `ratio` (aspect kept), then center-crop `size`: any photo
    becomes exactly `size`; an image already at `size` is left as it is."""

    def __init__(self, size: tuple[int, int], ratio: float = 1.0):
        self.size, self.ratio = size, ratio

    def __call__(self, image):
        h, w = image.shape[-2:]
        scale = max(self.size[0] / h, self.size[1] / w) * self.ratio
        target = (max(self.size[0], round(h * scale)), max(self.size[1], round(w * scale)))
        if target != (h, w):
            image = v2.functional.resize(image, list(target), antialias=True)
        return v2.functional.center_crop(image, list(self.size))


def folder_transform(layout: Layout, stats, augment: bool):
    """Photos of any size: ImageNet's recipe (random-resized crop / resize to 256/224 + center crop) at
    128 px and up, CIFAR's (pad + random crop) for small images such as Tiny ImageNet's 64 px."""
    size = layout.size
    large = min(size) >= 128
    steps = _to_float_image()
    if augment and large:
        steps.append(v2.RandomResizedCrop(size, antialias=True))
    else:
        steps.append(_Cover(size, 256 / 224 if large else 1.0))
        if augment:
            steps.append(v2.RandomCrop(size, padding=max(1, min(size) // 8)))
    if augment:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + [_Finish(stats, layout)])
