"""The paper-scale check: the bench's three paths (:mod:`.methods`: the reference method, simlab per-row, simlab
with shared prefixes; with ``--compile`` a fourth, shared prefixes through compiled decoder layers) on a random model
of a paper model's exact shape (:mod:`.paper_models`) on a GPU, in bf16, with the paper's LoRA, on real WVS rows;
plus the largest training batch that fits. ``scripts/device_check.py`` is its command line (it reads the model
configs); ``--tiny`` runs the same code on a CPU in the test suite.

The paths are literally the bench's (:func:`.timing.warm_up_and_check`, :func:`.timing.time_evaluation`,
:func:`.timing.time_training`, :func:`.report.report_throughput`); this module adds what the GPU question needs:
real-token rates, model FLOP utilisation against a measured matmul peak, peak GPU memory, the projected wall time
of the paper's fine-tune and test, and the largest batch.

Projected wall times: the paper's 5 epochs over the training rows and the full test's rows (counted in the data),
at the measured row rate for the reference (512 positions a row whatever the prompt) and, for simlab's paths, at
the measured real-token rate divided by the mean prompt length of the whole sampled split (the sample of whole
questions is longer or shorter than the split on average; the test's questions are others, taken at the same mean);
training steps and test passes only (no validation, no start-up).

Model FLOPs (stated in the summary): the decoder's linear layers, 2 FLOPs per weight per prompt token for
evaluation (forward) and 4 for a LoRA training step (forward, and the backward's input gradients; the frozen
weights get no weight gradients and LoRA's own are under 0.1%); real prompt tokens only (padding and the
reference's full-vocabulary head are work the method does, not the model's); attention scores (under 1% at these
prompt lengths) and the answer's letters are left out.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from simlab.devtools.bench.meters import Measurements, linear_flops_per_token, peak_memory
from simlab.devtools.bench.methods import COMPILED, REFERENCE, SHARED, SIMLAB, Method
from simlab.devtools.bench.paths import train_steps
from simlab.devtools.bench.report import agreement_failures, log, report_throughput
from simlab.devtools.bench.timing import Bench, time_evaluation, time_training, warm_up_and_check
from simlab.devtools.bench.workload import BenchData, grouped_order, load_bench_data

PATHS = [REFERENCE, SIMLAB, SHARED]


@dataclass
class Settings:
    """What one model's measurement runs (the bench's option names, so its phases take this as their ``args``)."""

    rows: int = 240  # real rows of ``subset`` in ``file``, whole questions
    eval_batch: int = 48  # data.eval_batch_size
    train_batch: int = 8  # the paper's (the reference script's) batch
    eval_repeats: int = 3
    train_repeats: int = 3
    train_steps: int = 4
    check_rows: int = 8
    tolerance: float = 2e-2  # reference vs simlab option probabilities (bf16 on a GPU; 1e-4 in float32)
    prefix_tolerance: float = 2e-2  # simlab vs shared-prefix
    seed: int = 0
    prompt_order: str = "question_first"  # a question's rows share its prefix (the shared-prefix path's case)
    file: str = "wvs7/sft_wvs_train.json"  # the fine-tune's own rows
    data_type: str = "train"
    subset: str = "C1-Q1"
    batch_start: int = 1  # the largest-batch search: doubling from here
    batch_cap: int = 4096
    batch_seconds: float = 45.0  # time box of one search
    no_reference: bool = False  # the bench phases read it
    matmul_tokens: int = 0  # unused (the bench's matmul label)
    ablation: bool = False
    profile: bool = False
    warm_train: bool = False  # one untimed training pass over every row per path first (kernels for its shapes)
    compile: bool = False  # also the shared-prefix path with compiled decoder layers (the model compiled by the caller)
    compile_mode: str | None = None  # torch.compile's mode for them ("reduce-overhead": CUDA graphs)
    pack_length_multiple: int = 1  # the compiled path's packed batches padded to a multiple of this (a few shapes)


@dataclass
class Projection:
    """What the projected wall times are of: the paper's fine-tune and the full test, counted from the data."""

    train_rows: int
    test_rows: int
    epochs: int = 5


@dataclass
class ModelReport:
    name: str
    parameters: int
    weights_gib: float
    build_s: float
    notes: list[str] = field(default_factory=list)
    paths: dict[str, dict[str, float]] = field(default_factory=dict)
    agreement: dict[str, Any] = field(default_factory=dict)
    largest_batch: dict[str, dict[str, Any]] = field(default_factory=dict)
    prompt_tokens: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def count_rows(rows_by_file: dict[str, list[dict]], subset_names: dict[str, str], subsets: list[str]) -> int:
    """Rows whose ``data_type`` maps (``subset_names``) to one of ``subsets``, over the files' parsed rows."""
    wanted = {data_type for data_type, subset in subset_names.items() if subset in subsets}
    return sum(1 for rows in rows_by_file.values() for row in rows if row.get("data_type") in wanted)


def bench_rows(tokenizer, prompt_style: str, settings: Settings, root: str | None) -> BenchData:
    """The measured rows: whole questions of ``settings.subset``, encoded by the library's datamodule."""
    return load_bench_data(tokenizer, root=root, rows=settings.rows, seed=settings.seed, prompt_style=prompt_style,
                           file=settings.file, data_type=settings.data_type, subset=settings.subset,
                           prompt_order=settings.prompt_order, sample="questions")


def _training_rows(order: list[int], settings: Settings) -> list[int]:
    """Every row :func:`.timing.time_training` trains on, over its repeats (the same rows for each path)."""
    per_run = settings.train_steps * settings.train_batch
    return [order[(r * per_run + j) % len(order)] for r in range(settings.train_repeats) for j in range(per_run)]


def measure_paths(bench: Bench, settings: Settings, peak_gflops: float, peak_label: str,
                  projection: Projection, report: ModelReport) -> None:
    """The three paths' evaluation and training on the bench's rows (the bench's phases and table), then each
    path's real-token rates, model FLOP utilisation, peak memory and projections into ``report``."""
    data = bench.data
    compiled = replace(COMPILED, pack_length_multiple=settings.pack_length_multiple)
    paths = (PATHS[1:] if settings.no_reference else PATHS) + ([compiled] if settings.compile else [])
    order = grouped_order(data, settings.seed)
    checks = warm_up_and_check(bench, paths, order, settings)
    if settings.warm_train:  # each batch shape's first step picks its kernels and grows the allocator: untimed
        for method in paths:
            _, seconds, _ = bench.time_train(method, order, seed=settings.seed + 1000)
            log(f"  train warm-up: {method.name:13s} {len(order)} rows in {seconds:7.1f} s (not counted)")
    timed, results, eval_tokens = time_evaluation(bench, paths, order, settings)
    train_timed, train_tokens = time_training(bench, paths, order, settings)
    flops = linear_flops_per_token(bench.model)
    measured = Measurements([m.name for m in paths], timed, results, eval_tokens, train_timed, train_tokens,
                            peak_gflops=peak_gflops, flops_per_token=flops, peak_label=peak_label,
                            memory=bench.memory)
    pairs = ([] if settings.no_reference else [("reference", "simlab")]) + [("simlab", "shared-prefix")]
    pairs += [("shared-prefix", "compiled")] if settings.compile else []
    report_throughput(measured, pairs, settings)
    failures = agreement_failures(results, checks, settings)
    lengths = data.lengths
    split_mean = sum(data.population_lengths or lengths) / len(data.population_lengths or lengths)
    eval_real = sum(lengths[i] for i in order)
    train_real = sum(lengths[i] for i in _training_rows(order, settings))
    for method in paths:
        name = method.name
        eval_s, train_s = sum(timed[name].seconds), sum(train_timed[name].seconds)
        eval_rate, train_rate = sum(timed[name].rows) / eval_s, sum(train_timed[name].rows) / train_s
        if not method.pad_to_max:  # cost follows the prompt's tokens: rows/s at the whole split's mean length
            projected_train, projected_eval = train_real / train_s / split_mean, eval_real / eval_s / split_mean
        else:  # the reference computes 512 positions a row whatever its length
            projected_train, projected_eval = train_rate, eval_rate
        report.paths[name] = {
            "train_rows_per_s": train_rate, "train_tokens_per_s": train_real / train_s,
            "eval_rows_per_s": eval_rate, "eval_tokens_per_s": eval_real / eval_s,
            "train_mfu": 2 * flops * train_real / train_s / (peak_gflops * 1e9),
            "eval_mfu": flops * eval_real / eval_s / (peak_gflops * 1e9),
            "train_hfu": 2 * flops * train_tokens[name] / train_s / (peak_gflops * 1e9),
            "eval_hfu": flops * eval_tokens[name] / eval_s / (peak_gflops * 1e9),
            "train_computed_tokens_per_row": train_tokens[name] / sum(train_timed[name].rows),
            "eval_computed_tokens_per_row": eval_tokens[name] / sum(timed[name].rows),
            "train_peak_memory_gib": bench.peaks["train", name] / 1024,
            "eval_peak_memory_gib": bench.peaks["eval", name] / 1024,
            "projected_finetune_h": projection.epochs * projection.train_rows / projected_train / 3600,
            "projected_test_h": projection.test_rows / projected_eval / 3600,
        }
    reference = results.get("reference")
    report.agreement = {
        "max_prob_diff_reference_simlab": _max_diff(reference, results["simlab"]) if reference else None,
        "max_prob_diff_simlab_shared_prefix": _max_diff(results["simlab"], results["shared-prefix"]),
        "max_prob_diff_shared_prefix_compiled": (_max_diff(results["shared-prefix"], results["compiled"])
                                                 if "compiled" in results else None),
        "train_loss_reference_simlab": [checks.ref_loss, checks.sim_loss],
        "tolerance": settings.tolerance, "prefix_tolerance": settings.prefix_tolerance, "failures": failures,
    }


def _max_diff(a, b) -> float:
    return max(float((a.probs[r] - b.probs[r]).abs().max()) for r in a.probs)


def free_memory(device: torch.device) -> None:
    """Drop what a failed or finished step left (gradients are set to None by the caller), and the cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def largest_batch(bench: Bench, method: Method, settings: Settings) -> dict[str, Any]:
    """The largest training batch (one optimizer step on ``method``) that fits: doubling from
    ``settings.batch_start`` until out of memory, ``batch_cap`` or the time box. The rows are the bench's longest
    prompts (cycled when the batch is larger than the sample): the worst case a length-grouped batch meets."""
    data, device = bench.data, bench.device
    longest = sorted(range(len(data)), key=lambda i: -data.lengths[i])
    tokens = data.max_length if method.pad_to_max else data.lengths[longest[0]]  # a row's positions computed
    deadline = time.perf_counter() + settings.batch_seconds
    size, fits, peak, failed, last_s = settings.batch_start, None, None, None, 0.0
    while size <= settings.batch_cap and time.perf_counter() + 2.5 * last_s < deadline:
        indices = [longest[j % len(longest)] for j in range(size)]
        started = time.perf_counter()
        try:
            optimizer = bench.reset()
            with peak_memory(device) as memory:
                train_steps(bench.model, optimizer, data, method, indices, size, seed=settings.seed)
        except torch.cuda.OutOfMemoryError:
            failed = size
        finally:
            bench.model.zero_grad(set_to_none=True)
            optimizer = None
            free_memory(device)
        if failed:
            break
        fits, peak, last_s = size, memory.peak_mib / 1024, time.perf_counter() - started
        log(f"  largest batch, {method.name}: {size} rows of {tokens} tokens fit "
            f"(peak {peak:.2f} GiB, {last_s:.1f} s)")
        size *= 2
    stopped = "out of memory" if failed else ("cap" if size > settings.batch_cap else "time box")
    if failed:
        log(f"  largest batch, {method.name}: {failed} rows: out of memory")
    return {"largest": fits, "first_failing": failed, "stopped_by": stopped, "peak_memory_gib": peak,
            "prompt_tokens": tokens}


SUMMARY_COLUMNS = [
    ("train rows/s", "train_rows_per_s", ".2f"), ("train tok/s", "train_tokens_per_s", ",.0f"),
    ("eval rows/s", "eval_rows_per_s", ".2f"), ("eval tok/s", "eval_tokens_per_s", ",.0f"),
    ("train MFU", "train_mfu", ".1%"), ("eval MFU", "eval_mfu", ".1%"),
    ("train HFU", "train_hfu", ".1%"), ("eval HFU", "eval_hfu", ".1%"),
    ("train peak GiB", "train_peak_memory_gib", ".1f"), ("eval peak GiB", "eval_peak_memory_gib", ".1f"),
    ("5-epoch fine-tune h", "projected_finetune_h", ".2f"), ("full test h", "projected_test_h", ".2f"),
]


def print_summary(reports: list[ModelReport], peak_gflops: float, peak_label: str, projection: Projection) -> None:
    """The closing table: every model's paths, then its largest batches and anything that went wrong."""
    log("")
    log(f"== summary (matmul peak {peak_gflops / 1e3:.1f} TFLOP/s: {peak_label}; projections: "
        f"{projection.epochs} epochs x {projection.train_rows:,} training rows, {projection.test_rows:,} test rows)")
    log("MFU: model FLOPs (the decoder's linear layers: 2 per weight per real prompt token for evaluation, 4 for a "
        "LoRA training step) over the wall time, as a share of the matmul peak; the work a per-row prompt needs, so "
        "a path that computes a shared prefix once can pass 100%. HFU: the same over the tokens each path computed "
        "(a shared prefix once per batch, the reference's padding to 512): how busy the GPU's matrix units were")
    log("| model | path | " + " | ".join(title for title, _, _ in SUMMARY_COLUMNS) + " |")
    log("|---|---|" + "---:|" * len(SUMMARY_COLUMNS))
    for report in reports:
        for path, values in report.paths.items():
            log(f"| {report.name} | {path} | "
                + " | ".join(format(values[key], fmt) for _, key, fmt in SUMMARY_COLUMNS) + " |")
    for report in reports:
        tokens = report.prompt_tokens
        log(f"{report.name}: {report.parameters / 1e9:.2f}B parameters, {report.weights_gib:.1f} GiB weights, "
            f"built in {report.build_s:.1f} s; prompt tokens min {tokens.get('min')} / mean "
            f"{tokens.get('mean', float('nan')):.0f} / max {tokens.get('max')} (the split's "
            f"{tokens.get('split_rows')} rows: mean {tokens.get('split_mean', float('nan')):.0f})"
            + "".join(f"; {n}" for n in report.notes))
        for path, found in report.largest_batch.items():
            log(f"{report.name}: largest training batch, {path}: {found['largest']} rows of {found['prompt_tokens']} "
                f"tokens (stopped by {found['stopped_by']}"
                + (f", {found['first_failing']} did not fit" if found["first_failing"] else "")
                + (f", peak {found['peak_memory_gib']:.1f} GiB)" if found["peak_memory_gib"] else ")"))
        if report.agreement:
            a = report.agreement
            versus = a["max_prob_diff_reference_simlab"]
            log(f"{report.name}: max |p difference| reference-simlab "
                f"{'not measured' if versus is None else format(versus, '.2e')}, "
                f"simlab-shared-prefix {a['max_prob_diff_simlab_shared_prefix']:.2e}"
                + (f", shared-prefix-compiled {a['max_prob_diff_shared_prefix_compiled']:.2e}"
                   if a.get("max_prob_diff_shared_prefix_compiled") is not None else "")
                + (f"; DISAGREE: {'; '.join(a['failures'])}" if a["failures"] else ""))
        for error in report.errors:
            log(f"{report.name}: ERROR {error}")
