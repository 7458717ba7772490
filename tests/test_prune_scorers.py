"""Scorers: each method against its definition computed independently on the native torch model, and
the twin left exactly as it was found (also when scoring raises, also BatchNorm statistics)."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.torch_nets import VGG, LeNet5, export, kaiming_init, randomize_batchnorm
from onnxprune.errors import OnnxPruneError
from onnxprune.pruning import METHODS, prunable_tensors, prune_twin, score, select_masks
from onnxprune.twin import Twin
from local_data import MNIST10K as MNIST

DATA_METHODS = ("snip", "grasp", "loss", "gradnorm")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: a second intra-op thread only adds synchronization (10-30x wall time on a busy
    2-core machine). Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mnist_batches():
    data = np.load(MNIST)
    x = torch.from_numpy(data["x_train"][:48].astype(np.float32) / 255.0)
    y = torch.from_numpy(data["y_train"][:48].astype(np.int64))
    return [(x[:24], y[:24]), (x[24:], y[24:])]


@pytest.fixture(scope="module")
def lenet_torch():
    return kaiming_init(LeNet5(), seed=0).eval()


@pytest.fixture
def lenet(lenet_torch):
    return Twin(export(lenet_torch, (1, 1, 28, 28)))


# ----- the twin comes back exactly ------------------------------------------------------------------
def bn_net() -> nn.Module:
    """A small conv-BN-ReLU net with non-trivial BatchNorm state (negative gammas and means), so that
    SynFlow's absolute values and train-mode statistics would both show if they leaked."""
    torch.manual_seed(0)
    model = VGG(cfg=[8, "M", 16], in_channels=1)
    randomize_batchnorm(model)
    return model.eval()


def prepared_twin() -> Twin:
    """The BN net's twin in train mode, with a mask on a prunable and on a non-prunable tensor, a frozen
    parameter and a stale gradient: all of it must survive scoring."""
    twin = Twin(export(bn_net(), (1, 1, 28, 28)))
    twin.train()
    params = twin.onnx_parameters()
    names = prunable_tensors(twin)
    gen = torch.Generator().manual_seed(0)
    twin.set_mask(names[0], (torch.rand(params[names[0]].shape, generator=gen) < 0.7).float())
    others = [n for n in params if n not in names]
    twin.set_mask(others[0], (torch.rand(params[others[0]].shape, generator=gen) < 0.7).float())
    params[others[1]].requires_grad_(False)
    params[names[1]].grad = torch.randn(params[names[1]].shape, generator=gen)
    return twin


def snapshot(twin: Twin) -> dict:
    return {
        "params": {n: (p, p.detach().clone(), p.requires_grad, None if p.grad is None else p.grad.clone())
                   for n, p in twin.onnx_parameters().items()},
        "buffers": {n: b.clone() for n, b in twin.onnx_buffers().items()},
        "masks": {n: m.clone() for n, m in twin.masks().items()},
        "modes": (twin.training, twin.ctx.training, twin.ctx.float_dtype),
        "handlers": [step.fn for step in twin.program.steps],
    }


def same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Bit for bit: same dtype, shape and values."""
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and torch.equal(a, b)


def assert_unchanged(twin: Twin, snap: dict, *, except_masks=()) -> None:
    params = twin.onnx_parameters()
    for name, (obj, value, requires_grad, grad) in snap["params"].items():
        p = params[name]
        assert p is obj and same(p.detach(), value) and p.requires_grad == requires_grad, name
        assert same(p.grad, grad), name
    buffers = twin.onnx_buffers()
    assert all(same(buffers[n], v) for n, v in snap["buffers"].items())  # BN statistics included
    masks = {n: m for n, m in twin.masks().items() if n not in except_masks}
    expected = {n: m for n, m in snap["masks"].items() if n not in except_masks}
    assert masks.keys() == expected.keys() and all(same(masks[n], expected[n]) for n in masks)
    assert (twin.training, twin.ctx.training, twin.ctx.float_dtype) == snap["modes"]
    assert [step.fn for step in twin.program.steps] == snap["handlers"]  # linearization undone


@pytest.mark.parametrize("method", METHODS)
def test_scoring_leaves_the_twin_as_it_was(method, mnist_batches):
    twin = prepared_twin()
    snap = snapshot(twin)
    batches = mnist_batches if method in DATA_METHODS else None
    scores = score(twin, method, batches=batches)
    assert_unchanged(twin, snap)
    assert list(scores) == prunable_tensors(twin)
    if method in DATA_METHODS:  # train mode too: BatchNorm on batch statistics, buffers still untouched
        # (float32 is the twin's own precision: no conversion shields the original buffers)
        score(twin, method, batches=batches, train_mode=True, precision=torch.float32)
        assert_unchanged(twin, snap)
    # the loop replaces the masks of the prunable tensors, and nothing else
    result = prune_twin(twin, method=method, density=0.2, iterations=3 if method == "synflow" else None,
                        batches=batches)
    assert_unchanged(twin, snap, except_masks=result.prunable)


def _raising_progress(k, n):
    if k == 2:
        raise KeyboardInterrupt  # an interrupt mid-loop (BaseException): the session must still restore


@pytest.mark.parametrize("case", ["synflow-not-finite", "bad-labels", "interrupted-loop"])
def test_twin_restored_when_scoring_raises(case, mnist_batches):
    twin = prepared_twin()
    if case == "synflow-not-finite":
        with torch.no_grad():  # a broken weight: not finite in any precision, even renormalized
            next(iter(twin.onnx_parameters().values())).view(-1)[0] = float("inf")
    snap = snapshot(twin)
    if case == "synflow-not-finite":
        with pytest.raises(OnnxPruneError, match="first at node .* the flow is not finite"):
            score(twin, "synflow", precision=torch.float32)
    elif case == "bad-labels":  # the second batch fails after the first one was scored
        x, y = mnist_batches[1]
        with pytest.raises(Exception):
            score(twin, "snip", batches=[mnist_batches[0], (x, y + 100)])
    else:
        with pytest.raises(KeyboardInterrupt):
            prune_twin(twin, density=0.1, iterations=5, progress=_raising_progress)
    assert_unchanged(twin, snap)


# ----- each method against its definition ---------------------------------------------------------
def native_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return {f"{n}.weight": m.weight for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def native_gradient(model, weights, batches, temperature=1.0, create_graph=False):
    total = None
    for x, y in batches:
        loss = F.cross_entropy(model(x.double()) / temperature, y)
        g = torch.autograd.grad(loss, weights, create_graph=create_graph)
        total = list(g) if total is None else [t + gi for t, gi in zip(total, g)]
    return total


def native_hg(model, weights, batches, temperature):
    """Hg = ∂(stop(g)·g)/∂θ, g the loss gradient summed over batches (GraSP's recipe)."""
    stopped = [g.detach() for g in native_gradient(model, weights, batches, temperature)]
    total = [torch.zeros_like(w) for w in weights]
    for batch in batches:
        g = native_gradient(model, weights, [batch], temperature, create_graph=True)
        dot = sum((s * gi).sum() for s, gi in zip(stopped, g))
        total = [t + h for t, h in zip(total, torch.autograd.grad(dot, weights))]
    return total


def native_scores(lenet_torch, method, batches) -> dict[str, torch.Tensor]:
    model = kaiming_init(LeNet5(), seed=0).double().eval()
    model.load_state_dict({k: v.double() for k, v in lenet_torch.state_dict().items()})
    named = native_weights(model)
    names, weights = list(named), list(named.values())
    if method in ("loss", "snip"):
        raw = [(w * g).abs() for w, g in zip(weights, native_gradient(model, weights, batches))]
        if method == "snip":
            total = sum(r.sum() for r in raw)
            raw = [r / total for r in raw]
    else:
        raw = [w * h for w, h in zip(weights, native_hg(model, weights, batches, 200.0))]
        if method == "grasp":
            norm = abs(sum(r.sum() for r in raw)) + 1e-10
            raw = [r / norm for r in raw]
        else:
            raw = [r.abs() for r in raw]
    return {n: r.detach() for n, r in zip(names, raw)}


@pytest.mark.parametrize("method", DATA_METHODS)
def test_data_scorers_match_their_definitions(method, lenet, lenet_torch, mnist_batches):
    ours = score(lenet, method, batches=mnist_batches)
    want = native_scores(lenet_torch, method, mnist_batches)
    assert list(ours) == list(want)
    scale = max(float(w.abs().max()) for w in want.values())
    for name in want:
        # float64 twin vs float64 torch module: the same math in a different op order (Gemm vs
        # Linear, ONNX attribute epsilon); second derivatives lose a few digits more than values.
        torch.testing.assert_close(ours[name], want[name], rtol=1e-7, atol=1e-9 * scale)


def test_grasp_keeps_the_largest_signed_theta_hg(lenet, lenet_torch, mnist_batches):
    """GraSP removes the largest −θ⊙Hg, i.e. keeps the largest θ⊙Hg: signed, never |·|."""
    want = native_scores(lenet_torch, "grasp", mnist_batches)
    assert any(bool((w < 0).any()) for w in want.values()) and any(bool((w > 0).any()) for w in want.values())
    total = sum(w.numel() for w in want.values())
    keep = round(total * 0.1)
    masks = prune_twin(lenet, method="grasp", density=0.1, batches=mnist_batches).masks
    signed = select_masks(want, keep)
    by_magnitude = select_masks({n: w.abs() for n, w in want.items()}, keep)
    agree = sum(int((masks[n] & signed[n]).sum()) for n in want)
    assert agree >= keep - 2  # near-ties within the tolerance above may swap a pair
    overlap_abs = sum(int((masks[n] & by_magnitude[n]).sum()) for n in want)
    assert overlap_abs < 0.9 * keep  # the absolute value would be a different method
    kept_min = min(float(want[n][masks[n]].min()) for n in want if masks[n].any())
    assert kept_min > 0  # at 10 % kept, removing any kept weight would reduce the gradient norm


def test_mag_and_rand(lenet):
    mag = score(lenet, "mag")
    params = lenet.onnx_parameters()
    assert all(torch.equal(mag[n], params[n].detach().double().abs()) for n in mag)
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    r1, r2 = score(lenet, "rand", generator=gen()), score(lenet, "rand", generator=gen())
    assert all(torch.equal(r1[n], r2[n]) and r1[n].shape == params[n].shape for n in r1)
    assert all(float(r.min()) >= 0 and float(r.max()) < 1 for r in r1.values())


def test_float32_precision_option(lenet):
    s64 = score(lenet, "synflow")
    s32 = score(lenet, "synflow", precision=torch.float32)
    for n in s64:
        assert s32[n].dtype == torch.float32 and s64[n].dtype == torch.float64
        torch.testing.assert_close(s32[n].double(), s64[n], rtol=1e-3, atol=1e-6 * float(s64[n].max()))


class TwoGates(nn.Module):
    """Two squeeze-and-excitation gates reading one pooled tensor: the pooling step gets wrapped twice
    while SynFlow scores, and must still come back as it was."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        pooled = y.mean((2, 3), keepdim=True)
        z = y * torch.sigmoid(self.fc1(pooled)) + y * torch.sigmoid(self.fc2(pooled))
        return self.head(z.mean((2, 3)))


def test_linearization_is_undone_when_gates_share_a_squeeze():
    twin = Twin(export(TwoGates().eval(), (1, 3, 6, 6)))
    snap = snapshot(twin)
    x = torch.rand(2, 3, 6, 6)
    before = twin(x).detach()
    scores = score(twin, "synflow")
    assert all(bool(torch.isfinite(s).all()) for s in scores.values())
    assert_unchanged(twin, snap)
    assert torch.equal(twin(x).detach(), before)
