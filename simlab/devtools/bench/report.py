"""What the bench prints: progress lines, the throughput table, how far the paths agree (and the disagreements
beyond tolerance), and the closing speedup lines that scripts parse."""

from __future__ import annotations

import argparse
import statistics

import torch

from simlab.devtools.bench.meters import Checks, Measurements, Timed, paired_speedup
from simlab.devtools.bench.paths import EvalResult, max_prob_difference


def log(message: str) -> None:
    """One line to stdout, flushed, so a long run's progress shows as it happens (and through a pipe)."""
    print(message, flush=True)


def report_throughput(measured: Measurements, pairs: list[tuple[str, str]], args: argparse.Namespace) -> None:
    """The markdown table of every path's throughput, tokens, memory, FLOP rate and loss, then the matmul lines."""
    names, timed, train_timed = measured.names, measured.timed, measured.train_timed
    eval_rows = {n: sum(timed[n].rows) for n in names}
    train_rows = {n: sum(train_timed[n].rows) for n in names}
    log("")
    log(f"| measure | {' | '.join(names)} | {' | '.join(f'{b} / {a}' for a, b in pairs)} |")
    log("|---|" + "---:|" * (len(names) + len(pairs)))

    def row(title: str, values: dict[str, float], fmt: str, paired: dict[str, Timed] | None = None,
            cpu: bool = False, ratio: bool = False) -> None:
        """One table row; the ratio columns are paired medians (``paired``) or the ratio of the values (``ratio``)."""
        if paired is not None:
            extra = [f"{paired_speedup(paired[a], paired[b], cpu=cpu):.2f}x" for a, b in pairs]
        elif ratio:
            extra = [f"{values[b] / values[a]:.2f}" for a, b in pairs]
        else:
            extra = [""] * len(pairs)
        log(f"| {title} | {' | '.join(format(values[n], fmt) for n in names)} | {' | '.join(extra)} |")

    gflops = measured.gflops
    row(f"eval prompts/s (median of {args.eval_repeats})", {n: timed[n].median_rate for n in names}, ".2f", timed)
    row(f"train rows/s (median of {args.train_repeats}, {args.train_steps} steps each)",
        {n: train_timed[n].median_rate for n in names}, ".2f", train_timed)
    row("eval tokens computed per row", {n: measured.eval_tokens[n] / eval_rows[n] for n in names}, ".1f", ratio=True)
    row("train tokens computed per row", {n: measured.train_tokens[n] / train_rows[n] for n in names}, ".1f",
        ratio=True)
    for title, t in (("eval", timed), ("train", train_timed)):
        row(f"{title} peak {measured.memory} above start, MiB (max)", {n: max(t[n].peak_mib) for n in names}, ".0f")
    row("eval prompts per CPU-second (median)", {n: statistics.median(timed[n].cpu_rates) for n in names}, ".2f",
        timed, cpu=True)
    row("train rows per CPU-second (median)", {n: statistics.median(train_timed[n].cpu_rates) for n in names},
        ".2f", train_timed, cpu=True)
    row("eval model GFLOP/s (decoder linears)", {n: gflops(n, False) for n in names}, ".1f", ratio=True)
    row("train model GFLOP/s (decoder linears, fwd + input grads)", {n: gflops(n, True) for n in names}, ".1f",
        ratio=True)
    row("mean eval KL(human ‖ model)", {n: measured.results[n].loss for n in names}, ".6f")
    log("")
    kind = "bf16-autocast" if getattr(args, "precision", "32") == "bf16" else "float32"
    label = measured.peak_label or (f"{kind} F.linear on one decoder layer's weight shapes x {args.matmul_tokens} "
                                    f"tokens ({torch.get_num_threads()} threads)")
    log(f"matmul: {label}: {measured.peak_gflops:.1f} GFLOP/s; model FLOPs count the decoder's "
         f"linear layers, {measured.flops_per_token / 1e6:.3g} MFLOP per token position (x2 for a training step)")
    fractions = {n: (gflops(n, False) / measured.peak_gflops, gflops(n, True) / measured.peak_gflops) for n in names}
    log("matmul_fraction: " + ", ".join(f"{n} eval {e:.2f} train {t:.2f}" for n, (e, t) in fractions.items()))


def agreement_failures(results: dict[str, EvalResult], checks: Checks, args: argparse.Namespace) -> list[str]:
    """Log how far the paths' predictions, losses and gradients are apart; the disagreements beyond tolerance."""
    prefix_diff = max_prob_difference(results["simlab"], results["shared-prefix"])
    prefix_loss_diff = abs(results["simlab"].loss - results["shared-prefix"].loss)
    log("")
    failures = []
    if not args.no_reference:
        eval_diff = max_prob_difference(results["reference"], results["simlab"])
        eval_losses = results["reference"].loss, results["simlab"].loss
        log(f"predictions: max |p_reference - p_simlab| = {eval_diff:.2e} over {len(results['simlab'].probs)} rows "
             f"(tolerance {args.tolerance:g}); eval loss difference {abs(eval_losses[0] - eval_losses[1]):.2e}; "
             f"train-step loss difference {abs(checks.ref_loss - checks.sim_loss):.2e}")
        if eval_diff > args.tolerance:
            failures.append(f"option probabilities differ by {eval_diff:.3e} > {args.tolerance:g}")
        if abs(eval_losses[0] - eval_losses[1]) > args.tolerance:
            failures.append(f"eval losses differ: {eval_losses[0]:.6f} vs {eval_losses[1]:.6f}")
        if abs(checks.ref_loss - checks.sim_loss) > args.tolerance:
            failures.append(f"training-step losses differ: {checks.ref_loss:.6f} vs {checks.sim_loss:.6f}")
    step_diff = abs(checks.per_row_loss - checks.prefix_loss)
    log(f"prefix_agreement: max |p_simlab - p_shared_prefix| = {prefix_diff:.2e} over "
         f"{len(results['shared-prefix'].probs)} rows; eval loss difference {prefix_loss_diff:.2e}; train-step loss "
         f"difference {step_diff:.2e}; max |LoRA grad difference| {checks.prefix_grad_diff:.2e} "
         f"(tolerance {args.prefix_tolerance:g})")
    if "two-pass" in results:
        two_pass_diff = max_prob_difference(results["simlab"], results["two-pass"])
        log(f"two_pass_agreement: max |p_simlab - p_two_pass| = {two_pass_diff:.2e}")
        if not two_pass_diff <= args.prefix_tolerance:
            failures.append(f"two-pass and per-row option probabilities differ by {two_pass_diff:.3e}")
    if "compiled" in results:
        compiled_diff = max_prob_difference(results["shared-prefix"], results["compiled"])
        log(f"compile_agreement: max |p_shared_prefix - p_compiled| = {compiled_diff:.2e}")
        if not compiled_diff <= args.prefix_tolerance:
            failures.append(f"compiled and eager option probabilities differ by {compiled_diff:.3e}")
    for label, value in (("option probabilities", prefix_diff), ("eval losses", prefix_loss_diff),
                         ("training-step losses", step_diff),
                         ("LoRA gradients", checks.prefix_grad_diff)):
        if not value <= args.prefix_tolerance:
            failures.append(f"shared-prefix and per-row {label} differ by {value:.3e} > {args.prefix_tolerance:g}")
    return failures


def report_speedups(measured: Measurements, args: argparse.Namespace) -> None:
    """The closing lines (parsed by scripts): paired median speedups of simlab over the reference, of the
    shared-prefix path over simlab, and (``--two-pass``, ``--compile``) of the shared-prefix path over two passes and
    of compiled layers over the shared-prefix path."""
    timed, train_timed = measured.timed, measured.train_timed
    if not args.no_reference:
        log(f"eval_speedup: {paired_speedup(timed['reference'], timed['simlab']):.2f}")
        log(f"train_speedup: {paired_speedup(train_timed['reference'], train_timed['simlab']):.2f}")
    log(f"prefix_eval_speedup: {paired_speedup(timed['simlab'], timed['shared-prefix']):.2f}")
    log(f"prefix_train_speedup: {paired_speedup(train_timed['simlab'], train_timed['shared-prefix']):.2f}")
    if "compiled" in timed:
        log(f"compile_eval_speedup: {paired_speedup(timed['shared-prefix'], timed['compiled']):.2f}")
        log(f"compile_train_speedup: {paired_speedup(train_timed['shared-prefix'], train_timed['compiled']):.2f}")
    if "two-pass" in timed:
        log(f"packed_eval_speedup: {paired_speedup(timed['two-pass'], timed['shared-prefix']):.2f}")
        log(f"packed_train_speedup: {paired_speedup(train_timed['two-pass'], train_timed['shared-prefix']):.2f}")

