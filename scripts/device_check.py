"""The paper-scale device check (simlab.devtools.bench.paper_scale): for each named paper model, a random model of
its exact architecture (``architecture:`` in conf/model/<name>.yaml) built on the GPU in bf16 with the paper's LoRA;
the reference method, simlab per-row and simlab with shared prefixes on real WVS rows (training and evaluation
rates, model FLOP utilisation against a measured bf16 matmul peak, peak memory, projected wall times of the
paper's 5-epoch fine-tune and of the full test); the largest training batch that fits. A summary table at the end,
and ``$OUT/device_check.json`` (or ``--json``).

    bash scripts/device_check.sh              # on the lent GPU (see the shell script for the carry)
    python scripts/device_check.py --tiny     # the same code on a CPU, tiny shapes (tests/test_device_check.py)

Every section is time-boxed to fit one 10-minute device call (``--budget-s``); a section that would not fit is
skipped with a line saying so. Exit status 3 if a section failed or the paths disagreed beyond the tolerance (the
summary says which); 2: a usage error; scripts/device_check.sh retries other failures with the pinned Hugging Face
stack.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: this checkout's simlab

from simlab.devtools.bench.meters import dense_matmul_peak  # noqa: E402
from simlab.devtools.bench.methods import REFERENCE, SIMLAB  # noqa: E402
from simlab.devtools.bench.paper_models import (  # noqa: E402
    architecture_config,
    build_random_model,
    stand_in_tokenizer,
    tiny_architecture,
)
from simlab.devtools.bench.paper_scale import (  # noqa: E402
    ModelReport,
    Projection,
    Settings,
    bench_rows,
    count_rows,
    free_memory,
    largest_batch,
    measure_paths,
    print_summary,
)
from simlab.devtools.bench.report import log  # noqa: E402
from simlab.devtools.bench.timing import Bench  # noqa: E402
from simlab.runs.provenance import cpu_model  # noqa: E402

# --tiny: a few rows and steps (float32, so the bench's own tolerances hold), a batch search of two sizes
TINY = dict(rows=6, eval_batch=3, train_batch=2, eval_repeats=2, train_repeats=2, train_steps=1, check_rows=2,
            batch_start=1, batch_cap=2, batch_seconds=20.0)
# agreement tolerances (reference vs simlab, simlab vs shared-prefix): the bench's in float32 at tiny shapes; a
# paper-scale float32 model on a GPU rounds more (Llama-3-8B on an H200: 1.6e-5 reference vs simlab, padding alone,
# and 2.5e-5 shared-prefix vs simlab, experiments/PERFORMANCE.md), so 1e-4 for both there. bf16 weights round
# differently with each batch's padding and prefix split; there the differences are reported against 2e-2 (a random
# bf16 8B/32B model exceeds it for padding alone: the same PERFORMANCE.md section)
TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (2e-2, 2e-2)}
PAPER_SCALE_FLOAT32 = (1e-4, 1e-4)


def usage_error(message: str) -> None:
    """One line and exit status 2, as argparse's own errors (scripts/device_check.sh does not retry those)."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def model_config(name: str):
    """The composed config of ``model=name`` (Hydra, as run.py): its architecture, prompt style and template, data."""
    from hydra import compose, initialize_config_dir

    if not (REPO / "conf" / "model" / f"{name}.yaml").is_file():
        usage_error(f"--models: no conf/model/{name}.yaml")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}"])
    if "architecture" not in cfg.model:
        usage_error(f"--models: conf/model/{name}.yaml has no architecture: block (the paper's models have one)")
    return cfg


def projection_from_data(cfg) -> Projection:
    """The fine-tune's and the full test's row counts, counted in the survey data the config names."""
    from simlab.data.files import read_data_json
    from simlab.paths import data_root

    root = data_root(cfg.data.root)
    rows = {f: read_data_json(f, root) for f in cfg.data.files}
    names = dict(cfg.data.subset_names)
    return Projection(train_rows=count_rows(rows, names, [cfg.data.train_subset]),
                      test_rows=count_rows(rows, names, list(cfg.data.test_subsets)))


def tokenizer_folder(given: str | None) -> Path:
    """--tokenizer, else .device/tokenizer (what --prepare carries), else the embedded SmolLM2's folder."""
    if given:
        return Path(given)
    carried = REPO / ".device" / "tokenizer"
    if (carried / "tokenizer.json").is_file():
        return carried
    from simlab.model import embedded_model_dir

    return embedded_model_dir("smollm2_135m_instruct")


def check_model(name: str, args, settings: Settings, device, dtype, peak, projection, started) -> ModelReport:
    """One model: build it, attach the paper's LoRA, measure the three paths, search the largest batch."""
    from omegaconf import OmegaConf

    from simlab.model import attach_lora, paper_lora_config

    cfg = model_config(name)
    tokenizer = stand_in_tokenizer(tokenizer_folder(args.tokenizer), name, cfg.model.chat_template)
    architecture = architecture_config(OmegaConf.to_container(cfg.model.architecture, resolve=True))
    if args.tiny:
        architecture = tiny_architecture(architecture, len(tokenizer))
    built = build_random_model(architecture, tokenizer, device, dtype)
    report = ModelReport(name, built.parameters, built.weights_gib, built.seconds,
                         notes=[built.vocab_note] if built.vocab_note else [])
    log(f"== {name}: random {type(built.model).__name__}, {built.parameters / 1e9:.3f}B parameters "
        f"({architecture.num_hidden_layers} layers x {architecture.hidden_size}), {dtype}, on {device}, "
        f"built in {built.seconds:.1f} s" + (f"; {built.vocab_note}" if built.vocab_note else ""))
    model = attach_lora(built.model, paper_lora_config())
    del built
    if settings.compile:  # only the "compiled" path runs the compiled layers (simlab.devtools.bench.paths.execution)
        from simlab.model.compilation import compile_decoder_layers

        layers = compile_decoder_layers(model, mode=settings.compile_mode)
        log(f"   compiled decoder layers: {layers} (torch.compile, dynamic shapes, mode "
            f"{settings.compile_mode or 'default'}; packed batches padded to a multiple of "
            f"{settings.pack_length_multiple} tokens)")
    data = bench_rows(tokenizer, cfg.model.prompt_style, settings, args.data_root)
    lengths = data.lengths
    split = data.population_lengths
    report.prompt_tokens = {"min": min(lengths), "mean": statistics.mean(lengths), "max": max(lengths),
                            "split_mean": statistics.mean(split), "split_rows": len(split)}
    log(f"   {len(data)} {settings.subset} rows ({cfg.model.prompt_style} {settings.prompt_order} prompts, stand-in "
        f"tokenizer: tokens min {min(lengths)} / mean {statistics.mean(lengths):.0f} / max {max(lengths)}; the "
        f"split's {len(split)} rows: mean {statistics.mean(split):.0f})")
    bench = Bench(model, data, lr=1e-4, eval_batch=settings.eval_batch, train_batch=settings.train_batch,
                  autocast=False)
    left = args.budget_s - (time.perf_counter() - started)
    if left > args.measure_needs_s:
        skipped = cuda_graph_skips()
        measure(bench, settings, peak, projection, report)
        if settings.compile_mode == "reduce-overhead":  # did the compiled path replay graphs? (the reasons: warnings)
            report.notes.append(f"CUDA graphs: {cuda_graph_skips() - skipped} compiled graphs ran without them")
            log(f"   {report.notes[-1]}")
    else:
        report.errors.append(f"paths not measured: {left:.0f} s left of the budget, {args.measure_needs_s} needed")
    for method in () if args.no_batch_search else (SIMLAB, REFERENCE):
        left = args.budget_s - (time.perf_counter() - started)
        box = min(settings.batch_seconds, left - args.reserve_s)
        if box < 5:
            report.errors.append(f"largest batch, {method.name}: not searched ({left:.0f} s left of the budget)")
            continue
        try:
            report.largest_batch[method.name] = largest_batch(bench, method, _with(settings, batch_seconds=box))
        except Exception as error:  # noqa: BLE001
            report.errors.append(f"largest batch, {method.name}: {type(error).__name__}: {error}")
    del bench, model, data
    free_memory(device)
    return report


def cuda_graph_skips() -> int:
    """Compiled graphs inductor ran without CUDA graphs so far (all of them on a CPU; on a GPU it logs why)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


def measure(bench: Bench, settings: Settings, peak, projection: Projection, report: ModelReport) -> None:
    """The three paths; if the reference's training batch (padded to 512) runs out of memory (a 32B model on one
    GPU), simlab's two paths alone, with a note. Retried outside the ``except`` block: the failed step's tensors
    live as long as its traceback."""
    out_of_memory = False
    try:
        measure_paths(bench, settings, peak[0], peak[1], projection, report)
    except torch.cuda.OutOfMemoryError:
        out_of_memory = True
    except Exception as error:  # noqa: BLE001 - recorded and reported; the next sections still run
        report.errors.append(f"measuring the paths: {type(error).__name__}: {error}")
    bench.model.zero_grad(set_to_none=True)
    free_memory(bench.device)
    if not out_of_memory:
        return
    report.notes.append(f"out of memory with the reference path in the measurement (its training batch, "
                        f"{settings.train_batch} rows padded to 512, is the largest): simlab and shared-prefix "
                        f"measured alone")
    log(f"   {report.notes[-1]}")
    try:
        measure_paths(bench, _with(settings, no_reference=True), peak[0], peak[1], projection, report)
    except Exception as error:  # noqa: BLE001
        report.errors.append(f"measuring simlab's paths: {type(error).__name__}: {error}")
    bench.model.zero_grad(set_to_none=True)
    free_memory(bench.device)


def _with(settings: Settings, **changes) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="llama3_instruct,dsqwen32b",
                        help="paper model configs, comma-separated, in order (default llama3_instruct,dsqwen32b)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes of the same families on the CPU, float32")
    parser.add_argument("--tokenizer", default=None, help="stand-in tokenizer folder (default: .device/tokenizer, "
                                                          "else the embedded SmolLM2's)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="the model's weights (default bfloat16; --tiny float32, where 1e-4 agreement holds)")
    parser.add_argument("--data-root", default=None, help="default: $SIMLAB_DATA, else the copy shipped in simlab")
    parser.add_argument("--rows", type=int, default=None, help="measured rows (default 240; --tiny 8)")
    parser.add_argument("--train-batch", type=int, default=None, help="rows per training step (default 8, the paper's)")
    parser.add_argument("--eval-batch", type=int, default=None, help="rows per evaluation batch (default 48)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed steps per training run (default 4)")
    parser.add_argument("--train-repeats", type=int, default=None, help="timed training runs per path (default 3)")
    parser.add_argument("--warm-train", action="store_true",
                        help="first one untimed training pass over every row per path (steady-state rates)")
    parser.add_argument("--no-reference", action="store_true", help="measure simlab's two paths only")
    parser.add_argument("--compile", action="store_true",
                        help="also the shared-prefix path with compiled decoder layers (torch.compile; compiling is "
                             "an untimed warm-up)")
    parser.add_argument("--compile-mode", default=None, choices=["default", "reduce-overhead",
                                                                "max-autotune-no-cudagraphs"],
                        help="torch.compile's mode for --compile (reduce-overhead: CUDA graphs)")
    parser.add_argument("--pack-length-multiple", type=int, default=1,
                        help="the compiled path's packed batches padded to a multiple of this many tokens (default 1: "
                             "none; e.g. 32 with --compile-mode reduce-overhead: a few shapes to record)")
    parser.add_argument("--no-batch-search", action="store_true", help="skip the largest-batch search")
    parser.add_argument("--prompt-order", choices=["question_first", "paper"], default="question_first")
    parser.add_argument("--budget-s", type=float, default=500.0, help="wall seconds for all sections (default 500)")
    parser.add_argument("--measure-needs-s", type=float, default=90.0,
                        help="measure a model's paths only with this much budget left (default 90)")
    parser.add_argument("--reserve-s", type=float, default=20.0, help="budget kept for the summary (default 20)")
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="the peak matmul's size (default 8192; --tiny 256)")
    parser.add_argument("--json", default=None, help="default: $OUT/device_check.json when $OUT is set")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        usage_error("no CUDA device here: run on the lent GPU, or use --tiny on a CPU")
    dtype = getattr(torch, args.dtype or ("float32" if args.tiny else "bfloat16"))
    tolerance, prefix_tolerance = (PAPER_SCALE_FLOAT32 if dtype == torch.float32 and not args.tiny
                                   else TOLERANCES[dtype])
    settings = Settings(**(TINY if args.tiny else {}), prompt_order=args.prompt_order, tolerance=tolerance,
                        prefix_tolerance=prefix_tolerance)
    given = {"rows": args.rows, "train_batch": args.train_batch, "eval_batch": args.eval_batch,
             "train_steps": args.train_steps, "train_repeats": args.train_repeats}
    if (args.compile_mode or args.pack_length_multiple != 1) and not args.compile:
        usage_error("--compile-mode and --pack-length-multiple apply to the compiled path: add --compile")
    if args.pack_length_multiple < 1:
        usage_error(f"--pack-length-multiple must be >= 1, got {args.pack_length_multiple}")
    settings = _with(settings, warm_train=args.warm_train, no_reference=args.no_reference, compile=args.compile,
                     compile_mode=args.compile_mode, pack_length_multiple=args.pack_length_multiple,
                     **{k: v for k, v in given.items() if v})
    configs = [model_config(name) for name in args.models.split(",")]  # a wrong name fails here, in one line
    size = args.matmul_size or (256 if args.tiny else 8192)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    peak_gflops = dense_matmul_peak(device, dtype, size)
    peak = (peak_gflops, f"{str(dtype).removeprefix('torch.')} {size}x{size}x{size} torch.mm on {name}")
    log(f"device: {name}; torch {torch.__version__}; matmul peak {peak_gflops / 1e3:.2f} TFLOP/s ({peak[1]})")
    projection = projection_from_data(configs[0])
    target = args.json or (os.path.join(os.environ["OUT"], "device_check.json") if os.environ.get("OUT") else None)

    def write(reports: list[ModelReport]) -> None:
        """The JSON so far: after each model too, so a call cut off at its limit still returns the finished ones."""
        if target:
            summary = {"device": name, "torch": torch.__version__, "tiny": args.tiny, "dtype": str(dtype),
                       "matmul_peak_gflops": peak_gflops, "matmul": peak[1], "settings": vars(settings),
                       "projection": vars(projection), "wall_s": time.perf_counter() - started,
                       "flops": "decoder linears: 2 per weight per real prompt token (eval), 4 (LoRA training step)",
                       "models": {r.name: vars(r) for r in reports}}
            Path(target).write_text(json.dumps(summary, indent=1, default=str))

    reports = []
    for model_name in args.models.split(","):
        try:
            reports.append(check_model(model_name, args, settings, device, dtype, peak, projection, started))
        except Exception as error:  # noqa: BLE001 - a model that cannot be built does not stop the next one
            reports.append(ModelReport(model_name, 0, 0.0, 0.0, errors=[f"{type(error).__name__}: {error}"]))
        free_memory(device)  # here, not in the except block: its traceback holds the failed model until it ends
        write(reports)
    print_summary(reports, peak_gflops, peak[1], projection)
    log(f"wall time {time.perf_counter() - started:.0f} s")
    write(reports)
    failed = any(r.errors or r.agreement.get("failures") for r in reports)
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
