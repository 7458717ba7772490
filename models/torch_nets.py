"""The SynFlow paper's CIFAR-style networks and LeNet-5, plus one export helper.

Used by tests, scripts and the committed zoo, so every consumer prunes the same architectures.
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class VGG(nn.Module):
    """CIFAR VGG as in Synaptic-Flow (conv-BN-ReLU stack, global average pool, one linear layer)."""

    def __init__(self, cfg=VGG16_CFG, num_classes: int = 10, batch_norm: bool = True, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers.append(nn.Conv2d(channels, item, 3, padding=1, bias=not batch_norm))
            layers += [nn.BatchNorm2d(item)] if batch_norm else []
            layers.append(nn.ReLU())
            channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (3 stages x 3 basic blocks, widths 16-32-64); `per_stage=1, in_channels=1` is the
    ResNet-8 that scripts/trained_choice.py trains on MNIST."""

    def __init__(self, num_classes: int = 10, width: int = 16, per_stage: int = 3, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(per_stage):
                blocks.append(BasicBlock(cin, cout, 2 if (stage > 0 and i == 0) else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        y = self.blocks(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 MNIST: conv 6-16 (5x5), fc 120-84-10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class Block(nn.Module):
    """Pre-norm transformer block: QKᵀ and PV multiply two signals, the flow's exponent triples."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.att = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        y = self.ln1(x)
        x = x + self.att(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class AttentionStack(nn.Module):
    """Token features [1, T, inputs] -> `layers` blocks of width d -> 10 classes (SynFlow's finiteness tests and bench)."""

    def __init__(self, layers: int = 12, d: int = 64, inputs: int = 16, heads: int = 4):
        super().__init__()
        self.inp, self.out = nn.Linear(inputs, d), nn.Linear(d, 10)
        self.blocks = nn.Sequential(*[Block(d, heads) for _ in range(layers)])

    def forward(self, x):
        return self.out(self.blocks(self.inp(x)).mean(1))


def kaiming_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Kaiming-normal conv/linear weights, zero biases, unit BN (the paper's initialization)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
    return model


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm state (negative gammas, betas and means; variances in [0.5, 2]), so that
    sign handling and train-mode statistics show in tests."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.normal_()
                m.bias.normal_()
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return model


def export(model: nn.Module, input_shape: tuple[int, ...], *, dynamo: bool = False, dynamic_batch: bool = True,
           keep_batchnorm: bool = True, dynamic_dims: tuple[int, ...] = (0,)) -> onnx.ModelProto:
    """Export to ONNX in memory. TorchScript path by default: it keeps BatchNormalization nodes
    (training needs them); the dynamo exporter folds BN into Conv in eval mode. With `dynamic_batch`
    the input dims `dynamic_dims` (and the output's batch) are symbolic."""
    model = model.eval()
    x = torch.randn(*input_shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), buffer, dynamo=True, input_names=["input"], output_names=["logits"],
                              verbose=False)
        else:
            names = {d: "batch" if d == 0 else f"dim{d}" for d in dynamic_dims}
            kwargs = {"dynamic_axes": {"input": names, "logits": {0: "batch"}}} if dynamic_batch else {}
            mode = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
            torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["input"], output_names=["logits"],
                              training=mode, do_constant_folding=not keep_batchnorm, opset_version=17,
                              # listing initializers as inputs stops torch from merging equal-valued
                              # tensors (fresh BN gammas and running_vars are all ones) into one
                              keep_initializers_as_inputs=True, **kwargs)
    model = onnx.load_from_string(buffer.getvalue())
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model
