"""How many token positions the test pass of `make run` computes, through its own datamodule (config, sampler and
collator: the same batches the run makes): one loader per test subset against the subsets merged into one loader
(``data.merge_test_subsets``: a question asked in several subsets has its prefix computed with all their countries),
with and without C1-Q2, whose scores a fine-tune takes from its best validation (``task.reuse_validation``), at
a few evaluation batch sizes. Cited in experiments/PERFORMANCE.md.

    python experiments/prefix_tokens.py [overrides of run.py, e.g. method=prior_anchored]
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


def test_tokens(datamodule, merge: bool, reuse: bool, batch: int) -> tuple[int, int]:
    """(token positions, batches) of the test loaders under these settings."""
    datamodule.merge_test_subsets, datamodule.eval_batch_size = merge, batch
    datamodule.reused_tests = {datamodule.valid_subset} if reuse else set()
    tokens = batches = 0
    for loader in datamodule.test_dataloader():
        for item in loader:
            tokens += computed_tokens(item)
            batches += 1
    return tokens, batches


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides or ["method=prior_anchored"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # the data config names the run folder (${hydra:...})
    datamodule = load_data(cfg)
    datamodule.set_tokenizer(load_language_model(embedded="smollm2_135m_instruct").tokenizer)
    datamodule.setup()
    configured = cfg.data.eval_batch_size
    baseline, _ = test_tokens(datamodule, merge=False, reuse=False, batch=configured)
    print(f"test subsets {datamodule.test_subsets}, shared_prefix {datamodule.shared_prefix}, "
          f"data.eval_batch_size {configured}")
    print("| loaders | C1-Q2 | eval batch | token positions | batches | vs one loader per subset with C1-Q2 |")
    print("|---|---|---:|---:|---:|---:|")
    for merge, reuse, batch in [(False, False, configured), (True, False, configured), (False, True, configured),
                                (True, True, configured), (True, True, 72), (True, True, 96)]:
        tokens, batches = test_tokens(datamodule, merge, reuse, batch)
        print(f"| {'merged' if merge else 'per subset'} | {'reused' if reuse else 'tested'} | {batch} | {tokens:,} | "
              f"{batches} | {tokens / baseline:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
