"""Channel pruning of whole attention heads (issue 12).

A Reshape that splits a projection's channel axis [B, S, H*D] -> [B, S, H, D] ties the D channels of
each head into one channel; the head label then follows Transpose, the batched MatMuls Q @ K^T and
P @ V (the head axis is a batch axis of both operands: tied like an elementwise op, 0 where either
operand is), the scale, the mask Add, Softmax (not zero-preserving: why P @ V takes its zero from V)
and the merge Reshape back into the output projection. The rewrite writes the kept head count into
the split Reshape's shape and kept*D into the merge's; exactness is checked as in test_structured.py:
the pruned model equals the original with the removed heads' Q/K/V columns and biases zeroed.
Before this, the split froze the heads: the block below had 47.5 % of its MACs in prunable groups.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from models.torch_nets import export
from onnxprune.structured import analyze, rewrite, summary
from onnxprune.structured.shapes import value_shapes
from test_structured import check_exact

E, H, S = 24, 4, 5
D = E // H


class Block(nn.Module):
    """Pre-norm self-attention written out (q, k, v -> view -> transpose -> softmax(q k^T) v -> merge
    -> out) + residual + FFN. `split`/`merge` "const" give the view sizes as Python ints; "shape"
    computes the head count (split) or the merged width (merge) from x.shape at run time."""

    def __init__(self, bias: bool = True, split: str = "const", merge: str = "const", mask: bool = False):
        super().__init__()
        self.split, self.merge = split, merge
        self.q, self.k, self.v, self.o = (nn.Linear(E, E, bias=bias) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(E), nn.LayerNorm(E)
        self.up, self.down = nn.Linear(E, 2 * E), nn.Linear(2 * E, E)
        self.mask = torch.triu(torch.full((1, 1, S, S), -1e4), 1) if mask else None

    def forward(self, x):
        b, s, e = x.shape
        y = self.norm1(x)
        heads = H if self.split == "const" else e // D

        def split(t):
            return t.view(b, s, heads, D).transpose(1, 2)

        q, k, v = split(self.q(y)), split(self.k(y)), split(self.v(y))
        if self.mask is None:
            scores = q @ k.transpose(-2, -1) / math.sqrt(D)
        else:
            scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(D)) + self.mask
        z = (torch.softmax(scores, -1) @ v).transpose(1, 2)
        z = z.reshape(b, s, H * D) if self.merge == "const" else z.reshape(b, s, e)
        x = x + self.o(z)
        return x + self.down(torch.relu(self.up(self.norm2(x))))


class BertSelf(nn.Module):
    """HF BERT style: x.size()[:-1] + (H, D), permute, a [B,1,1,S] mask, dense + LayerNorm on the residual."""
    def __init__(self, nan_guard: bool = False):
        super().__init__()
        self.nan_guard = nan_guard  # transformers 5's eager attention: where(isnan(p), 0, p)
        self.q, self.k, self.v, self.o = (nn.Linear(E, E) for _ in range(4))
        self.ln, self.ln2 = nn.LayerNorm(E), nn.LayerNorm(E)
        self.up, self.down = nn.Linear(E, 2 * E), nn.Linear(2 * E, E)
        self.mask = torch.zeros(1, 1, 1, S)
        self.mask[..., -1] = -1e4
    def t(self, x):
        return x.view(x.size()[:-1] + (H, D)).permute(0, 2, 1, 3)
    def forward(self, x):
        q, k, v = self.t(self.q(x)), self.t(self.k(x)), self.t(self.v(x))
        p = nn.functional.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D) + self.mask, dim=-1)
        if self.nan_guard:
            p = torch.where(torch.isnan(p), torch.zeros(1), p)
        c = torch.matmul(p, v).permute(0, 2, 1, 3).contiguous()
        c = c.view(c.size()[:-2] + (E,))
        h = self.ln(self.o(c) + x)
        return self.ln2(self.down(nn.functional.gelu(self.up(h))) + h)


class TwoBlocks(nn.Module):
    """Two layers: the exporter reuses one constant for every equal shape entry (both layers' head
    count), so each Reshape gets its own rewritten copy."""

    def __init__(self):
        super().__init__()
        self.a, self.b = Block(), Block(mask=True)

    def forward(self, x):
        return self.b(self.a(x))


class Encoder(nn.Module):
    """torch's own attention (nn.MultiheadAttention inside nn.TransformerEncoderLayer): one fused
    in-projection viewed as [..., 3, E] whose parts are taken by Gather, heads split as
    [S, B*H, D] (and back to [B, H, S, D] for the product), Slice bounds computed as Mod(2, 3)."""

    def __init__(self, batch_first: bool = True):
        super().__init__()
        self.batch_first = batch_first
        self.layer = nn.TransformerEncoderLayer(E, H, 2 * E, dropout=0.0, batch_first=batch_first)

    def forward(self, x):
        return self.layer(x if self.batch_first else x.transpose(0, 1))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(E, H, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class FusedQKV(nn.Module):
    """timm's Attention: one qkv Linear viewed as [B, N, 3, H, D] (parts and heads in one Reshape),
    permuted, unbound (Split + Squeeze), and merged back with C from x.shape."""

    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(E, 3 * E), nn.Linear(E, E)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * D ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Conv1D(nn.Module):
    """GPT-2's Conv1D: x.view(-1, x.size(-1)) @ W + b, viewed back to x.size()[:-1] + (nf,): the input's
    channel count is read from its own Shape at run time."""

    def __init__(self, nx: int, nf: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(nx, nf)), nn.Parameter(torch.randn(nf))

    def forward(self, x):
        size = x.size()[:-1] + (self.weight.shape[1],)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size)


class CountFromElsewhere(nn.Module):
    """b's units are viewed with the count read from a's: pruning a alone would break that view (c is
    an ordinary hidden layer, so that something is prunable)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(E, 2 * E), nn.Linear(E, 2 * E), nn.Linear(E, 2 * E)
        self.out_a, self.out_b, self.out_c = nn.Linear(2 * E, E), nn.Linear(2 * E, E), nn.Linear(2 * E, E)

    def forward(self, x):
        ha, hb, hc = torch.relu(self.a(x)), torch.relu(self.b(x)), torch.relu(self.c(x))
        return self.out_a(ha) + self.out_b(hb.reshape(-1, ha.size(-1))).view(x.shape) + self.out_c(hc)


class RelativeBias(nn.Module):
    """T5's attention: bias-free projections and a per-head bias on the scores, gathered from an
    embedding of relative-position buckets (one column per head)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(E, E, bias=False) for _ in range(4))
        self.table = nn.Embedding(8, H)
        position = torch.arange(S)
        self.register_buffer("buckets", (position[None] - position[:, None]).clamp(-4, 3) + 4)

    def forward(self, x):
        b, s, _ = x.shape

        def split(t):
            return t.view(b, s, H, D).transpose(1, 2)

        scores = split(self.q(x)) @ split(self.k(x)).transpose(-1, -2)
        scores = scores + self.table(self.buckets).permute(2, 0, 1).unsqueeze(0)
        z = (scores.softmax(-1) @ split(self.v(x))).transpose(1, 2).reshape(b, s, E)
        return x + self.o(z)


def build(net: nn.Module, batch: int | None = None):
    """Exported with a symbolic batch, or with a fixed `batch` (the shapes become constants)."""
    torch.manual_seed(0)
    for p in net.parameters():  # non-trivial biases and norm parameters
        nn.init.normal_(p, std=0.3)
    return export(net.eval(), (batch or 1, S, E), dynamic_batch=batch is None)


def head_channels(cg, name: str, axis: int) -> np.ndarray:
    return cg.keys()[(name, axis)]


def prune_some_heads(model, heads: np.ndarray) -> tuple[int, dict[str, list[int]]]:
    """Exact random prunings until one keeps some but not all of the H heads: (kept, rewritten dims)."""
    for seed in range(4):
        cg, removed = check_exact(model, fraction=0.5, seed=seed)
        kept = int((~removed[np.unique(heads)]).sum())
        if 0 < kept < H:
            break
    assert 0 < kept < H
    return kept, {t.name: list(t.dims) for t in rewrite(cg, removed).graph.initializer}


def split_shapes(model) -> list[tuple[int, ...]]:
    """Measured output shapes of the head-splitting Reshapes (rank 4), sorted."""
    shapes = value_shapes(model)
    return sorted(shapes[n.output[0]] for n in model.graph.node
                  if n.op_type == "Reshape" and len(shapes[n.output[0]]) == 4)


@pytest.mark.parametrize("options", [{}, {"bias": False}, {"mask": True}], ids=["bias", "no_bias", "mask_mul"])
def test_heads_prunable_and_exact(options):
    model = build(Block(**options))
    cg = analyze(model)
    assert cg.coverage() == 1.0  # every MatMul, attention's included, in a prunable group
    q = head_channels(cg, "q.weight", 0)
    assert not cg.frozen[q].any()
    blocks = q.reshape(H, D)
    assert (blocks == blocks[:, :1]).all() and len(np.unique(blocks[:, 0])) == H  # one channel per head
    for name, axis in (("k.weight", 0), ("v.weight", 0), ("o.weight", 1)):
        assert np.array_equal(head_channels(cg, name, axis), q)  # tied across Q, K, V and the output rows
    for seed in range(3):
        cg, removed = check_exact(model, fraction=0.5, seed=seed)
        kept_heads = int((~removed[np.unique(q)]).sum())
        if kept_heads < H:
            break
    assert 0 < kept_heads < H
    pruned = rewrite(cg, removed)
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert dims["q.weight"] == dims["k.weight"] == dims["v.weight"] == [kept_heads * D, E]
    assert dims["o.weight"] == [E, kept_heads * D]
    assert split_shapes(pruned) == [(1, S, kept_heads, D)] * 3  # the view's head count is rewritten
    layers = {row["node"]: row for row in summary(cg, removed)["layers"]}
    attention = [row for name, row in layers.items() if name in {"/MatMul", "/MatMul_1"}]
    assert len(attention) == 2 and all(row["macs_kept"] == pytest.approx(row["macs"] * kept_heads / H)
                                       for row in attention)


def test_shared_shape_constants_get_copies():
    model = build(TwoBlocks())
    cg = analyze(model)
    assert cg.coverage() == 1.0
    qa, qb = head_channels(cg, "a.q.weight", 0), head_channels(cg, "b.q.weight", 0)
    assert not cg.frozen[qa].any() and not cg.frozen[qb].any() and not set(qa) & set(qb)
    removed = np.zeros(cg.n_channels, bool)
    removed[[qa[0], qb[0], qb[D]]] = True  # layer a loses head 0, layer b heads 0 and 1
    pruned = rewrite(cg, removed)
    assert split_shapes(pruned) == [(1, S, 2, D)] * 3 + [(1, S, 3, D)] * 3
    check_exact(model, fraction=0.4)


@pytest.mark.parametrize("options", [{"split": "shape"}, {"merge": "shape"}], ids=["head_count", "merge_width"])
def test_head_sizes_computed_from_a_fixed_dim_fold(options):
    """view(b, s, e // D, D) / reshape(b, s, e) with e from x.shape: shape arithmetic, but on a dim that
    is the same in both probes (only the batch is symbolic), so it folds; the Reshape that reads it gets
    a constant copy with the kept size, and the original arithmetic stays for its other readers."""
    model = build(Block(**options))
    cg = analyze(model)
    q = head_channels(cg, "q.weight", 0)
    assert cg.coverage() == 1.0 and not cg.frozen[q].any()
    cg, removed = check_exact(model)
    kept = int((~removed[np.unique(q)]).sum())
    assert 0 < kept < H
    pruned = rewrite(cg, removed)
    assert split_shapes(pruned) == [(1, S, kept, D)] * 3
    assert any(t.name.endswith("_pruned0") for t in pruned.graph.initializer)


@pytest.mark.parametrize("net, attn", [(lambda: Encoder(), "layer.self_attn"),
                                       (lambda: Encoder(batch_first=False), "layer.self_attn"),
                                       (lambda: Attention(), "attn")],
                         ids=["encoder_layer", "sequence_first", "multihead_attention"])
@pytest.mark.parametrize("batch", [None, 2], ids=["symbolic_batch", "fixed_batch"])
def test_torch_attention_heads_exact(net, attn, batch):
    """The split is [S, B*H, D]; with a symbolic batch B*H is computed as Mul(B, H) and E read from
    x.size(-1) (H rewritten, E folded), with a fixed one every size is shape arithmetic on constants.
    Before: Shape of the fused projection froze every head (the encoder layer's MACs 47 % in prunable
    groups); now each head is one channel across the fused Q/K/V rows and out_proj's columns."""
    model = build(net(), batch=batch)
    cg = analyze(model)
    assert cg.coverage() == 1.0
    out_proj, fused = f"{attn}.out_proj.weight", f"{attn}.in_proj_weight"
    heads = head_channels(cg, out_proj, 1)
    assert not cg.frozen[heads].any() and len(np.unique(heads)) == H
    packed = head_channels(cg, fused, 0).reshape(3, E)  # q, k and v rows, one channel per head
    assert (packed == heads).all()
    kept, dims = prune_some_heads(model, heads)
    assert dims[fused] == [3 * kept * D, E] and dims[out_proj] == [E, kept * D]


def test_vision_transformer_heads_exact():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=H, hidden_dim=E, mlp_dim=2 * E,
                            num_classes=5)
    for p in net.parameters():  # torchvision starts the head at zero
        nn.init.normal_(p, std=0.3)
    model = export(net.eval(), (1, 3, 16, 16), dynamic_batch=False)
    cg = analyze(model)
    for layer in range(2):
        heads = head_channels(cg, f"encoder.layers.encoder_layer_{layer}.self_attention.out_proj.weight", 1)
        assert not cg.frozen[heads].any() and len(np.unique(heads)) == H
    check_exact(model, fraction=0.5)


@pytest.mark.parametrize("nan_guard", [False, True], ids=["plain", "nan_guard"])
def test_bert_style_heads_exact(nan_guard):
    """HF BERT's transpose_for_scores: x.view(x.size()[:-1] + (H, D)) builds the shape from Shape(x)
    (the batch and sequence dims, which pruning keeps) and the constant (H, D): the head count is a
    constant piece of that Concat, rewritten; the merge c.view(c.size()[:-2] + (E,)) likewise."""
    model = build(BertSelf(nan_guard))
    cg = analyze(model)
    q = head_channels(cg, "q.weight", 0)
    assert cg.coverage() == 1.0 and not cg.frozen[q].any() and len(np.unique(q)) == H
    cg, removed = check_exact(model)
    kept = int((~removed[np.unique(q)]).sum())
    assert 0 < kept < H and split_shapes(rewrite(cg, removed)) == [(1, S, kept, D)] * 3


@pytest.mark.parametrize("batch", [None, 2], ids=["symbolic_batch", "fixed_batch"])
def test_timm_fused_qkv_heads_exact(batch):
    """Before: the [B, N, 3, H, D] view split the channel axis three ways and froze every head."""
    model = build(FusedQKV(), batch=batch)
    cg = analyze(model)
    assert cg.coverage() == 1.0
    heads = head_channels(cg, "proj.weight", 1)
    assert not cg.frozen[heads].any() and len(np.unique(heads)) == H
    assert (head_channels(cg, "qkv.weight", 0).reshape(3, E) == heads).all()
    kept, dims = prune_some_heads(model, heads)
    assert dims["qkv.weight"] == [3 * kept * D, E] and dims["proj.weight"] == [E, kept * D]


def test_a_channel_count_read_at_run_time_by_its_own_view_is_prunable():
    """Before: Shape of a channel tensor froze its channels (GPT-2's MLP 0 % in prunable groups)."""
    model = build(nn.Sequential(Conv1D(E, 2 * E), nn.GELU(), Conv1D(2 * E, E)))
    cg = analyze(model)
    hidden = head_channels(cg, "0.weight", 1)
    assert cg.coverage() == 1.0 and not cg.frozen[hidden].any()
    cg, removed = check_exact(model)
    assert removed[hidden].any()


def test_a_channel_count_read_for_other_channels_stays_frozen():
    model = build(CountFromElsewhere())
    cg = analyze(model)
    assert cg.frozen[head_channels(cg, "a.weight", 0)].all() and cg.frozen[head_channels(cg, "b.weight", 0)].all()
    assert any("used for its channel count" in reason for reason in cg.reasons)
    assert not cg.frozen[head_channels(cg, "c.weight", 0)].any()
    check_exact(model)


def test_relative_position_bias_heads_exact():
    """The bias table's columns are the heads' (an embedding is a producer of channels): before, the
    computed bias froze every head (T5's encoder 47 % of MACs in prunable groups)."""
    model = build(RelativeBias())
    cg = analyze(model)
    heads = head_channels(cg, "q.weight", 0)
    assert cg.coverage() == 1.0 and not cg.frozen[heads].any()
    assert (head_channels(cg, "table.weight", 1) == np.unique(heads)).all()
    kept, dims = prune_some_heads(model, heads)
    assert dims["table.weight"] == [8, kept] and dims["q.weight"] == [kept * D, E]


def test_sizes_that_follow_a_symbolic_sequence_length_are_not_folded():
    """Batch and sequence both symbolic: the views' b and s entries stay computed (only the piece that
    holds the head count, from x.shape's fixed width, is folded and rewritten), so the pruned model
    runs at a sequence length neither probe used (check_exact feeds 3 x 3 x E, the probes 2 x 2 and
    4 x 4)."""
    torch.manual_seed(0)
    model = export(Block(split="shape", merge="shape").eval(), (1, S, E), dynamic_dims=(0, 1))
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_param  # the sequence is symbolic
    cg = analyze(model)
    assert not cg.frozen[head_channels(cg, "q.weight", 0)].any()
    check_exact(model)
