"""ai.onnx.ml ops that compute on tensors (misc.py holds the ones skl2onnx puts around an MLP), and
TfIdfVectorizer over integer tokens (string tokens have no torch form).

The rest of the domain (ZipMap's maps, string label encoders, tree ensembles, SVMs...) is refused at
build by the registry, naming op, domain, opset and node.
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
