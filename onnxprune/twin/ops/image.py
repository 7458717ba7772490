"""ImageDecoder: encoded bytes -> [H, W, C] uint8, decoded by torchvision (JPEG, PNG, WebP, GIF; other
formats fail at run time naming the node)."""

from __future__ import annotations

import torch

from ..registry import register


def _luma(rgb):
    # ITU-R 601-2 luma in 16-bit fixed point, rounded: Pillow's RGB -> L, which onnx's reference uses.
    r, g, b = rgb.long().unbind(-1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(-1)


@register("ImageDecoder", since=20)
def image_decoder(encoded, *, pixel_format):
    from torchvision.io import ImageReadMode, decode_image  # only models that decode images pay the import

    image = decode_image(encoded.cpu(), ImageReadMode.RGB).to(encoded.device).permute(1, 2, 0)  # HWC
    if pixel_format == "Grayscale":
        return _luma(image)
    return image.flip(-1) if pixel_format == "BGR" else image
