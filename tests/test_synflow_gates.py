"""SynFlow on squeeze-and-excitation networks: gates on another tensor are open but still scored."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.torch_nets import export, kaiming_init
from onnxprune.pruning import prune_twin
from onnxprune.pruning import score
from onnxprune.twin import Twin


class SEBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.fc1 = nn.Conv2d(channels, channels // 2, 1)
        self.fc2 = nn.Conv2d(channels // 2, channels, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        return y * gate


def se_net(blocks: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), *[SEBlock(16) for _ in range(blocks)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_deep_se_net_scores_finitely_and_every_gate_layer_scores():
    # 12 SE blocks: linearizing the sigmoid to the identity would square the signal 12 times
    # (exponent x 4096), far past float64; the open-gate policy keeps R finite.
    twin = Twin(export(kaiming_init(se_net(12)), (1, 3, 16, 16)))
    scores = score(twin, "synflow")
    for name, layer_scores in scores.items():
        assert torch.isfinite(layer_scores).all(), name
        assert float(layer_scores.sum()) > 0, f"{name} scores 0: its gate path was cut from R"


def test_gate_layers_obey_the_conservation_law():
    # Bias-free gate path: each fc layer's scores sum to the flow through the gated tensor, like the
    # conv it gates (Euler's theorem on the degree-1 path; g / stopgrad(g) has d log g).
    net = se_net(1)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.bias = None
    twin = Twin(export(kaiming_init(net), (1, 3, 8, 8)))
    sums = {n: float(s.sum()) for n, s in score(twin, "synflow").items()}
    values = list(sums.values())
    assert all(math.isclose(v, values[0], rel_tol=1e-6) for v in values), sums


def test_se_net_prunes_to_the_exact_count_without_overflow():
    twin = Twin(export(kaiming_init(se_net(12)), (1, 3, 16, 16)))
    result = prune_twin(twin, method="synflow", density=0.05, iterations=5)
    assert result.kept == round(result.total * 0.05)
