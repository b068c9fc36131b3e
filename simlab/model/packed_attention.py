"""Attention over a packed shared-prefix batch in pieces: each group's prefix causal on its own, then the suffix
tokens against the whole sequence with their rows of the block mask.

A packed sequence holds every group's prefix, then every row's suffix (and, with ``pack_length_multiple``, pads at
the end); its block mask (:func:`simlab.model.shared_prefix.packed_attention_mask`) lets a prefix token see only its
own group's earlier prefix tokens. So the mask's rows for the prefixes are causal triangles on the diagonal and zero
elsewhere, and one attention call over the whole length T computes T² scores of which those rows use a few. In
pieces, each prefix runs causally with no mask (kernels skip the upper triangle; on a GPU sdpa may pick its flash
kernel) and the suffix tokens run against all T keys with their mask rows: P²/2 + S·T scores instead of T² for a
prefix of P and suffixes of S tokens. Every query sees exactly the keys it saw, so the output is the one call's up to
float rounding (tests/test_shared_prefix.py). Measured in experiments/PERFORMANCE.md ("Packed attention in
pieces").

The pieces need each group's prefix length as Python ints, so that cutting the sequence costs no device sync: the
collator ships them (``packed_prefix_lengths``), and :func:`simlab.model.shared_prefix.packed_answer_hidden_states`
passes them to the decoder as the keyword :data:`KEYWORD`, which transformers hands through every layer to its
attention function. simlab's sdpa (:mod:`simlab.model.cpu_attention`) takes it; any other attention function
ignores it and attends with the whole mask, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

KEYWORD = "simlab_packed_prefix_lengths"


def attend_in_pieces(attend: Callable, module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor, prefix_lengths: Sequence[int],
                     **kwargs) -> tuple[torch.Tensor, None]:
    """``attend`` (a transformers attention function taking sdpa's masks) over a packed batch in pieces: query, key
    and value [1, heads, T, D], ``attention_mask`` the packed block mask [1, 1, T, T] (boolean), ``prefix_lengths``
    each group's prefix length in packed order. Returns ``attend``'s (output [1, T, heads, D], None)."""
    kwargs.pop("is_causal", None)
    pieces, start = [], 0
    for length in prefix_lengths:
        end = start + length
        output, _ = attend(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], None,
                           is_causal=True, **kwargs)
        pieces.append(output)
        start = end
    if start < query.shape[2]:
        output, _ = attend(module, query[:, :, start:], key, value, attention_mask[..., start:, :], is_causal=False,
                           **kwargs)
        pieces.append(output)
    return torch.cat(pieces, dim=1), None
