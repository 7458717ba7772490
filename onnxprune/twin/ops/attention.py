"""Attention (opset 23+) and RotaryEmbedding, following the spec's reference semantics.

Attention: softmax((Q·s)(K·s)ᵀ + bias)·V per head, with s = sqrt(scale) (scale defaults to
1/sqrt(head size)), an additive bias built from attn_mask (bool: attend where True), is_causal
(bottom-right aligned: query i sees key j <= i + offset), sliding windows and nonpad_kv_seqlen, where
offset is the cached length (past_key) or nonpad_kv_seqlen - q_len. A row with every key masked gives
zeros. Grouped-query attention repeats each KV head for its query heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import register


def _split_heads(x, heads):
    """[B, L, heads * h] -> [B, heads, L, h]."""
    b, length, hidden = x.shape
    return x.reshape(b, length, heads, hidden // heads).transpose(1, 2)


def _mask_bias(mask, kv_len, dtype):
    """attn_mask as an additive bias, padded to kv_len keys (padding masked)."""
    pad = kv_len - mask.shape[-1]
    if mask.dtype == torch.bool:
        mask = F.pad(mask, (0, pad), value=False) if pad > 0 else mask
        return torch.zeros((), dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return F.pad(mask.to(dtype), (0, pad), value=float("-inf")) if pad > 0 else mask.to(dtype)


def _allowed_bias(allowed, dtype):
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))


def _bias(q, k_len, attn_mask, past_len, nonpad, is_causal, left, right):
    """The additive bias, broadcastable to [B, H, L, S]."""
    q_len, device, dtype = q.shape[2], q.device, q.dtype
    bias = torch.zeros((q_len, k_len), dtype=dtype, device=device)
    if attn_mask is not None:
        bias = bias + _mask_bias(attn_mask, k_len, dtype)
    i = torch.arange(q_len, device=device).reshape(-1, 1)
    j = torch.arange(k_len, device=device).reshape(1, -1)
    # offset of the query block among the keys: per batch ([B, 1, 1, 1]) for an external cache
    offset = (nonpad.reshape(-1, 1, 1, 1).long() - q_len) if (nonpad is not None and past_len == 0) else past_len
    diff = i + offset - j  # how far key j lies behind query i
    if is_causal:
        bias = bias + _allowed_bias(diff >= 0, dtype)
    if left >= 0 or right >= 0:  # sliding window: -1 leaves that side open
        allowed = (diff <= left if left >= 0 else diff == diff) & (-diff <= right if right >= 0 else diff == diff)
        bias = bias + _allowed_bias(allowed, dtype)
    if nonpad is not None:
        bias = bias + _allowed_bias(j.reshape(1, 1, 1, -1) < nonpad.reshape(-1, 1, 1, 1), dtype)
    return bias


@register("Attention", since=23)
def attention(q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *, is_causal,
              kv_num_heads, q_num_heads, qk_matmul_output_mode, scale, softcap, softmax_precision,
              left_window_size=-1, right_window_size=-1, ctx, n_outputs):
    three_d = q.dim() == 3
    if three_d:
        q, k, v = _split_heads(q, q_num_heads), _split_heads(k, kv_num_heads), _split_heads(v, kv_num_heads)
    past_len = past_key.shape[2] if past_key is not None else 0
    present_k = torch.cat((past_key, k), 2) if past_key is not None else k
    present_v = torch.cat((past_value, v), 2) if past_value is not None else v
    bias = _bias(q, present_k.shape[2], attn_mask, past_len, nonpad_kv_seqlen, is_causal, left_window_size,
                 right_window_size)
    reps = q.shape[1] // present_k.shape[1]  # grouped-query attention: each KV head serves `reps` heads
    k_all = present_k.repeat_interleave(reps, 1) if reps > 1 else present_k
    v_all = present_v.repeat_interleave(reps, 1) if reps > 1 else present_v
    s = math.sqrt(scale if scale is not None else 1 / math.sqrt(q.shape[3]))
    qk = (q * s) @ (k_all * s).transpose(-1, -2)
    if softcap > 0:
        qk = softcap * torch.tanh(qk / softcap)
    logits = qk + bias
    # fully masked rows (decided on the bias) give zeros; softmax them as 0s to keep NaN out of gradients
    dead = torch.isneginf(bias.amax(dim=-1, keepdim=True))
    logits = logits.masked_fill(dead, 0.0)
    probs = torch.softmax(logits.to(ctx.dtype(softmax_precision)) if softmax_precision else logits, dim=-1)
    probs = probs.masked_fill(dead, 0.0)
    y = probs.to(q.dtype) @ v_all
    if three_d:
        y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
    qk_out = {2: qk + bias, 3: probs}.get(qk_matmul_output_mode, qk).to(q.dtype)
    return (y, present_k, present_v, qk_out)[:n_outputs] if n_outputs > 1 else y


@register("RotaryEmbedding", since=23)
def rotary_embedding(x, cos_cache, sin_cache, position_ids=None, *, interleaved, num_heads, rotary_embedding_dim):
    shape = x.shape
    # work as [B, L, heads, h]: 4-D inputs are [B, heads, L, h], 3-D ones [B, L, heads * h]
    x = x.transpose(1, 2) if x.dim() == 4 else x.reshape(shape[0], shape[1], num_heads, -1)
    dim = rotary_embedding_dim or x.shape[3]
    if position_ids is not None:
        cos_cache, sin_cache = cos_cache[position_ids.long()], sin_cache[position_ids.long()]
    cos, sin = cos_cache.unsqueeze(2), sin_cache.unsqueeze(2)
    rot, rest = x[..., :dim], x[..., dim:]
    x1, x2 = (rot[..., 0::2], rot[..., 1::2]) if interleaved else rot.chunk(2, dim=-1)
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    rot = torch.stack((real, imag), -1).flatten(-2) if interleaved else torch.cat((real, imag), -1)
    y = torch.cat((rot, rest), -1)
    return y.reshape(shape) if len(shape) == 3 else y.transpose(1, 2)
