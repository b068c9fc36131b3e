"""How many distinct batch shapes `make run`'s training epoch makes, and what padding packed batches to a length
multiple (``data.pack_length_multiple``) costs in token positions: CUDA graphs (``module.compile_mode=
reduce-overhead``) record one graph per shape, so the multiple trades recorded graphs against padded tokens. Counted
through the run's own datamodule (config, sampler, collator: the same batches the run makes). Cited in
experiments/PERFORMANCE.md.

    python experiments/pack_lengths.py [overrides of run.py, e.g. method=prior_anchored]
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from simlab.data.batching import computed_tokens
from simlab.model import load_language_model
from simlab.tasks.common import load_data

REPO = Path(__file__).resolve().parents[1]
MULTIPLES = (1, 16, 32, 64, 128)


def shapes(datamodule, multiple: int) -> tuple[int, int, int, set[int]]:
    """(batches, packed batches, token positions, distinct packed lengths) of one training epoch."""
    datamodule.pack_length_multiple = multiple
    batches = packed = tokens = 0
    lengths: set[int] = set()
    for item in datamodule.train_dataloader():
        batches += 1
        tokens += computed_tokens(item)
        if "packed_ids" in item:
            packed += 1
            lengths.add(int(item["packed_ids"].shape[1]))
    return batches, packed, tokens, lengths


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides or ["method=prior_anchored"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # the data config names the run folder (${hydra:...})
    datamodule = load_data(cfg)
    datamodule.set_tokenizer(load_language_model(embedded="smollm2_135m_instruct").tokenizer)
    datamodule.setup()
    print(f"train subset {datamodule.train_subset}, shared_prefix {datamodule.shared_prefix}, batch "
          f"{datamodule.batch_size}, pack_max_tokens {datamodule.pack_max_tokens}")
    print("| pack_length_multiple | batches | packed | distinct packed lengths | shortest, longest | token positions "
          "| vs unpadded |")
    print("|---:|---:|---:|---:|---|---:|---:|")
    baseline = None
    for multiple in MULTIPLES:
        batches, packed, tokens, lengths = shapes(datamodule, multiple)
        baseline = baseline or tokens
        print(f"| {multiple} | {batches} | {packed} | {len(lengths)} | {min(lengths)}, {max(lengths)} | {tokens:,} | "
              f"{tokens / baseline:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
