"""ai.onnx.ml ops that compute on tensors (misc.py holds the ones skl2onnx puts around an MLP): Binarizer,
TreeEnsemble; and TfIdfVectorizer over integer tokens (string tokens have no torch form).

The rest of the domain (ZipMap's maps, string label encoders, the older TreeEnsembleRegressor / Classifier,
SVMs...) is refused at build by the registry, naming op, domain, opset and node.
"""

from __future__ import annotations

import torch
from onnx import TensorProto

from ..registry import register

ML = "ai.onnx.ml"


@register("Binarizer", since=1, domain=ML)
def binarizer(x, *, threshold):
    return (x > threshold).to(x.dtype)


def _ngram_table(pool, counts, min_n, max_n, indexes):
    """Pool n-gram (a tuple) -> output column, for the searched sizes min_n..max_n."""
    table, k = {}, 0
    bounds = list(counts) + [len(pool)]
    for n, (start, end) in enumerate(zip(bounds, bounds[1:]), start=1):
        for first in range(start, end, n):
            if min_n <= n <= max_n:
                table[tuple(pool[first:first + n])] = indexes[k]
            k += 1
    return table


def _count_ngrams(row, table, min_n, max_n, max_skip, out):
    for skip in range(1, max_skip + 2):
        for start in range(len(row)):
            for n in range(max(min_n, 1 if skip == 1 else 2), max_n + 1):  # unigrams only once
                items = row[start:start + skip * (n - 1) + 1:skip]
                if len(items) == n and (column := table.get(tuple(items))) is not None:
                    out[column] += 1


@register("TfIdfVectorizer", since=9)
def tfidf_vectorizer(x, *, max_gram_length, max_skip_count, min_gram_length, mode, ngram_counts, ngram_indexes,
                     pool_int64s=None, pool_strings=None, weights=None, ctx):
    # Counts every pool n-gram of min..max items taken `skip` apart (skip 1..max_skip_count + 1).
    table = _ngram_table(pool_int64s, ngram_counts, min_gram_length, max_gram_length, ngram_indexes)
    rows = x.reshape(1, -1) if x.dim() < 2 else x
    counts = torch.zeros(rows.shape[0], max(ngram_indexes) + 1, dtype=torch.float64)
    for r, row in enumerate(rows.tolist()):
        _count_ngrams(row, table, min_gram_length, max_gram_length, max_skip_count, counts[r])
    w = torch.tensor(weights, dtype=torch.float64) if weights else torch.ones(counts.shape[1], dtype=torch.float64)
    y = {"TF": counts, "IDF": (counts > 0) * w, "TFIDF": counts * w}[mode]
    return (y.reshape(-1) if x.dim() < 2 else y).to(x.device, ctx.dtype(TensorProto.FLOAT))


def _member_table(modes, membership_values):
    """[nodes, k] set members of each MEMBER node (NaN padded); the flat attribute ends each set with NaN."""
    sets, current = [], []
    for v in (membership_values.tolist() if membership_values is not None else []):
        if v != v:  # NaN closes a set
            sets.append(current)
            current = []
        else:
            current.append(v)
    table = torch.full((len(modes), max([len(s) for s in sets] + [1])), float("nan"), dtype=torch.float64)
    for node, members in zip([i for i, m in enumerate(modes) if m == 6], sets):
        table[node, :len(members)] = torch.tensor(members, dtype=torch.float64)
    return table


def _longs(values, device):
    return torch.tensor([int(v) for v in values], dtype=torch.long, device=device)


@register("TreeEnsemble", since=5, domain=ML)
def tree_ensemble(x, *, aggregate_function, leaf_targetids, leaf_weights, membership_values=None, n_targets,
                  nodes_falseleafs, nodes_falsenodeids, nodes_featureids, nodes_hitrates=None,
                  nodes_missing_value_tracks_true=None, nodes_modes, nodes_splits, nodes_trueleafs,
                  nodes_truenodeids, post_transform, tree_roots):
    # Every (sample, tree) walk advances one level per pass until all stand on a leaf.
    if post_transform:
        raise NotImplementedError("TreeEnsemble post_transform other than NONE")
    dev = x.device
    modes, feats = _longs(nodes_modes, dev), _longs(nodes_featureids, dev)
    true_ids, false_ids = _longs(nodes_truenodeids, dev), _longs(nodes_falsenodeids, dev)
    true_leaf, false_leaf = _longs(nodes_trueleafs, dev).bool(), _longs(nodes_falseleafs, dev).bool()
    missing_true = _longs(nodes_missing_value_tracks_true or [0] * len(modes), dev).bool()
    splits = torch.as_tensor(nodes_splits, dtype=torch.float64, device=dev)
    members = _member_table(list(nodes_modes), membership_values).to(dev)
    data = x.double()  # thresholds compare exactly, whatever their tensor type
    node = _longs(tree_roots, dev).expand(x.shape[0], -1)  # [samples, trees]
    leaf = true_leaf[node] & false_leaf[node] & (true_ids[node] == false_ids[node])  # one-leaf trees
    node = torch.where(leaf, true_ids[node], node)
    for _ in range(len(modes) + 1):
        if bool(leaf.all()):
            break
        v, s = data.gather(1, feats[node]), splits[node]
        tests = torch.stack([v <= s, v < s, v >= s, v > s, v == s, v != s,  # modes 0-5, then 6: MEMBER
                             (v.unsqueeze(-1) == members[node]).any(-1)], -1)
        go_true = tests.gather(-1, modes[node].unsqueeze(-1)).squeeze(-1) | (missing_true[node] & v.isnan())
        step = torch.where(go_true, true_ids[node], false_ids[node])
        ends = torch.where(go_true, true_leaf[node], false_leaf[node])
        node, leaf = torch.where(leaf, node, step), leaf | ends
    weights = torch.as_tensor(leaf_weights, dtype=x.dtype, device=dev)[node]
    return _aggregate(weights, _longs(leaf_targetids, dev)[node], n_targets, aggregate_function)


def _aggregate(weights, targets, n_targets, function):
    """Per sample, the trees' leaf weights gathered by target: 0 SUM-like start, extreme for MIN / MAX."""
    info = torch.finfo(weights.dtype)
    start = {2: info.max, 3: info.min}.get(function, 0.0)
    out = torch.full((weights.shape[0], n_targets), start, dtype=weights.dtype, device=weights.device)
    reduce = {0: "sum", 1: "sum", 2: "amin", 3: "amax"}[function]  # 0 AVERAGE, 1 SUM, 2 MIN, 3 MAX
    out = out.scatter_reduce(1, targets, weights, reduce)
    return out / weights.shape[1] if function == 0 else out
