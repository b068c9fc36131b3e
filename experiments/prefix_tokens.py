"""How many tokens the test pass of `make run` computes with one prompt prefix per question per subset (as now),
against one prefix per question across the subsets that ask it (plain question-first prompts, the embedded model's
tokenizer). Cited in experiments/PERFORMANCE.md ("`make run` on 2 CPU cores").

    python experiments/prefix_tokens.py
"""

from __future__ import annotations

import collections

from simlab.data.batching import split_prefix
from simlab.data.prompts import PromptFormat
from simlab.data.rows import read_rows
from simlab.model import load_language_model

DATA = "simlab/data/survey/wvs7"
SUBSETS = {"valid": "C1-Q2", "test_1": "C1-Q3", "test_2": "C2-Q1", "test_3": "C2-Q2", "test_4": "C2-Q3",
           "test_5": "C3-Q1", "test_6": "C3-Q2", "test_7": "C3-Q3"}


def computed(sequences: list[list[int]]) -> int:
    """Tokens computed for one group: its shared prefix once (as the collator splits it), then every row's own."""
    shared = split_prefix(sequences)
    return shared + sum(len(s) - shared for s in sequences)


def main() -> None:
    tokenizer = load_language_model(embedded="smollm2_135m_instruct").tokenizer
    prompt = PromptFormat(style="plain", order="question_first")
    rows = [row for name in ("sft_wvs_valid.json.xz", "sft_wvs_test.json.xz")
            for row in read_rows(f"{DATA}/{name}", subset_names=SUBSETS).rows]
    groups = collections.defaultdict(list)  # (subset, question) -> the rows' token ids
    for row in rows:
        groups[row.subset, row.question_id].append(tokenizer(prompt.render(row))["input_ids"])
    per_subset = sum(computed(seqs) for seqs in groups.values())
    questions = collections.defaultdict(list)
    for (_, question), seqs in groups.items():
        questions[question].extend(seqs)
    across = sum(computed(seqs) for seqs in questions.values())
    print(f"{len(rows)} rows; tokens computed with one prefix per question per subset: {per_subset}; across "
          f"subsets: {across} ({1 - across / per_subset:.1%} fewer)")
    for subset in SUBSETS.values():
        mine = [seqs for (name, _), seqs in groups.items() if name == subset]
        prefix = sum(split_prefix(seqs) for seqs in mine)
        total = sum(computed(seqs) for seqs in mine)
        own = (total - prefix) / sum(len(seqs) for seqs in mine)
        print(f"{subset}: prefix {prefix / total:.1%} of the tokens computed, mean prefix {prefix / len(mine):.0f} "
              f"tokens, {own:.1f} own tokens per row")


if __name__ == "__main__":
    main()
