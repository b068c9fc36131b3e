"""What the bench measures with: peak memory, wall and CPU time, throughput and paired speedups, token positions
computed, the decoder's FLOPs and this machine's matmul peak; and the records the measured phases fill."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from simlab.data.batching import computed_tokens
from simlab.devtools.bench.methods import Method
from simlab.devtools.bench.paths import EvalResult, batches
from simlab.devtools.bench.workload import BenchData
from simlab.training.precision import matmul_gflops


class PeakMemory:
    """A memory meter's readings in MiB: ``delta_mib`` above the level at entry, ``peak_mib`` in all."""

    peak: int
    base: int

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.base) / 2**20

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20


class PeakRSS(PeakMemory):
    """Peak resident set size above the level at entry, sampled by a thread every ``interval`` seconds.

    Why RSS sampling: torch's CPU tensors bypass ``tracemalloc``, and ``getrusage``'s ``ru_maxrss`` is a
    high-water mark for the whole process, so it cannot measure a second phase that peaks lower than the first.
    Sampling misses spikes shorter than the interval, which the large (whole-batch) tensors here are not.
    """

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self.base = interval, 0, 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


class PeakCudaMemory(PeakMemory):
    """Peak GPU memory allocated by torch during a block: ``delta_mib`` above the level at entry (as
    :class:`PeakRSS`), ``peak_mib`` in all (the weights included)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> PeakCudaMemory:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.synchronize(self.device)
        self.peak = torch.cuda.max_memory_allocated(self.device)


def peak_memory(device: torch.device) -> PeakMemory:
    """The memory meter for ``device``: torch's allocator statistics on a GPU, the process's RSS on a CPU."""
    return PeakCudaMemory(device) if device.type == "cuda" else PeakRSS()


def dense_matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """GFLOP/s of one large square matmul (``size`` x ``size`` x ``size``) in ``dtype`` on ``device``, best of
    ``repeats`` after a warm-up: the measured peak that model FLOP utilisation is a fraction of."""
    return matmul_gflops(dtype, size=size, tokens=size, repeats=repeats, device=device)


class CpuShare:
    """Wall time of a block, and the share of the machine's cores this process got during it (CPU time / wall /
    cores): well below 1 means other work competed for the CPU, which slows both paths of the comparison."""

    def __enter__(self) -> CpuShare:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        self.value = self.cpu / max(self.wall, 1e-9) / (os.cpu_count() or 1)


@dataclass
class Timed:
    seconds: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    def add(self, seconds: float, rows: int, peak_mib: float, cpu_seconds: float) -> None:
        self.seconds.append(seconds)
        self.rows.append(rows)
        self.peak_mib.append(peak_mib)
        self.cpu_seconds.append(cpu_seconds)

    @property
    def cpu_rates(self) -> list[float]:
        """Rows per CPU-second: the work per row, less sensitive than wall time to other load on the machine."""
        return [n / s for n, s in zip(self.rows, self.cpu_seconds)]

    @property
    def rates(self) -> list[float]:
        return [n / s for n, s in zip(self.rows, self.seconds)]

    @property
    def median_rate(self) -> float:
        return statistics.median(self.rates)


def paired_speedup(slow: Timed, fast: Timed, cpu: bool = False) -> float:
    """Median over repeats of fast/slow throughput, each repeat timing both on the same rows back to back."""
    pairs = zip(fast.cpu_rates, slow.cpu_rates) if cpu else zip(fast.rates, slow.rates)
    return statistics.median(f / s for f, s in pairs)


def path_tokens(data: BenchData, method: Method, indices: Sequence[int], batch_size: int, *, train: bool,
                seed: int = 0) -> int:
    """Token positions the decoder computes for ``indices`` on ``method``'s batches (padding and prefixes included)."""
    if method.pad_to_max:
        return len(list(indices)) * data.max_length
    return sum(computed_tokens(b) for b in batches(data, method, indices, batch_size, train=train, seed=seed))


def linear_flops_per_token(model) -> int:
    """Multiply-add FLOPs of the decoder's linear layers (LoRA branches included) per token position: 2 x weights."""
    from simlab.model.adapters import base_model

    decoder = base_model(model).get_decoder()
    return sum(2 * m.in_features * m.out_features for m in decoder.modules() if isinstance(m, torch.nn.Linear))


def matmul_peak(model, tokens: int = 2048, repeats: int = 5, autocast: bool = False) -> float:
    """GFLOP/s of ``F.linear`` on one decoder layer's weight shapes with ``tokens`` rows, best of ``repeats``: what
    this machine's matmul kernels reach on the model's shapes, in this process, at its thread count."""
    from simlab.model.adapters import base_model

    layer = base_model(model).get_decoder().layers[0]
    weights = [m.weight.detach() for n, m in layer.named_modules()
               if isinstance(m, torch.nn.Linear) and "lora_" not in n]
    inputs = {w.shape[1]: torch.randn(tokens, w.shape[1], dtype=w.dtype) for w in weights}
    flops = sum(2 * tokens * w.shape[0] * w.shape[1] for w in weights)
    best = float("inf")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for weight in weights:  # warm-up
            F.linear(inputs[weight.shape[1]], weight)
        for _ in range(repeats):
            started = time.perf_counter()
            for weight in weights:
                F.linear(inputs[weight.shape[1]], weight)
            best = min(best, time.perf_counter() - started)
    return flops / best / 1e9


@dataclass
class Checks:
    """The training-step agreement checks on the warm-up rows (dropout off)."""

    ref_loss: float  # reference and simlab (nan with --no-reference)
    sim_loss: float
    grad_diff: float
    per_row_loss: float  # simlab and shared-prefix
    prefix_loss: float
    prefix_grad_diff: float


@dataclass
class Measurements:
    """What the timed phases measured, per path name."""

    names: list[str]
    timed: dict[str, Timed]  # evaluation
    results: dict[str, EvalResult]
    eval_tokens: dict[str, int]
    train_timed: dict[str, Timed]
    train_tokens: dict[str, int]
    peak_gflops: float  # the matmul throughput the FLOP rates are compared with
    flops_per_token: int  # the decoder linears' FLOPs per token position
    peak_label: str | None = None  # what peak_gflops measured (None: the matmul_peak of command.run)
    memory: str = "RSS"  # what peak_mib measured (Bench.memory)

    def gflops(self, name: str, train: bool) -> float:
        tokens = self.train_tokens[name] if train else self.eval_tokens[name]
        seconds = sum(self.train_timed[name].seconds if train else self.timed[name].seconds)
        return self.flops_per_token * tokens * (2 if train else 1) / seconds / 1e9  # training: + backward input grads

