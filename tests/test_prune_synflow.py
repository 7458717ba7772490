"""SynFlow: the reference algorithm's masks, the conservation law, the linearization policy, and
layer collapse (the paper's Fig. 1 claim)."""

from __future__ import annotations

import copy
import io
import warnings

import onnx
import pytest
import torch
from torch import nn

from models.torch_nets import VGG, ResNet20, export, kaiming_init, randomize_batchnorm
from onnxprune.pruning import prune_twin, score
from onnxprune.twin import Twin
from synflow_reference import jaccard, reference_copy, reference_synflow  # the reference algorithm


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batch-1 scoring of small nets: a second intra-op thread only adds synchronization (10-30x wall
    time on a busy 2-core machine). Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


NETS = {
    # The paper's CIFAR VGG-16 layout at a quarter of the width, and ResNet-20, Kaiming-initialized.
    "vgg16-quarter": lambda: VGG(cfg=[16, 16, "M", 32, 32, "M", 64, 64, 64, "M", 128, 128, 128, "M",
                                      128, 128, 128]),
    "resnet20": lambda: ResNet20(),
}


@pytest.mark.parametrize("net", list(NETS))
def test_relu_cnns_give_the_reference_masks(net):
    model = kaiming_init(NETS[net](), seed=0).eval()
    shape, density = (3, 32, 32), 0.01
    twin = Twin(export(model, (1, *shape)))
    ours = prune_twin(twin, density=density, iterations=100)  # float64 by default
    ref, ties = reference_synflow(model, shape, density, 100)
    assert list(ref) == ours.prunable
    total = ours.total
    assert ours.kept == round(total * density)
    # The reference keeps total - int((1 - density) * total) minus its threshold ties (`<=` prunes
    # them all); onnxprune keeps exactly round(total * density). Those are the only count differences.
    ref_kept = sum(int(m.sum()) for m in ref.values())
    assert ref_kept == total - int((1 - density) * total) - ties
    assert abs(ref_kept - ours.kept) <= 1 + ties
    assert jaccard(ours.masks, ref) >= 0.999


# ----- the conservation law -------------------------------------------------------------------------
def test_synaptic_saliency_is_conserved_per_layer():
    """In a bias-free ReLU net (no BatchNorm), R is homogeneous of degree 1 in each layer's weights, so
    every layer's SynFlow scores sum to R (the paper's Theorem 1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, bias=False),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 3 * 3, 32, bias=False), nn.ReLU(),
                          nn.Linear(32, 10, bias=False))
    scores = score(Twin(export(model, (1, 3, 16, 16))), "synflow")
    sums = [float(s.sum()) for s in scores.values()]
    assert len(sums) == 4
    for s in sums[1:]:
        assert abs(s - sums[0]) <= 1e-6 * sums[0]  # float64: measured ~1e-15


# ----- linearization ---------------------------------------------------------------------------------
def small_net(act: nn.Module, norm: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3), act]
    layers += [copy.deepcopy(norm)] if norm is not None else []
    layers += [nn.Conv2d(4, 6, 3), copy.deepcopy(act), nn.Flatten(), nn.Linear(6 * 4 * 4, 8), copy.deepcopy(act),
               nn.Linear(8, 5)]
    return nn.Sequential(*layers).eval()


ACTIVATIONS = {  # activation -> op types its ONNX export must contain (so the pattern is what is tested)
    "gelu-erf": (nn.GELU(), {"Erf"}),
    "gelu-tanh": (nn.GELU(approximate="tanh"), {"Tanh"}),
    "silu": (nn.SiLU(), {"Sigmoid", "Mul"}),
    "mish": (nn.Mish(), {"Softplus", "Tanh"}),
    "hardswish": (nn.Hardswish(), {"HardSwish"}),
    "hardsigmoid": (nn.Hardsigmoid(), {"HardSigmoid"}),
    "tanh": (nn.Tanh(), {"Tanh"}),
    "sigmoid": (nn.Sigmoid(), {"Sigmoid"}),
    "elu": (nn.ELU(), {"Elu"}),
    "selu": (nn.SELU(), {"Selu"}),
    "leaky": (nn.LeakyReLU(0.1), {"LeakyRelu"}),
    "softplus": (nn.Softplus(), {"Softplus"}),
    "relu6": (nn.ReLU6(), {"Clip"}),
}


@pytest.fixture(scope="module")
def relu_scores():
    return score(Twin(export(small_net(nn.ReLU()), (1, 3, 8, 8))), "synflow")


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activations_act_as_the_identity(name, relu_scores):
    """With non-negative weights and input a ReLU net is linear; under the policy every other
    activation (self-gating ones written out as x * gate(x) included) gives that same linear net."""
    act, ops = ACTIVATIONS[name]
    model = export(small_net(act), (1, 3, 8, 8))
    assert ops <= {n.op_type for n in model.graph.node}
    scores = score(Twin(model), "synflow")
    assert list(scores) == list(relu_scores)
    for n in scores:
        # identical math (x * 1, (1 + 1) * 0.5 are exact): only float64 rounding of equal sums
        torch.testing.assert_close(scores[n], relu_scores[n], rtol=1e-12, atol=0)


class Affine(nn.Module):
    """x * scale + bias with a normalization layer's affine parameters (what the policy keeps)."""

    def __init__(self, norm: nn.Module, shape):
        super().__init__()
        self.scale = nn.Parameter(norm.weight.detach().reshape(shape).clone())
        self.bias = nn.Parameter(norm.bias.detach().reshape(shape).clone())

    def forward(self, x):
        return x * self.scale + self.bias


def _random_affine(norm: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(norm.weight.shape, generator=gen))
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=gen))
    return norm


def export_opset16(model: nn.Module, shape) -> onnx.ModelProto:
    """Before opset 17 there is no LayerNormalization op: torch writes it out (ReduceMean, Sub, Pow,
    Sqrt, Div, Mul, Add), as older exporters and files do."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(*shape),), buffer, dynamo=False, opset_version=16,
                          input_names=["input"], output_names=["logits"])
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("kind", ["layernorm", "layernorm-opset16", "groupnorm", "instancenorm"])
def test_normalizations_keep_only_their_affine_part(kind):
    norm, shape, ops = {
        "layernorm": (nn.LayerNorm([4, 6, 6]), (4, 6, 6), {"LayerNormalization"}),
        "layernorm-opset16": (nn.LayerNorm([4, 6, 6]), (4, 6, 6), {"ReduceMean", "Sub", "Sqrt", "Div"}),
        "groupnorm": (nn.GroupNorm(2, 4), (4, 1, 1), {"InstanceNormalization"}),
        "instancenorm": (nn.InstanceNorm2d(4, affine=True), (4, 1, 1), {"InstanceNormalization"}),
    }[kind]
    norm = _random_affine(norm)
    to_onnx = export_opset16 if kind.endswith("opset16") else export
    normed = to_onnx(small_net(nn.ReLU(), norm), (1, 3, 8, 8))
    affine = to_onnx(small_net(nn.ReLU(), Affine(norm, shape)), (1, 3, 8, 8))
    assert ops <= {n.op_type for n in normed.graph.node}
    got, want = score(Twin(normed), "synflow"), score(Twin(affine), "synflow")
    assert list(got) == list(want)
    for n in got:
        torch.testing.assert_close(got[n], want[n], rtol=1e-12, atol=0)


def test_batchnorm_scores_with_absolute_parameters_and_statistics():
    """A linear conv-BN net with negative gammas, betas and running means: the twin's scores equal the
    reference recipe's (abs of every parameter and buffer, eval mode) on the native module."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6),
                          nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    randomize_batchnorm(model)
    model.eval()
    got = score(Twin(export(model, (1, 3, 8, 8))), "synflow")
    native = reference_copy(model)
    native(torch.ones(1, 3, 8, 8, dtype=torch.float64)).sum().backward()
    for name, m in native.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            want = (m.weight.grad * m.weight).abs().detach()
            torch.testing.assert_close(got[f"{name}.weight"], want, rtol=1e-12, atol=0)


# ----- layer collapse ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vgg16():
    return Twin(export(kaiming_init(VGG(), seed=0), (1, 3, 32, 32)))


def collapsed(result) -> int:
    return sum(kept == 0 for kept, _ in result.per_tensor.values())


def test_layer_collapse_magnitude_vs_synflow(vgg16):
    """SynFlow paper, Fig. 1: on CIFAR VGG-16 at Kaiming init, global magnitude pruning removes whole
    layers (measured here, seed 0: 1 at compression 3, 5 at 3.5, 8 at 4; over seeds 0-3 the count at
    3 is 0-4 and at 4 always 8), while iterative SynFlow keeps every layer up to compression 5.

    SynFlow runs 10 iterations here instead of the paper's 100 (each costs a VGG-16 float64 pass, 100
    would take ~40 s): measured, 1 or 5 iterations collapse 13 layers at compression 5, 10 and 20
    iterations collapse none (smallest layer keeps 3-8 weights, seeds 0-3)."""
    def run(method, c, **kw):
        for name in list(vgg16.masks()):
            vgg16.set_mask(name, None)
        return prune_twin(vgg16, method=method, density=10.0 ** -c, **kw)

    mag = {c: collapsed(run("mag", c)) for c in (2, 3, 4)}
    assert mag[2] == 0 and mag[3] >= 1 and mag[4] >= 6 and mag[4] > mag[3]
    for c in (4, 5):
        result = run("synflow", c, iterations=10)
        assert collapsed(result) == 0 and result.kept == round(result.total * 10.0 ** -c)
