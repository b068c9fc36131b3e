"""`make bench`: evaluation and LoRA-training throughput of simlab against the reference method, in one process.

The command line (``python -m simlab.devtools.bench``, ``simlab bench``, ``make bench``): its options and the
benchmark's order of phases (:func:`run`). What each part does: :mod:`simlab.devtools.bench`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import replace

import torch

from simlab.common import commandline
from simlab.data.batching import PACK_MAX_TOKENS
from simlab.devtools.bench.meters import Measurements, linear_flops_per_token, matmul_peak
from simlab.devtools.bench.methods import COMPILED, REFERENCE, SHARED, SIMLAB, TWO_PASS
from simlab.devtools.bench.report import agreement_failures, log, report_speedups, report_throughput
from simlab.devtools.bench.timing import ablation, profile, set_up, time_evaluation, time_training, warm_up_and_check
from simlab.devtools.bench.workload import grouped_order


def run(args: argparse.Namespace) -> int:
    """The benchmark: set up, check the paths agree on a training step, time evaluation and training, report."""
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, data, bench = set_up(args)
    shared = replace(SHARED, pack_max_tokens=args.pack_max_tokens)
    paths = ([REFERENCE] if not args.no_reference else []) + [SIMLAB, shared] + ([TWO_PASS] if args.two_pass else [])
    if args.compile:
        from simlab.model.compilation import compile_decoder_layers

        log(f"compiled decoder layers: {compile_decoder_layers(model)} (the compiled path only; torch.compile, "
            f"dynamic shapes)")
        paths.append(replace(COMPILED, pack_max_tokens=args.pack_max_tokens))
    order = grouped_order(data, args.seed)
    checks = warm_up_and_check(bench, paths, order, args)
    timed, results, eval_tokens = time_evaluation(bench, paths, order, args)
    train_timed, train_tokens = time_training(bench, paths, order, args)
    measured = Measurements([m.name for m in paths], timed, results, eval_tokens, train_timed, train_tokens,
                            peak_gflops=matmul_peak(model, tokens=args.matmul_tokens, autocast=bench.autocast),
                            flops_per_token=linear_flops_per_token(model))
    if args.ablation:
        ablation(bench, order[: args.ablation_rows], args)
    if args.profile:
        profile(bench, paths, order[: args.eval_batch], order[: args.train_steps * args.train_batch], args.seed)
    pairs = ([("reference", "simlab")] if not args.no_reference else []) + [("simlab", "shared-prefix")]
    pairs += [("two-pass", "shared-prefix")] if args.two_pass else []
    pairs += [("shared-prefix", "compiled")] if args.compile else []
    report_throughput(measured, pairs, args)
    failures = agreement_failures(measured.results, checks, args)
    log(f"wall time {time.perf_counter() - started:.0f} s")
    if failures:
        print("BENCH FAILED: the paths disagree: " + "; ".join(failures), file=sys.stderr, flush=True)
        return 1
    report_speedups(measured, args)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = commandline.parser("bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=192, help="seeded sample of C1-Q2 valid rows (default 192)")
    parser.add_argument("--prompt-order", choices=["question_first", "paper"], default="question_first",
                        help="prompt order of the rows (default question_first: a question's rows share its prefix)")
    parser.add_argument("--prompt-style", choices=["chat", "plain"], default="chat",
                        help="chat: the tokenizer's chat template (the embedded model's config); "
                             "plain: the paper's string")
    parser.add_argument("--sample", choices=["questions", "rows"], default="questions",
                        help="questions: whole questions (all their countries) up to --rows; rows: random rows")
    parser.add_argument("--pack-max-tokens", type=int, default=PACK_MAX_TOKENS,
                        help="the shared-prefix path packs batches of at most this many tokens into one sequence "
                             "(data.pack_max_tokens; 0: never); raise it with --two-pass to time packing large batches")
    parser.add_argument("--two-pass", action="store_true",
                        help="also time shared prefixes never packed (two decoder passes), paired with the default "
                             "layout (packed up to data.pack_max_tokens' default)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the shared-prefix path with its decoder layers compiled (torch.compile; the "
                             "same model, the other paths run it eagerly), paired with the shared-prefix path")
    parser.add_argument("--no-reference", action="store_true",
                        help="time simlab and the shared-prefix path only (the reference is ~5x slower than simlab)")
    parser.add_argument("--eval-repeats", type=int, default=4,
                        help="evaluation repeats: the rows are split into this many chunks, each timed with both paths")
    parser.add_argument("--train-repeats", type=int, default=3, help="training repeats, each from the same adapter")
    parser.add_argument("--train-steps", type=int, default=3, help="optimizer steps per training repeat")
    parser.add_argument("--eval-batch", type=int, default=48,
                        help="evaluation batch size (every path; 48, data.eval_batch_size's default)")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch size (both paths)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (both paths)")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32",
                        help="32: float32; bf16: bf16 autocast (both paths; 1e-4 agreement is not expected)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max allowed probability / loss difference")
    parser.add_argument("--prefix-tolerance", type=float, default=1e-5,
                        help="max allowed shared-prefix vs per-row probability / loss / LoRA-gradient difference")
    parser.add_argument("--matmul-tokens", type=int, default=2048, help="rows of the matmul throughput measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="default: $SIMLAB_DATA, else the copy shipped in the package")
    parser.add_argument("--embedded", default="smollm2_135m_instruct")
    parser.add_argument("--check-rows", type=int, default=8, help="rows of the warm-up and the training-step checks")
    parser.add_argument("--ablation", action="store_true", help="also time each step from the reference to simlab")
    parser.add_argument("--ablation-rows", type=int, default=32)
    parser.add_argument("--ablation-repeats", type=int, default=1)
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler tables per path (an evaluation batch, a training pass)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
