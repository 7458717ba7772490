"""Datasets through torchvision's real loaders, on small files written here in the real formats.

The writers below (IDX, CIFAR pickles, image trees, npz) are reused by test_train.py and test_eval.py.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from local_data import MNIST10K
from onnxprune.errors import DataError
from onnxprune.train.data import STATS, load_dataset, npz_batches, num_classes
from onnxprune.train.layout import plan_layout
from onnxprune.twin.module import InputSpec

F32 = 1  # onnx.TensorProto.FLOAT
# Normalized values are float32 arithmetic on [0, 1] pixels divided by std >= 0.2: 1e-5 is ~50 ulps.
TOL = 1e-5


def spec(*shape) -> InputSpec:
    return InputSpec("input", F32, tuple(shape))


# ----- writers in the real formats ----------------------------------------------------------------
def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's IDX files (big-endian header, uint8 payload), uncompressed as torchvision keeps them."""
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, h, w) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())


def write_mnist(root: Path, cls: str = "MNIST", n_train: int = 40, n_test: int = 20, seed: int = 0):
    """root/<cls>/raw/{train,t10k}-*; returns (x_train, y_train, x_test, y_test) as uint8 arrays."""
    rng = np.random.default_rng(seed)
    raw = root / cls / "raw"
    raw.mkdir(parents=True)
    arrays = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(raw, prefix, x, y)
        arrays += [x, y]
    return tuple(arrays)


def write_cifar(root: Path, classes: int = 10, per_batch: int = 8, n_test: int = 10, seed: int = 0):
    """CIFAR python pickles: cifar-10-batches-py/data_batch_1..5 + test_batch + batches.meta, or
    cifar-100-python/train + test + meta. Returns (train data [N,3072], labels, test data, labels)."""
    rng = np.random.default_rng(seed)
    ten = classes == 10
    folder = root / ("cifar-10-batches-py" if ten else "cifar-100-python")
    folder.mkdir(parents=True)
    key = "labels" if ten else "fine_labels"

    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "batch_label": "x", key: [int(v) for v in rng.integers(0, classes, n)]}

    names = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    train = [batch(per_batch) for _ in names]
    for name, b in zip(names, train):
        (folder / name).write_bytes(pickle.dumps(b))
    test = batch(n_test)
    (folder / ("test_batch" if ten else "test")).write_bytes(pickle.dumps(test))
    meta = {"label_names" if ten else "fine_label_names": [f"c{i}" for i in range(classes)]}
    (folder / ("batches.meta" if ten else "meta")).write_bytes(pickle.dumps(meta))
    return (np.concatenate([b["data"] for b in train]), sum((b[key] for b in train), []), test["data"], test[key])


def write_image_tree(root: Path, classes=("cat", "dog", "eel"), per_class: int = 3, size=(20, 24),
                     val_classes=None, seed: int = 0) -> None:
    """ImageNet layout: root/train/<class>/*.png and root/val/<class>/*.png (size is (H, W))."""
    rng = np.random.default_rng(seed)
    for split, names in (("train", classes), ("val", val_classes or classes)):
        for c in names:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{c}_{i}.png")


def write_tiny_imagenet(root: Path, wnids=("n01", "n02"), per_class: int = 2, seed: int = 0) -> dict:
    """Tiny ImageNet layout: train/<wnid>/images/*.JPEG, val/images/*.JPEG + val_annotations.txt."""
    rng = np.random.default_rng(seed)
    labels = {}
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                root / "train" / w / "images" / f"{w}_{i}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i in range(2 * len(wnids)):
        w = wnids[(i + 1) % len(wnids)]
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
        labels[f"val_{i}.JPEG"] = w
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return labels


def write_npz(path: Path, n_train: int = 64, n_test: int = 32, shape=(1, 28, 28), classes: int = 10,
              seed: int = 0, dtype=np.uint8) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, *shape)).astype(dtype)
        arrays[f"x_{split}"] = x / 255 if dtype != np.uint8 else x
        arrays[f"y_{split}"] = rng.integers(0, classes, n).astype(np.int64)
    np.savez(path, **arrays)
    return arrays


def normalized(pixels: np.ndarray, name: str) -> np.ndarray:
    """uint8 [C, H, W] -> what the loaders should produce for `name` without augmentation."""
    mean, std = (np.array(s, dtype=np.float32).reshape(-1, 1, 1) for s in STATS[name])
    return (pixels.astype(np.float32) / 255 - mean) / std


# ----- torchvision formats ------------------------------------------------------------------------
@pytest.mark.parametrize("name,cls", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_idx_files_through_torchvision(tmp_path, name, cls):
    x_train, y_train, x_test, y_test = write_mnist(tmp_path, cls)
    train = load_dataset(name, tmp_path, train=True, input_spec=spec("N", 1, 28, 28))
    test = load_dataset(name, tmp_path / cls / "raw", train=False)  # a path inside the root works too
    assert (len(train), len(test), num_classes(train)) == (40, 20, 10)
    x, y = test[3]
    assert y == y_test[3] and x.shape == (1, 28, 28)
    np.testing.assert_allclose(x.numpy(), normalized(x_test[3][None], name), atol=TOL)
    np.testing.assert_allclose(train[5][0].numpy(), normalized(x_train[5][None], name), atol=TOL)


def test_cifar10_pickles_and_default_augmentation(tmp_path):
    data, labels, test_data, test_labels = write_cifar(tmp_path)
    test = load_dataset("cifar10", tmp_path, train=False, input_spec=spec("N", 3, 32, 32))
    x, y = test[4]
    assert y == test_labels[4] and len(test) == 10
    np.testing.assert_allclose(x.numpy(), normalized(test_data[4].reshape(3, 32, 32), "cifar10"), atol=TOL)
    plain = load_dataset("cifar10", tmp_path, train=True, augment=False)
    assert len(plain) == 40 and plain[13][1] == labels[13]
    np.testing.assert_allclose(plain[13][0].numpy(), normalized(data[13].reshape(3, 32, 32), "cifar10"), atol=TOL)
    # On by default for CIFAR training: random crop (pad 4) + flip, so draws differ, shape kept.
    augmented = load_dataset("cifar10", tmp_path, train=True)
    torch.manual_seed(0)
    draws = [augmented[13][0] for _ in range(6)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_cifar100_pickles_fine_labels(tmp_path):
    _, labels, test_data, test_labels = write_cifar(tmp_path, classes=100)
    train = load_dataset("cifar100", tmp_path / "cifar-100-python", train=True, augment=False)
    test = load_dataset("cifar100", tmp_path, train=False)
    assert num_classes(train) == 100 and [train[i][1] for i in range(8)] == labels[:8]
    np.testing.assert_allclose(test[0][0].numpy(), normalized(test_data[0].reshape(3, 32, 32), "cifar100"),
                               atol=TOL)
    assert test[0][1] == test_labels[0]


def test_cifar_fitted_to_nhwc_grey_and_larger_model(tmp_path):
    _, _, test_data, _ = write_cifar(tmp_path)
    nhwc = load_dataset("cifar10", tmp_path, train=False, input_spec=spec("N", 32, 32, 3))
    reference = normalized(test_data[1].reshape(3, 32, 32), "cifar10")
    np.testing.assert_allclose(nhwc[1][0].numpy(), reference.transpose(1, 2, 0), atol=TOL)
    grey = load_dataset("cifar10", tmp_path, train=False, input_spec=spec("N", 1, 32, 32))
    luma = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), reference, axes=1)
    np.testing.assert_allclose(grey[1][0].numpy()[0], luma, atol=TOL)
    big = load_dataset("cifar10", tmp_path, train=False, input_spec=spec(1, 3, 64, 64))
    assert big[1][0].shape == (3, 64, 64)


def test_image_folder_tree_of_pngs(tmp_path):
    write_image_tree(tmp_path, val_classes=("cat", "eel"))  # val lacks "dog": labels must not shift
    train = load_dataset("imagefolder", tmp_path, train=True, input_spec=spec("N", 3, 16, 16), augment=False)
    val = load_dataset("imagefolder", tmp_path, train=False, input_spec=spec("N", 3, 16, 16))
    assert train.classes == ["cat", "dog", "eel"] and len(train) == 9
    assert sorted({y for _, y in val.samples}) == [0, 2]
    x, y = val[len(val) - 1]
    assert x.shape == (3, 16, 16) and y == 2
    # Symbolic H, W: the first image's own size (20x24), no resizing.
    free = load_dataset("imagefolder", tmp_path, train=False, input_spec=spec("N", 3, "h", "w"))
    pixels = np.asarray(Image.open(val.samples[0][0])).transpose(2, 0, 1)
    np.testing.assert_allclose(free[0][0].numpy(), normalized(pixels, "imagefolder"), atol=TOL)


def test_tiny_imagenet_layout(tmp_path):
    labels = write_tiny_imagenet(tmp_path)
    train = load_dataset("imagefolder", tmp_path, train=True, input_spec=spec("N", 3, 64, 64))
    val = load_dataset("imagefolder", tmp_path, train=False, input_spec=spec("N", 3, 64, 64))
    assert len(train) == 4 and train.classes == ["n01", "n02"]
    assert [train.class_to_idx[labels[Path(p).name]] for p, _ in val.samples] == [y for _, y in val.samples]
    assert val[0][0].shape == (3, 64, 64)


def test_corrupt_files_are_one_line_errors(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="mnist files cannot be read"):
        load_dataset("mnist", tmp_path, train=False)
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cifar10 files cannot be read"):
        load_dataset("cifar10", tmp_path, train=False)


def test_missing_folders_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="MNIST/raw"):
        load_dataset("mnist", tmp_path, train=True)
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path, train=False)
    with pytest.raises(DataError, match="no train/ folder"):
        load_dataset("imagefolder", tmp_path, train=False)
    with pytest.raises(DataError, match="no such"):
        load_dataset("npz", tmp_path / "missing.npz", train=False)


# ----- npz ----------------------------------------------------------------------------------------
def test_npz_layouts_and_normalization(tmp_path):
    arrays = write_npz(tmp_path / "d.npz", shape=(28, 28))  # [N, H, W] uint8
    data = load_dataset("npz", tmp_path / "d.npz", train=False, input_spec=spec("N", 1, 28, 28))
    x_train = arrays["x_train"].astype(np.float64) / 255
    mean, std = x_train.mean(), x_train.std(ddof=1)  # stats come from the training split
    np.testing.assert_allclose(data[2][0].numpy()[0], (arrays["x_test"][2] / 255 - mean) / std, atol=TOL)
    assert data[2][1] == arrays["y_test"][2]
    flat = load_dataset("npz", tmp_path / "d.npz", train=False, input_spec=spec("N", 784))
    assert torch.equal(flat[2][0], data[2][0].reshape(-1))
    rgb = load_dataset("npz", tmp_path / "d.npz", train=False, input_spec=spec("N", 28, 28, 3))
    assert torch.equal(rgb[2][0], data[2][0][0][..., None].expand(28, 28, 3))
    nhw = load_dataset("npz", tmp_path / "d.npz", train=False, input_spec=spec("N", 28, 28))
    assert torch.equal(nhw[2][0], data[2][0][0])


def test_npz_nhwc_float_images(tmp_path):
    arrays = write_npz(tmp_path / "c.npz", shape=(8, 8, 3), dtype=np.float32)
    data = load_dataset("npz", tmp_path / "c.npz", train=True, input_spec=spec("N", 3, 8, 8), normalize=False)
    np.testing.assert_allclose(data[1][0].numpy(), arrays["x_train"][1].transpose(2, 0, 1), atol=1e-7)


@pytest.mark.parametrize("shape,model_side,data_side", [
    (("N", 4, 28, 28), "takes 4 channel", "have 1"),
    (("N", 100), "vectors of 100 values", "1x28x28 = 784"),
    (("N", 1, 1, 28, 28), "not an image batch", "1x28x28"),
])
def test_npz_mismatch_names_both_sides(tmp_path, shape, model_side, data_side):
    write_npz(tmp_path / "d.npz")
    with pytest.raises(DataError, match=model_side) as err:
        load_dataset("npz", tmp_path / "d.npz", train=True, input_spec=spec(*shape))
    assert "model input 'input'" in str(err.value) and data_side in str(err.value)


def test_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="y_train"):
        load_dataset("npz", tmp_path / "bad.npz", train=True)


def test_npz_batches_for_pruning(tmp_path):
    write_npz(tmp_path / "d.npz", n_train=50)
    batches = list(npz_batches(tmp_path / "d.npz", 16, 3, input_spec=spec("N", 1, 28, 28), seed=1))
    assert [tuple(x.shape) for x, _ in batches] == [(16, 1, 28, 28)] * 3
    again = list(npz_batches(tmp_path / "d.npz", 16, 3, input_spec=spec("N", 1, 28, 28), seed=1))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    assert len(list(npz_batches(tmp_path / "d.npz", 16, 10))) == 4  # 50 images: 3 full batches + 2


def test_committed_mnist10k():
    """The MNIST file the tests and scripts read ships in the clone, and holds what its README says."""
    table = re.findall(r"^\| `(\w+)` \| (\w+) \| \[([\d, ]+)\] \| `([0-9a-f]{64})` \|$",
                       (MNIST10K.parent / "README.md").read_text(), flags=re.M)
    arrays = np.load(MNIST10K)
    assert sorted(name for name, *_ in table) == sorted(arrays.files)
    for name, dtype, shape, digest in table:
        a = arrays[name]
        assert (str(a.dtype), list(a.shape)) == (dtype, [int(d) for d in shape.split(",")])
        assert hashlib.sha256(a.tobytes()).hexdigest() == digest, name
    data = load_dataset("npz", MNIST10K, train=True, input_spec=spec("N", 1, 28, 28))
    assert len(data) == 8000 and num_classes(data) == 10
    assert abs(float(data.x.mean())) < 1e-3 and abs(float(data.x.std()) - 1) < 1e-3


def test_nothing_reads_outside_the_clone():
    """A user's clone has nothing beside it: no code, script or CI step may reach for a folder there."""
    root = MNIST10K.parents[2]
    outside = re.compile(r"\.\./shared|parents?(\[\d\])? / \"shared\"")
    files = [p for d in ("onnxprune", "tests", "scripts", "models") for p in (root / d).rglob("*.py")]
    files += [root / ".ci" / "run", root / "pyproject.toml"]
    assert len(files) > 20
    assert [str(p.relative_to(root)) for p in files if outside.search(p.read_text())] == []


# ----- layout planning ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape,kind,channels,size", [
    (("N", 3, 32, 32), "nchw", 3, (32, 32)),
    (("N", 32, 32, 3), "nhwc", 3, (32, 32)),
    ((1, 1, 28, 28), "nchw", 1, (28, 28)),
    (("N", 3, "H", "W"), "nchw", 3, (24, 20)),
    (("N", "H", "W", 3), "nhwc", 3, (24, 20)),
    (("N", "C", "H", "W"), "nchw", 3, (24, 20)),
    (("N", 1440), "flat", 3, (24, 20)),
])
def test_plan_layout(shape, kind, channels, size):
    layout = plan_layout(spec(*shape), (3, 24, 20), "images")
    assert (layout.kind, layout.channels, layout.size) == (kind, channels, size)
