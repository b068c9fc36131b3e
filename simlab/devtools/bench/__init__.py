"""`make bench`: evaluation and LoRA-training throughput of simlab against the reference method, in one process.

All paths run on the same model object, dtype and thread count. The parts, one concept each:

* :mod:`~simlab.devtools.bench.methods`: the paths compared (the reference, simlab, shared-prefix) as settings of
  one ``Method``, and the ablation ladders that walk from the reference to simlab a step at a time,
* :mod:`~simlab.devtools.bench.reference`: the paper's reference method (padding to 512, full-vocabulary logits,
  the per-row loss loop),
* :mod:`~simlab.devtools.bench.workload`: the rows measured (a seeded sample, grouped by question),
* :mod:`~simlab.devtools.bench.paths`: batching, scoring, evaluating and training the rows on a path,
* :mod:`~simlab.devtools.bench.meters`: wall and CPU time, peak memory, tokens, FLOPs, matmul peak, speedups,
* :mod:`~simlab.devtools.bench.timing`: the ``Bench`` and the benchmark's phases (checks, timing, ablation, profile),
* :mod:`~simlab.devtools.bench.report`: the printed tables, agreement checks and speedup lines,
* :mod:`~simlab.devtools.bench.command`: the command line (``python -m simlab.devtools.bench``, ``simlab bench``).
"""
