"""The paths the bench compares, each as the settings of one :class:`Method`.

The reference method (:mod:`simlab.devtools.bench.reference`) and simlab's path are the two ends; the shared-prefix
path is simlab's with prefix-grouped batches (packed where small, :data:`~simlab.data.batching.PACK_MAX_TOKENS`;
``--two-pass`` also times them all in two passes; ``--compile`` also times them with compiled decoder layers).
``--ablation`` walks from the reference to simlab a step at a time (:data:`EVAL_LADDER`, :data:`TRAIN_LADDER`) to
measure what each step contributes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from simlab.data.batching import PACK_MAX_TOKENS


@dataclass(frozen=True)
class Method:
    """How rows are batched and scored. The reference and simlab are the two ends; the ablation walks between.

    pad_to_max: pad every prompt to ``max_length`` (tokenizer ``padding="max_length"``) instead of to the
        batch's own longest prompt.
    length_grouped: batches of similar length (simlab's sampler) instead of the rows' order.
    cached: use the prompts tokenised once by the datamodule instead of tokenising in ``__getitem__`` every pass.
    full_vocab: ``model(...).logits`` over the whole vocabulary at every position instead of ``option_logits``.
    loop_loss: gather letters and compute the loss row by row in Python instead of the masked batch loss.
    inference_mode: ``torch.inference_mode`` instead of ``torch.no_grad`` for evaluation.
    threads: torch intra-op threads (None: the run's setting).
    shared_prefix: batches of one prompt prefix, the prefix run once per batch (needs ``cached``).
    pack_max_tokens: a shared-prefix batch of at most this many tokens runs as one packed sequence (0: never).
    pack_length_multiple: a packed batch padded to a multiple of this many tokens (a few shapes for CUDA graphs).
    compiled: run the decoder layers compiled (``--compile``: :mod:`simlab.model.compilation`); every other path
        runs them eagerly (the same model, under ``torch.compiler.set_stance("force_eager")``).
    """

    name: str
    pad_to_max: bool = True
    length_grouped: bool = False
    cached: bool = False
    full_vocab: bool = True
    loop_loss: bool = True
    inference_mode: bool = False
    threads: int | None = None
    shared_prefix: bool = False
    pack_max_tokens: int = PACK_MAX_TOKENS
    pack_length_multiple: int = 1
    compiled: bool = False


REFERENCE = Method("reference")
SIMLAB = Method(
    "simlab", pad_to_max=False, length_grouped=True, cached=True, full_vocab=False, loop_loss=False,
    inference_mode=True,
)
SHARED = replace(SIMLAB, name="shared-prefix", shared_prefix=True)
TWO_PASS = replace(SHARED, name="two-pass", pack_max_tokens=0)  # shared prefixes, never packed
COMPILED = replace(SHARED, name="compiled", compiled=True)  # shared prefixes, decoder layers compiled

# Each rung adds one step to the one before; the last two are simlab's path and simlab's path at 1 thread.
EVAL_LADDER = [
    REFERENCE,
    replace(REFERENCE, name="+ dynamic padding (batch's longest)", pad_to_max=False),
    replace(REFERENCE, name="+ length-grouped batches", pad_to_max=False, length_grouped=True),
    replace(REFERENCE, name="+ tokenised once (cached)", pad_to_max=False, length_grouped=True, cached=True),
    replace(SIMLAB, name="+ option logits only (no full vocab)", loop_loss=True, inference_mode=False),
    replace(SIMLAB, name="+ masked batch loss (no Python loop)", inference_mode=False),
    replace(SIMLAB, name="+ torch.inference_mode = simlab"),
    replace(SIMLAB, name="simlab at 1 thread", threads=1),
]
TRAIN_LADDER = [rung for rung in EVAL_LADDER if "inference_mode" not in rung.name]
TRAIN_LADDER[-2] = replace(TRAIN_LADDER[-2], name="+ masked batch loss = simlab")

