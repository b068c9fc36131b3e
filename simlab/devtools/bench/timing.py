"""The benchmark's phases on one :class:`Bench` (the model with a fresh LoRA adapter, and the rows): set-up, warm-up
and the training-step agreement checks, timed evaluation and training with every path on the same rows back to
back, the ablation ladders, and the profiler tables."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from simlab.devtools.bench.meters import Checks, CpuShare, Timed, path_tokens, peak_memory
from simlab.devtools.bench.methods import EVAL_LADDER, REFERENCE, SHARED, SIMLAB, TRAIN_LADDER, Method
from simlab.devtools.bench.paths import EvalResult, batch_scores, batches, evaluate, execution, train_steps
from simlab.devtools.bench.report import log
from simlab.devtools.bench.workload import BenchData, load_bench_data, question_chunks
from simlab.runs.provenance import cpu_model


class Bench:
    """The model with a fresh LoRA adapter, the rows, and the initial adapter weights every training run restarts
    from."""

    def __init__(self, model, data: BenchData, *, lr: float, eval_batch: int, train_batch: int, autocast: bool):
        self.model, self.data, self.lr = model, data, lr
        self.eval_batch, self.train_batch, self.autocast = eval_batch, train_batch, autocast
        self.initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.last_cpu_share = self.last_cpu_seconds = float("nan")
        self.device = next(model.parameters()).device  # batches are moved there (paths.batch_scores)
        self.peaks: dict[tuple[str, str], float] = {}  # ("eval"|"train", path) -> highest peak MiB in all
        self.memory = "GPU memory" if self.device.type == "cuda" else "RSS"  # what the peaks measure

    def reset(self) -> torch.optim.Optimizer:
        """Restore the initial adapter and return a fresh AdamW on it, so every training run does the same work."""
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in self.initial:
                    param.copy_(self.initial[name])
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)

    def time_eval(self, method: Method, indices: Sequence[int]) -> tuple[EvalResult, float, float]:
        with peak_memory(self.device) as memory, CpuShare() as share:  # each batch ends in a sync (.item())
            result = evaluate(self.model, self.data, method, indices, self.eval_batch, self.autocast)
        self.last_cpu_share, self.last_cpu_seconds = share.value, share.cpu
        self.peaks["eval", method.name] = max(self.peaks.get(("eval", method.name), 0.0), memory.peak_mib)
        return result, share.wall, memory.delta_mib

    def time_train(self, method: Method, indices: Sequence[int], seed: int) -> tuple[list[float], float, float]:
        optimizer = self.reset()
        with peak_memory(self.device) as memory, CpuShare() as share:  # each batch ends in a sync (.item())
            losses = train_steps(
                self.model, optimizer, self.data, method, indices, self.train_batch, seed=seed, autocast=self.autocast
            )
        self.last_cpu_share, self.last_cpu_seconds = share.value, share.cpu
        self.peaks["train", method.name] = max(self.peaks.get(("train", method.name), 0.0), memory.peak_mib)
        return losses, share.wall, memory.delta_mib

    def train_check(
        self, indices: Sequence[int], first: Method = REFERENCE, second: Method = SIMLAB
    ) -> tuple[float, float, float]:
        """One batch through two training paths with dropout off: (first loss, second loss, max grad diff)."""
        losses, grads = [], []
        for method in (first, second):
            self.reset()
            self.model.eval()  # LoRA dropout off, so both see the same function; gradients still flow
            batch = next(batches(self.data, method, indices, len(indices), train=True))
            with execution(method), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                loss, _ = batch_scores(self.model, batch, method)
            loss.backward()
            losses.append(loss.item())
            grads.append({n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad})
            self.model.zero_grad(set_to_none=True)
        diff = max(float((grads[0][n] - grads[1][n]).abs().max()) for n in grads[0])
        return losses[0], losses[1], diff


def set_up(args: argparse.Namespace) -> tuple[Any, BenchData, Bench]:
    """The embedded model with a fresh paper LoRA adapter, the sampled rows and the :class:`Bench`; logs them."""
    from simlab.model import PAPER_LORA, attach_lora, load_language_model, paper_lora_config

    lm = load_language_model(embedded=args.embedded, dtype="float32")
    if lm.tokenizer.pad_token_id is None:
        lm.tokenizer.pad_token = lm.tokenizer.eos_token
    model = attach_lora(lm.model, paper_lora_config())
    if args.precision == "bf16":  # as a bf16 run prepares it (simlab.training.module.SurveyLitModule.setup)
        from simlab.training.precision import prepare_for_bf16_cpu

        log(f"bf16 on a CPU: {prepare_for_bf16_cpu(model)}")
    data = load_bench_data(lm.tokenizer, root=args.data_root, rows=args.rows, seed=args.seed,
                           prompt_style=args.prompt_style, prompt_order=args.prompt_order, sample=args.sample)
    bench = Bench(model, data, lr=1e-4, eval_batch=args.eval_batch, train_batch=args.train_batch,
                  autocast=args.precision == "bf16")
    lengths = data.lengths
    log(
        f"simlab bench: {lm.source}, {len(data)} {data.subset} rows of {len({r.question_id for r in data.rows})} "
        f"questions ({args.prompt_style} {args.prompt_order} prompts, sampled by {args.sample}, seed {args.seed}; "
        f"prompt tokens min {min(lengths)} / mean {statistics.mean(lengths):.0f} / max {max(lengths)}), "
        f"precision {args.precision}, "
        f"{torch.get_num_threads()} threads, eval batch {args.eval_batch}, train batch {args.train_batch}, "
        f"LoRA r{PAPER_LORA['r']}/alpha{PAPER_LORA['lora_alpha']} on {','.join(PAPER_LORA['target_modules'])}"
    )
    log(f"cpu: {cpu_model()} ({os.cpu_count()} logical CPUs), torch {torch.__version__}")
    return model, data, bench


def warm_up_and_check(bench: Bench, paths: list[Method], order: list[int], args: argparse.Namespace) -> Checks:
    """Warm-up (allocator, oneDNN kernels) on a few rows of every path, then the training-step checks. A compiled
    path also trains on them once, untimed: compiling its evaluation and training graphs is not what it measures."""
    warm = order[: min(len(order), args.check_rows)]
    for method in paths:
        start = time.perf_counter()
        evaluate(bench.model, bench.data, method, warm, args.eval_batch, bench.autocast)
        if method.compiled:
            bench.time_train(method, warm, seed=args.seed)
            log(f"  {method.name}: compiled its evaluation and training graphs in {time.perf_counter() - start:.1f} s "
                f"(a warm-up on {len(warm)} rows, not counted)")
    ref_loss = sim_loss = grad_diff = float("nan")
    if not args.no_reference:
        ref_loss, sim_loss, grad_diff = bench.train_check(warm)
        log(f"train check ({len(warm)} rows, dropout off): loss reference {ref_loss:.6f} simlab {sim_loss:.6f}, "
             f"max |grad difference| {grad_diff:.2e}")
    per_row_loss, prefix_loss, prefix_grad_diff = bench.train_check(warm, SIMLAB, SHARED)
    log(f"train check ({len(warm)} rows, dropout off): loss simlab {per_row_loss:.6f} shared-prefix "
         f"{prefix_loss:.6f}, max |LoRA grad difference| {prefix_grad_diff:.2e}")
    return Checks(ref_loss, sim_loss, grad_diff, per_row_loss, prefix_loss, prefix_grad_diff)


def time_evaluation(
    bench: Bench, paths: list[Method], order: list[int], args: argparse.Namespace
) -> tuple[dict[str, Timed], dict[str, EvalResult], dict[str, int]]:
    """The rows in ``eval_repeats`` chunks (whole questions where they fit); each chunk timed with every path back
    to back (rotating which goes first), so every row is predicted once by each path."""
    timed = {m.name: Timed() for m in paths}
    results = {m.name: EvalResult() for m in paths}
    eval_tokens = {m.name: 0 for m in paths}
    for repeat, chunk in enumerate(question_chunks(bench.data, order, args.eval_repeats)):
        for method in paths[repeat % len(paths):] + paths[: repeat % len(paths)]:
            result, seconds, peak = bench.time_eval(method, chunk)
            timed[method.name].add(seconds, len(chunk), peak, bench.last_cpu_seconds)
            results[method.name].probs.update(result.probs)
            results[method.name].loss_sum += result.loss_sum
            eval_tokens[method.name] += path_tokens(bench.data, method, chunk, args.eval_batch, train=False)
            log(f"  eval repeat {repeat + 1}: {method.name:13s} {len(chunk)} rows in {seconds:7.1f} s "
                 f"({len(chunk) / seconds:6.2f} prompts/s), peak {bench.memory} +{peak:.0f} MiB, "
                 f"CPU share {bench.last_cpu_share:.0%}")
    return timed, results, eval_tokens


def time_training(
    bench: Bench, paths: list[Method], order: list[int], args: argparse.Namespace
) -> tuple[dict[str, Timed], dict[str, int]]:
    """``train_repeats`` runs of ``train_steps`` steps on consecutive rows of the question-grouped order, each from
    the same initial adapter."""
    train_timed = {m.name: Timed() for m in paths}
    train_tokens = {m.name: 0 for m in paths}
    per_run = args.train_steps * args.train_batch
    for repeat in range(args.train_repeats):
        rows = [order[(repeat * per_run + j) % len(order)] for j in range(per_run)]
        for method in paths[repeat % len(paths):] + paths[: repeat % len(paths)]:
            losses, seconds, peak = bench.time_train(method, rows, seed=args.seed + repeat)
            train_timed[method.name].add(seconds, len(rows), peak, bench.last_cpu_seconds)
            train_tokens[method.name] += path_tokens(bench.data, method, rows, args.train_batch, train=True,
                                                     seed=args.seed + repeat)
            log(f"  train repeat {repeat + 1}: {method.name:13s} {len(rows)} rows in {seconds:7.1f} s "
                 f"({len(rows) / seconds:6.2f} rows/s), peak {bench.memory} +{peak:.0f} MiB, "
                 f"CPU share {bench.last_cpu_share:.0%}, losses "
                 + " ".join(f"{v:.4f}" for v in losses))
    return train_timed, train_tokens


def ablation(bench: Bench, rows: list[int], args: argparse.Namespace) -> None:
    """Each rung of the ladders once per repeat on the same rows; the throughput and the step's own factor."""
    for title, ladder, unit in (("eval", EVAL_LADDER, "prompts/s"), ("train", TRAIN_LADDER, "rows/s")):
        rates: dict[str, list[float]] = {rung.name: [] for rung in ladder}
        cpu_rates: dict[str, list[float]] = {rung.name: [] for rung in ladder}
        for repeat in range(args.ablation_repeats):
            for rung in ladder:
                if title == "eval":
                    _, seconds, _ = bench.time_eval(rung, rows)
                else:
                    _, seconds, _ = bench.time_train(rung, rows, seed=args.seed + repeat)
                rates[rung.name].append(len(rows) / seconds)
                cpu_rates[rung.name].append(len(rows) / bench.last_cpu_seconds)
                log(f"  ablation {title} repeat {repeat + 1}: {rung.name}: {len(rows) / seconds:.2f} {unit} "
                     f"(CPU share {bench.last_cpu_share:.0%})")
        log("")
        log(f"ablation, {title} ({len(rows)} rows, median of {args.ablation_repeats}):")
        log(f"| step | {unit} | x previous | x reference | per CPU-second | x previous (CPU) |")
        log("|---|---:|---:|---:|---:|---:|")
        previous = first = previous_cpu = None
        for rung in ladder:
            rate, cpu_rate = statistics.median(rates[rung.name]), statistics.median(cpu_rates[rung.name])
            first = first or rate
            step = f"{rate / previous:.2f}" if previous is not None else ""
            cpu_step = f"{cpu_rate / previous_cpu:.2f}" if previous_cpu is not None else ""
            log(f"| {rung.name} | {rate:.2f} | {step} | {rate / first:.2f} | {cpu_rate:.2f} | {cpu_step} |")
            if rung.threads is None:  # the thread rung is compared with simlab's path, not chained
                previous, previous_cpu = rate, cpu_rate
        log("")


def profile(bench: Bench, paths: Sequence[Method], rows: list[int], train_rows: list[int], seed: int) -> None:
    """torch.profiler over one evaluation batch, then over one training pass (``train_rows``, from the initial
    adapter), of each path: where the time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for method in paths:
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            evaluate(bench.model, bench.data, method, rows, bench.eval_batch, bench.autocast)
        log(f"profile, eval, {method.name}, {len(rows)} rows:")
        log(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    for method in paths:
        optimizer = bench.reset()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            train_steps(bench.model, optimizer, bench.data, method, train_rows, bench.train_batch, seed=seed,
                        autocast=bench.autocast)
        log(f"profile, train, {method.name}, {len(train_rows)} rows in batches of {bench.train_batch}:")
        log(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16))
