"""Option scores from a causal LM without building full-vocabulary logits.

The decoder runs once; only the hidden state at each row's answer slot (the token '(' that ends the
prompt) is multiplied by the output-embedding rows of that row's option letters. A batch from
:class:`simlab.data.batching.SharedPrefixCollator` (it has ``prefix_ids``) runs each shared prefix once
(:mod:`simlab.model.shared_prefix`), in two decoder passes or one packed pass; the scores are the same.
"""

from __future__ import annotations

import torch

from simlab.model import compilation
from simlab.model.adapters import base_model


def option_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, K] next-token logits of each row's option letters (padded slots hold garbage; mask them)."""
    lm = base_model(model)
    compilation.mark_step(lm)
    if "packed_ids" in batch:
        from simlab.model.shared_prefix import packed_answer_hidden_states

        answer_hidden = packed_answer_hidden_states(lm, batch)  # [B, H]
    elif "prefix_ids" in batch:
        from simlab.model.shared_prefix import answer_hidden_states

        answer_hidden = answer_hidden_states(lm, batch)  # [B, H]
    else:
        decoder = lm.get_decoder()
        hidden = decoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        answer_hidden = hidden[rows, batch["answer_index"]]  # [B, H]
    head = lm.get_output_embeddings()
    weight = head.weight[batch["letter_ids"]]  # [B, K, H]
    logits = torch.einsum("bh,bkh->bk", answer_hidden.to(weight.dtype), weight)
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[batch["letter_ids"]]
    return _model_logit_transforms(lm.config, logits.float())


def _model_logit_transforms(config, logits: torch.Tensor) -> torch.Tensor:
    """Apply the elementwise transforms some architectures put after the LM head (Cohere scale, Gemma cap)."""
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, (int, float)):
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if isinstance(cap, (int, float)) and cap > 0:
        logits = torch.tanh(logits / cap) * cap
    return logits


def simulator_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The simulator's option logits: the model's, plus each row's log prior when the batch carries one (the
    prior-anchored simulator, ``q ∝ prior · exp(logits)``, :mod:`simlab.simulator.prior`). Without a prior:
    the model's."""
    logits = option_logits(model, batch)
    log_prior = batch.get("log_prior")
    return logits if log_prior is None else logits + log_prior
