"""Datasets for training and evaluation, through torchvision's own loaders on a local folder.

Nothing is downloaded. Every dataset yields (image, label) with the image already in the model's
layout (see layout.py): normalized with the dataset's usual mean/std, resized when the model fixes a
different size, and augmented (random crop + flip) when asked, which is the default for CIFAR.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets as tvd

from ..errors import DataError
from . import DATASETS
from .layout import plan_layout
from .transforms import fixed_size_transform, folder_transform

# Per-channel (mean, std) of each training set, the values their reference code normalizes with.
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet's
}
AUGMENT_BY_DEFAULT = {"cifar10", "cifar100", "imagefolder"}
# An npz split is transformed once up front when it fits in this many float32 values (about 1 GB).
PRECOMPUTE_LIMIT = 2**28


# ----- torchvision loaders ------------------------------------------------------------------------
class _LocalCIFAR10(tvd.CIFAR10):
    """CIFAR-10 from its python pickle batches. torchvision pins the official files' md5 sums; a local
    copy in the same format (a subset, a re-pickled batch) is just as readable, so only existence of
    the split's files is checked."""

    def _check_integrity(self) -> bool:
        files = self.train_list if self.train else self.test_list
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f, _ in files)

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        if not os.path.isfile(path):
            self.classes = list(range(max(self.targets) + 1))  # meta only names the classes
        else:
            with open(path, "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _LocalCIFAR100(_LocalCIFAR10, tvd.CIFAR100):
    pass


class _ClassFolder(tvd.ImageFolder):
    """ImageFolder whose class indices come from the training split (a val split missing a class
    must not shift every later label)."""

    def __init__(self, root, class_to_idx: dict[str, int], **kwargs):
        self._fixed = class_to_idx
        super().__init__(root, allow_empty=True, **kwargs)

    def find_classes(self, directory):
        return sorted(self._fixed, key=self._fixed.get), self._fixed


class _TinyImageNetVal(_ClassFolder):
    """Tiny ImageNet's val split: val/images/*.JPEG labelled by val/val_annotations.txt."""

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        samples = []
        with open(os.path.join(directory, "val_annotations.txt")) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 2 and parts[1] in class_to_idx:
                    samples.append((os.path.join(directory, "images", parts[0]), class_to_idx[parts[1]]))
        return samples


def _root(data_dir: Path, folder: str) -> Path:
    """The root torchvision wants (holding `folder`), accepting the folder itself or a path inside it."""
    for root in (data_dir, data_dir.parent, data_dir.parent.parent):
        if (root / folder).is_dir():
            return root
    return data_dir


def _torchvision(name: str, data_dir: Path, train: bool):
    try:
        if name in ("mnist", "fashion-mnist"):
            cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
            return cls(_root(data_dir, cls.__name__), train=train, download=False)
        cls = _LocalCIFAR10 if name == "cifar10" else _LocalCIFAR100
        return cls(_root(data_dir, cls.base_folder), train=train, download=False)
    except RuntimeError as err:
        if "not found" not in str(err):
            raise DataError(f"{data_dir}: {name} files cannot be read ({err})") from None
        raise DataError(f"{data_dir}: no {name} {'training' if train else 'test'} data ({_EXPECTED[name]}; "
                        "nothing is downloaded)") from None
    except (OSError, ValueError, KeyError, EOFError, AssertionError, pickle.UnpicklingError) as err:
        raise DataError(f"{data_dir}: {name} files cannot be read ({type(err).__name__}: {err})") from None


_EXPECTED = {
    "mnist": "expected MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, uncompressed",
    "fashion-mnist": "expected FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, uncompressed",
    "cifar10": "expected cifar-10-batches-py/data_batch_1..5 and test_batch",
    "cifar100": "expected cifar-100-python/train and test",
}


def _image_folder(data_dir: Path, train: bool) -> tvd.ImageFolder:
    """ImageNet layout (train/<class>/*.JPEG, val/<class>/*.JPEG) or Tiny ImageNet's (val/images +
    val_annotations.txt; train/<class>/images/*.JPEG is found by ImageFolder's recursive walk)."""
    if not (data_dir / "train").is_dir():
        raise DataError(f"{data_dir}: no train/ folder (imagefolder expects train/<class>/... and val/<class>/...)")
    try:
        classes = tvd.ImageFolder(data_dir / "train", allow_empty=True).class_to_idx
        if train:
            return tvd.ImageFolder(data_dir / "train")
        for split in ("val", "test"):
            folder = data_dir / split
            if (folder / "val_annotations.txt").is_file():
                return _TinyImageNetVal(folder, classes)
            if folder.is_dir() and any((folder / c).is_dir() for c in classes):
                return _ClassFolder(folder, classes)
    except (FileNotFoundError, OSError) as err:
        raise DataError(f"{data_dir}: {err}") from None
    raise DataError(f"{data_dir}: no val/ (or test/) folder with class subfolders or val_annotations.txt")


# ----- npz ----------------------------------------------------------------------------------------
def _npz_arrays(path: Path, train: bool, labels: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(x of the split, y of the split, x_train, classes) from an npz holding x_train/y_train/x_test/
    y_test; the class count is read off both splits' labels (a test split may miss a class). Without
    `labels`, y may be missing (zeros then)."""
    split = "train" if train else "test"
    try:
        with np.load(path, allow_pickle=False) as f:
            wanted = (f"x_{split}", f"y_{split}", "x_train") if labels else (f"x_{split}", "x_train")
            missing = [k for k in dict.fromkeys(wanted) if k not in f.files]
            if missing:
                raise DataError(f"{path}: npz has no {', '.join(missing)} (it has {', '.join(f.files) or 'nothing'})")
            labels = [f[k] for k in ("y_train", "y_test") if k in f.files]
            classes = max((int(y.max()) + 1 for y in labels if y.size and y.dtype.kind in "iu"), default=0)
            x = f[f"x_{split}"]
            y = f[f"y_{split}"] if f"y_{split}" in f.files else np.zeros(len(x), np.int64)
            return x, y, f["x_train"] if not train else None, classes
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable npz file ({err})") from None


def _as_nchw(x: np.ndarray, path: Path) -> torch.Tensor:
    """Images as [N, C, H, W]: NHWC and [N, H, W] are recognized, flat rows of a square image too."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.dim() == 2:
        side = math.isqrt(t.shape[1])
        t = t.view(-1, 1, side, side) if side * side == t.shape[1] else t.view(-1, 1, 1, t.shape[1])
    elif t.dim() == 3:
        t = t.unsqueeze(1)
    elif t.dim() == 4 and t.shape[3] <= 4 < t.shape[1]:
        t = t.permute(0, 3, 1, 2)
    elif t.dim() != 4:
        raise DataError(f"{path}: images of rank {t.dim() - 1} (expected [N,C,H,W], [N,H,W,C] or [N,H,W])")
    return t.contiguous()


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def _npz_stats(x_train: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of the training images (up to 10,000 of them: plenty for two moments)."""
    x = _to_float(x_train[:10000]).transpose(0, 1).reshape(x_train.shape[1], -1).double()
    return tuple(x.mean(1).tolist()), tuple(x.std(1).clamp_min(1e-6).tolist())


class ArrayDataset(Dataset):
    """Images held in memory as one tensor; `transform` maps one [C, H, W] image (or a batch)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform, *, batched_ok: bool):
        self.targets = y
        self.classes = list(range(int(y.max()) + 1)) if len(y) else []
        if batched_ok and x.numel() <= PRECOMPUTE_LIMIT:
            self.x, self.transform = torch.cat([transform(c) for c in x.split(1024)]), None
        else:
            self.x, self.transform = x, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.x[i] if self.transform is None else self.transform(self.x[i])
        return x, int(self.targets[i])


def _npz(path: Path, train: bool, spec, augment: bool, normalize: bool, labels: bool = True) -> ArrayDataset:
    x, y, x_train, classes = _npz_arrays(path, train, labels)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: labels must be one integer per image ({len(x)} images, labels {y.shape})")
    if len(x) == 0:
        raise DataError(f"{path}: no images (x_{'train' if train else 'test'} is empty)")
    x = _as_nchw(x, path)
    stats = _npz_stats(_as_nchw(x_train, path) if x_train is not None else x) if normalize else None
    layout = plan_layout(spec, tuple(x.shape[1:]), f"the images in {path.name}")
    transform = fixed_size_transform(tuple(x.shape[2:]), layout, stats, augment)
    dataset = ArrayDataset(x, torch.from_numpy(y.astype(np.int64)), transform, batched_ok=not augment)
    dataset.fit = (tuple(x.shape[1:]), layout)
    dataset.classes = list(range(max(classes, len(dataset.classes))))
    return dataset


# ----- public API ---------------------------------------------------------------------------------
def load_dataset(name: str, data_dir, *, train: bool, input_spec=None, augment: bool | None = None,
                 normalize: bool = True, labels: bool = True) -> Dataset:
    """`name`'s train or test split from `data_dir` (for npz, the .npz file), fitted to `input_spec`
    (an InputSpec; None: NCHW at the data's own size). `augment=None` augments CIFAR/imagefolder
    training sets only. The result has `.classes` (a list, one entry per class) and, for images of
    one size, `.fit`: (the images' own [C, H, W], the Layout that takes them to the model). An npz
    without `labels` may lack y_train / y_test (label-free use: distillation, compare)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(f"{data_dir}: no such {'file' if name == 'npz' else 'folder'}")
    augment = train and (name in AUGMENT_BY_DEFAULT if augment is None else augment)
    if name == "npz":
        return _npz(data_dir, train, input_spec, augment, normalize, labels)
    stats = STATS[name] if normalize else None
    if name == "imagefolder":
        dataset = _image_folder(data_dir, train)
        sample = _first_image_shape(dataset, data_dir)
        layout = plan_layout(input_spec, sample, f"the images in {data_dir}")
        dataset.transform = folder_transform(layout, stats, augment)
        return dataset
    dataset = _torchvision(name, data_dir, train)
    first = np.asarray(dataset.data[0])
    sample = (1, *first.shape) if first.ndim == 2 else (first.shape[2], *first.shape[:2])
    layout = plan_layout(input_spec, sample, f"{name} images")
    dataset.transform = fixed_size_transform(sample[1:], layout, stats, augment)
    dataset.fit = (sample, layout)
    return dataset


def _first_image_shape(dataset: tvd.ImageFolder, data_dir: Path) -> tuple[int, int, int]:
    """[C, H, W] of the first image: the size to use when the model leaves H and W symbolic."""
    if not dataset.samples:
        raise DataError(f"{data_dir}: no images found")
    image = dataset.loader(dataset.samples[0][0])
    return (len(image.getbands()), image.height, image.width)


def num_classes(dataset: Dataset) -> int:
    return len(dataset.classes)


def npz_batches(path, batch_size: int, n_batches: int, *, input_spec=None, seed: int = 0,
                normalize: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`n_batches` shuffled batches of (images, labels) from an npz file's training split, in the
    model's layout (for data-driven pruning: SNIP, GraSP, ...)."""
    dataset = load_dataset("npz", path, train=True, input_spec=input_spec, augment=False, normalize=normalize)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    for k in range(min(n_batches, math.ceil(len(dataset) / batch_size))):
        items = [dataset[int(i)] for i in order[k * batch_size:(k + 1) * batch_size]]
        yield torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
