"""Regenerate models/zoo/lenet5.onnx: LeNet-5 (MNIST, 1x28x28), kaiming init, seed 0, TorchScript export
with BatchNorm-free layers and a dynamic batch. Run: python models/export_torch_nets.py"""

from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402

from models.torch_nets import LeNet5, export, kaiming_init  # noqa: E402

if __name__ == "__main__":
    out = Path(__file__).with_name("zoo") / "lenet5.onnx"
    out.parent.mkdir(exist_ok=True)
    onnx.save(export(kaiming_init(LeNet5(), seed=0), (1, 1, 28, 28)), out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
