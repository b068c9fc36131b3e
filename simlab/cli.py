"""One command for simlab's tools besides run.py: ``simlab <command> [options]`` (each also runs as
``python -m simlab.<module>``).

    simlab report DIR [DIR ...]          tables, figures and breakdowns of runs and sweeps (simlab.report)
    simlab reanalyse RUN --out DIR       the post-test analysis again from a run's predictions (analysis.reanalyse)
    simlab compare --runs A B ...        side-by-side metrics of runs (simlab.report.compare)
    simlab paired A B --subset S         B - A on the same rows, with a question-clustered SE (simlab.analysis.paired)
    simlab compare-languages --runs A B  English vs Chinese agreement (simlab.analysis.languages)
    simlab build-wvs ...                 the paper-format WVS splits from the survey CSV (simlab.data.build_wvs)
    simlab bench ...                     throughput benchmarks (simlab.devtools.bench)
    simlab faults ...                    fault injection on the embedded model (simlab.devtools.faults)
    simlab adapter-from-ckpt CKPT OUT    a peft adapter folder from a run's Lightning checkpoint
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = {  # command -> (module with main(argv), what it does)
    "report": ("simlab.report.__main__", "tables, figures and breakdowns of runs and sweeps"),
    "reanalyse": ("simlab.analysis.reanalyse", "the post-test analysis again from a run's predictions"),
    "compare": ("simlab.report.compare", "side-by-side metrics of runs"),
    "paired": ("simlab.analysis.paired", "is run B better than run A on the same rows (paired, clustered by question)"),
    "compare-languages": ("simlab.analysis.languages", "English vs Chinese agreement of two runs"),
    "build-wvs": ("simlab.data.build_wvs", "the paper-format WVS splits from the survey CSV"),
    "bench": ("simlab.devtools.bench.command", "throughput benchmarks"),
    "faults": ("simlab.devtools.faults", "fault injection on the embedded model"),
}


def adapter_from_ckpt(argv: Sequence[str]) -> int:
    from simlab.simulator.checkpoints import adapter_from_run_checkpoint

    parser = argparse.ArgumentParser(prog="simlab adapter-from-ckpt",
                                     description="a peft adapter folder from a simlab run's Lightning checkpoint")
    parser.add_argument("checkpoint", help="<run dir>/checkpoints/<name>.ckpt")
    parser.add_argument("out", help="the adapter folder to write (model.adapter= loads it)")
    args = parser.parse_args(argv)
    print(adapter_from_run_checkpoint(args.checkpoint, args.out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "adapter-from-ckpt":
        return adapter_from_ckpt(rest)
    if command not in COMMANDS:
        print(f"simlab: unknown command {command!r}; commands: {', '.join([*COMMANDS, 'adapter-from-ckpt'])}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = [f"simlab {command}", *rest]  # argparse's usage line names the command
    return module.main(rest) or 0


if __name__ == "__main__":
    raise SystemExit(main())
