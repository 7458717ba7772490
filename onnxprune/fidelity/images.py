"""A folder of images without labels (no class subfolders) as one image input's samples.

For `compare --data FOLDER`, `train --teacher --dataset imagefolder` and `prune -m taylor --data
FOLDER` when the folder holds the images themselves. Each file is read with Pillow, converted to
the color the input takes, resized to its height and width, scaled to [0, 1], normalized by `mean`
/ `std` per channel, and laid out as the input is. Defaults come from the input's declared shape: a dim of 1 or 3 right after the batch is
NCHW (else last: NHWC), 1 channel is gray and 3 RGB, and the fixed spatial dims are the size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import DataError

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
CHANNELS = {"rgb": 3, "bgr": 3, "gray": 1}


@dataclass(frozen=True)
class ImageOptions:
    size: tuple[int, int] | None = None  # height, width
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str | None = None  # "nchw" | "nhwc"
    color: str | None = None  # "rgb" | "bgr" | "gray"


def image_files(folder: Path) -> list[Path]:
    """The folder's image files, sorted (subfolders are not read)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def folder_images(folder: Path, value: onnx.ValueInfoProto, options: ImageOptions) -> np.ndarray:
    """[N, ...] float32 samples for input `value` from the images in `folder`."""
    from PIL import Image

    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise DataError(f"{folder}: a folder of images feeds a rank-4 image input; '{value.name}' has rank {len(dims)}")
    layout = options.layout or ("nchw" if dims[1] in (1, 3) else "nhwc" if dims[3] in (1, 3) else None)
    if layout is None:
        raise DataError(f"{folder}: cannot tell the layout of input '{value.name}' {dims}: give --layout nchw|nhwc")
    channels, spatial = (dims[1], dims[2:]) if layout == "nchw" else (dims[3], dims[1:3])
    color = options.color or {1: "gray", 3: "rgb"}.get(channels)
    if color is None or (channels is not None and CHANNELS[color] != channels):
        raise DataError(f"{folder}: input '{value.name}' takes {channels} channel(s), not {color} images: "
                        f"give --color {'gray' if channels == 1 else 'rgb|bgr'}")
    size = options.size or (tuple(spatial) if None not in spatial else None)
    if size is None:
        raise DataError(f"{folder}: input '{value.name}' has no fixed height and width: give --image-size HxW")
    files = image_files(folder)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(sorted(SUFFIXES))}); subfolders are not read")
    mean, std = (np.asarray(v, np.float32).reshape(-1) for v in (options.mean, options.std))
    if mean.size not in (1, CHANNELS[color]) or std.size not in (1, CHANNELS[color]) or (std <= 0).any():
        raise DataError(f"--mean / --std: one value or one per channel ({CHANNELS[color]}), std > 0")
    batch = np.stack([_read(Image, path, color, size) for path in files])  # N, H, W, C
    batch = (batch - mean) / std
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2) if layout == "nchw" else batch, dtype=np.float32)


def _read(image, path: Path, color: str, size: tuple[int, int]) -> np.ndarray:
    try:
        with image.open(path) as picture:
            picture = picture.convert("L" if color == "gray" else "RGB").resize((size[1], size[0]), image.BILINEAR)
            array = np.asarray(picture, np.float32) / 255.0
    except OSError as err:
        raise DataError(f"{path}: not a readable image ({err})") from None
    array = array[..., None] if array.ndim == 2 else array
    return array[..., ::-1] if color == "bgr" else array
