"""Time task=simulate's scoring of one new question for all 63 WVS countries, before and after shared-prefix
execution, in one process (the model loaded once; each configuration timed 3 times, interleaved; medians):

    python experiments/simulate_timing.py [--data-root DIR] [--threads N]

"before" is the Simulator's per-row path (what task=simulate ran before shared-prefix execution: the paper's order,
batches of 16 sorted by length); the others add shared-prefix batches, the question_first order and batch 64.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from simlab.model import load_language_model
from simlab.runs.provenance import cpu_model
from simlab.simulate import Simulator, read_questions

CONFIGS = {
    "per-row, paper order, batch 16 (before)": dict(shared_prefix=False, prompt_order="paper", batch_size=16),
    "shared prefix, paper order, batch 64 (after, the embedded model's default)":
        dict(shared_prefix=True, prompt_order="paper", batch_size=64),
    "per-row, question_first, batch 16": dict(shared_prefix=False, prompt_order="question_first", batch_size=16),
    "shared prefix, question_first, batch 16": dict(shared_prefix=True, prompt_order="question_first", batch_size=16),
    "shared prefix, question_first, batch 64": dict(shared_prefix=True, prompt_order="question_first", batch_size=64),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--input", default="experiments/simulate_example.yaml")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_language_model(embedded="smollm2_135m_instruct")
    question = read_questions(args.input)[:1]
    sims = {k: Simulator(lm, prompt_style="chat", data_root=args.data_root, **v) for k, v in CONFIGS.items()}
    wall: dict[str, list[float]] = {k: [] for k in CONFIGS}
    cpu: dict[str, list[float]] = {k: [] for k in CONFIGS}
    frames = {k: s.predict_questions(question) for k, s in sims.items()}  # warm-up
    for _ in range(args.repeats):
        for k, sim in sims.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            frames[k] = sim.predict_questions(question)
            wall[k].append(time.perf_counter() - started)
            cpu[k].append(time.process_time() - cpu_started)
    countries = len(frames[next(iter(CONFIGS))]) // len(question[0].options)
    print(f"cpu: {cpu_model()}, {torch.get_num_threads()} threads; "
          f"1 question ({question[0].id}) x {countries} countries")
    print("| configuration | wall s (median) | CPU s (median) | wall s per repeat |")
    print("|---|---:|---:|---|")
    for k in CONFIGS:
        print(f"| {k} | {statistics.median(wall[k]):.2f} | {statistics.median(cpu[k]):.2f} | "
              f"{', '.join(f'{w:.2f}' for w in wall[k])} |")
    keys = list(CONFIGS)
    for a, b in ((keys[0], keys[1]), (keys[2], keys[4])):
        diff = float((frames[a]["share"] - frames[b]["share"]).abs().max())
        print(f"max |share difference| {a} vs {b}: {diff:.2e}")


if __name__ == "__main__":
    main()
