"""Fault injection: does a run survive being killed, interrupted, crowded or fed contradictory data?

``python -m simlab.devtools.faults`` (``make faults``) runs the embedded model at smoke size through each fault with
real signals from outside the process, and prints a table: fault, expected, observed, pass/fail. It exits non-zero
if any fault is not handled as expected. Runs go under ``outputs/faults/<time>/`` (or ``--out``). Two sections:
``runs`` (kill, resume, crowding, data) and ``security`` (:mod:`simlab.devtools.faults_security`: each bad case of
a crafted file, a foreign config, a refused or racing run planted and checked); ``--only <section>`` runs one.

:class:`SignalAtStep` is a callback that sends a signal to its own process at a given training step (or during the
validation after it), so tests can place a fault exactly; it fires only in a fresh run, never in a resumed one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytorch_lightning as pl

from simlab.common import commandline
from simlab.data.files import read_data_json
from simlab.devtools.fault_table import SMOKE, Outcome, markdown, run_py
from simlab.paths import REPO_ROOT, data_root
from simlab.runs.rundir import RunDir
from simlab.runs.status import read_status


class SignalAtStep(pl.Callback):
    """Send ``signal`` (a name such as ``SIGKILL`` or ``SIGTERM``) to this process once ``step`` optimizer steps
    are done: at the end of that training batch (``phase="train"``) or during the first validation batch after
    it (``phase="validation"``). Never in a run resumed from a checkpoint."""

    def __init__(self, step: int, signal: str = "SIGTERM", phase: str = "train"):
        if phase not in ("train", "validation"):
            raise ValueError(f"phase must be 'train' or 'validation', got {phase!r}")
        self.step, self.signum, self.phase = step, _signal(signal), phase
        self.fired = False

    def _fire(self, trainer) -> None:
        if not self.fired and not trainer.ckpt_path and trainer.global_step >= self.step:
            self.fired = True
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.phase == "train":
            self._fire(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.phase == "validation" and trainer.state.fn == "fit":
            self._fire(trainer)


def _signal(name: str) -> int:
    try:
        return int(getattr(signal, name))
    except AttributeError as err:
        raise ValueError(f"unknown signal {name!r} (e.g. SIGTERM, SIGINT, SIGKILL)") from err


# ---------------------------------------------------------------------------------------------- the script
def wait_for(path: Path, process, timeout: float = 1800) -> bool:
    """Poll until ``path`` exists (True) or the process ended / time ran out (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            return True
        if process.poll() is not None:
            return path.exists()
        time.sleep(0.05)
    return False


def adapter_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    left, right = (load_file(str(a / "adapter" / "adapter_model.safetensors")),
                   load_file(str(b / "adapter" / "adapter_model.safetensors")))
    if left.keys() != right.keys():
        return float("inf")
    return max(float((left[k] - right[k]).abs().max()) for k in left)


def prediction_difference(a: Path, b: Path) -> float:
    left, right = RunDir(a).read_predictions(), RunDir(b).read_predictions()
    if len(left) != len(right) or any((x["country"], x["question_id"]) != (y["country"], y["question_id"])
                                      for x, y in zip(left, right)):
        return float("inf")
    return max(abs(p - q) for x, y in zip(left, right) for p, q in zip(x["predicted"], y["predicted"]))


def kill_and_resume(out: Path, reference: Path, name: str, signum: int) -> list[Outcome]:
    """Start a fine-tune, send ``signum`` from outside once its first checkpoint exists, resume it, and compare
    the final adapter and predictions with the uninterrupted reference run."""
    run_dir = out / name
    process = run_py([*SMOKE, f"hydra.run.dir={run_dir}"], wait=False)
    reached = wait_for(RunDir(run_dir).last_checkpoint, process)
    sent = time.time()
    if reached and process.poll() is None:
        process.send_signal(signum)
    output, _ = process.communicate()
    stopped_s = time.time() - sent
    status = read_status(run_dir) or {}
    outcomes = []
    label = signal.Signals(signum).name
    if signum == signal.SIGKILL:
        ok = process.returncode == -signal.SIGKILL and status.get("status") == "running" and status.get("dead")
        outcomes.append(Outcome(f"{label} after the first mid-epoch checkpoint", "killed; status running, process dead",
                                f"rc {process.returncode}, status {status.get('status')}, dead {status.get('dead')}",
                                bool(ok)))
    else:
        ok = process.returncode == 128 + signum and status.get("status") == "interrupted" and status.get("checkpoint")
        outcomes.append(Outcome(f"{label} mid-epoch", "stops within a step: rc 143, status interrupted + checkpoint",
                                f"rc {process.returncode} after {stopped_s:.0f} s, status {status.get('status')}, "
                                f"checkpoint {'yes' if status.get('checkpoint') else 'no'}", bool(ok)))
    resumed = run_py([*SMOKE, f"hydra.run.dir={run_dir}", f"resume={run_dir}"])
    final = read_status(run_dir) or {}
    if resumed.returncode or final.get("status") != "completed":
        outcomes.append(Outcome(f"resume after {label}", "completes, equals the uninterrupted run to 1e-6",
                                f"rc {resumed.returncode}, status {final.get('status')}: {resumed.output[-300:]}",
                                False))
        return outcomes
    metrics = RunDir(run_dir).read_metrics()
    weights, probs = adapter_difference(reference, run_dir), prediction_difference(reference, run_dir)
    outcomes.append(Outcome(
        f"resume after {label}", "completes, equals the uninterrupted run to 1e-6",
        f"resumed at step {metrics.get('resumed_from', {}).get('global_step')}; max diff adapter {weights:.1e}, "
        f"predictions {probs:.1e}", weights <= 1e-6 and probs <= 1e-6,
    ))
    return outcomes


def same_second(out: Path) -> Outcome:
    """Two runs started together with the default folders (outputs/baseline/<date>_<time>_<random>)."""
    processes = [run_py(["task=baseline", f"baseline={name}", "logger=none"], wait=False)
                 for name in ("uniform", "avg_culture")]
    for process in processes:
        process.output, _ = process.communicate()
    folders = [_outputs_folder(p.output) for p in processes]
    states = [(read_status(f) or {}).get("status") if f else None for f in folders]
    seconds = {f.name.rsplit("_", 1)[0] for f in folders if f}
    ok = (all(p.returncode == 0 for p in processes) and None not in folders and len(set(folders)) == 2
          and states == ["completed"] * 2)
    return Outcome("two runs started together", "two folders, both completed",
                   f"rc {[p.returncode for p in processes]}, {len(set(folders))} folders "
                   f"({'same second' if len(seconds) == 1 else 'different seconds'}), {states}", ok)


def _outputs_folder(output: str) -> Path | None:
    for line in reversed(output.splitlines()):
        if "outputs in " in line:
            return Path(line.split("outputs in ", 1)[1].strip())
    return None


def killed_while_writing(out: Path) -> Outcome:
    from simlab.report.collect import load_job

    run_dir = out / "killed_write"
    process = run_py(["task=baseline", "baseline=uniform", "logger=none", f"hydra.run.dir={run_dir}"],
                     env={"SIMLAB_FAILPOINT": "kill-after:metrics.json"})
    job = load_job(run_dir)
    ok = process.returncode == -signal.SIGKILL and RunDir(run_dir).metrics_file.is_file() and not job.ok
    return Outcome("kill -9 right after metrics.json is written", "the report does not count it completed",
                   f"rc {process.returncode}, "
                   f"metrics.json {'there' if RunDir(run_dir).metrics_file.is_file() else 'absent'}, "
                   f"report status {job.status}", ok)


def reused_folder(out: Path, finished: Path) -> list[Outcome]:
    before = sorted(p.name for p in finished.iterdir())
    refused = run_py(["task=baseline", "baseline=uniform", "logger=none", f"hydra.run.dir={finished}"])
    kept = sorted(p.name for p in finished.iterdir()) == before and (finished / "adapter").is_dir()
    first = Outcome("a baseline into a fine-tune's finished folder", "refused; the old outputs untouched",
                    f"rc {refused.returncode}, outputs {'untouched' if kept else 'changed'}",
                    refused.returncode != 0 and kept and "overwrite=true" in refused.output)
    copy = out / "overwritten"
    shutil.copytree(finished, copy)
    forced = run_py(["task=baseline", "baseline=uniform", "logger=none", f"hydra.run.dir={copy}", "overwrite=true"])
    left = [name for name in ("adapter", "checkpoints") if (copy / name).exists()]
    second = Outcome("the same with overwrite=true", "the old run's outputs removed, baseline completed",
                     f"rc {forced.returncode}, status {(read_status(copy) or {}).get('status')}, "
                     f"old outputs left: {left or 'none'}",
                     forced.returncode == 0 and not left and (read_status(copy) or {}).get("status") == "completed")
    return [first, second]


def contradictory_data(out: Path) -> list[Outcome]:
    root = out / "bad_data"
    (root / "wvs7").mkdir(parents=True)
    rows = read_data_json("wvs7/sft_wvs_valid.json", data_root())
    outcomes = []
    for name, change, needle in (
        ("a repeated (country, question) with another distribution", "duplicate", "repeats"),
        ("a row whose shares sum to 50", "half", "shares sum to 50"),
    ):
        bad = [dict(r) for r in rows[:40]]
        if change == "duplicate":
            copy = dict(bad[3])
            copy["options_dist"] = {k: (100.0 if i == 0 else 0.0) for i, k in enumerate(copy["options_dist"])}
            bad.append(copy)
        else:
            bad[5]["options_dist"] = {k: v / 2 for k, v in bad[5]["options_dist"].items()}
        (root / "wvs7" / "sft_wvs_valid.json").write_text(json.dumps(bad), encoding="utf-8")
        process = run_py(["task=baseline", "baseline=uniform", "logger=none", f"data.root={root}",
                          "data.files=[wvs7/sft_wvs_valid.json]", "data.train_subset=null", "data.test_subsets=[C1-Q2]",
                          "data.average_subsets=[]", f"hydra.run.dir={out / ('data_' + change)}"])
        outcomes.append(Outcome(name, "an error naming the file, the row and the field",
                                _error_line(process.output, needle).replace(str(out), "<run dir>"),
                                process.returncode != 0 and needle in process.output))
    return outcomes


def _error_line(output: str, needle: str) -> str:
    for line in output.splitlines():
        if needle in line:
            return line.strip()
    return output.strip().splitlines()[-1] if output.strip() else "(no output)"


def precision_logged(output: str) -> Outcome:
    line = next((l for l in output.splitlines() if "precision" in l and ":" in l and "simlab" in l), "")
    return Outcome("precision on this CPU", "chosen by the CPU's measured bf16 and float32 speed, logged with why",
                   line.split("] - ")[-1][:160] or "(not logged)", bool(line))


SECTIONS = ("runs", "security")


def main(argv: list[str] | None = None) -> int:
    parser = commandline.parser("faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="folder for the runs (default outputs/faults/<time>)")
    parser.add_argument("--only", choices=SECTIONS, default=None,
                        help="one section: runs (kill, resume, crowding, data) or security (planted bad cases)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else REPO_ROOT / "outputs" / "faults" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    print(f"fault injection on the embedded model, runs under {out}", flush=True)
    outcomes: list[Outcome] = []
    if args.only in (None, "runs"):
        runs = run_faults(out)
        if runs is None:
            return 1
        outcomes += runs
    if args.only in (None, "security"):
        from simlab.devtools.faults_security import security

        print("security and integrity: each bad case planted", flush=True)
        outcomes += security(out / "security")
    table = markdown(outcomes)
    print(f"\n{table}\n\n{sum(o.passed for o in outcomes)} passed, {sum(not o.passed for o in outcomes)} failed "
          f"({time.time() - started:.0f} s)")
    (out / "faults.md").write_text(table + "\n", encoding="utf-8")
    return 0 if all(o.passed for o in outcomes) else 1


def run_faults(out: Path) -> list[Outcome] | None:
    """The runs section: kill -9 and SIGTERM then resume (against an uninterrupted reference), crowding, a kill
    between outputs, a reused folder, contradictory data. None when the reference run itself fails."""
    reference = out / "reference"
    ref = run_py([*SMOKE, f"hydra.run.dir={reference}"])
    if ref.returncode:
        print(ref.output[-3000:])
        print("the uninterrupted reference run failed; nothing to compare with", file=sys.stderr)
        return None
    outcomes = [precision_logged(ref.output)]
    for name, signum in (("killed", signal.SIGKILL), ("terminated", signal.SIGTERM)):
        outcomes += kill_and_resume(out, reference, name, signum)
        print(markdown(outcomes[-2:]).split("\n", 2)[2], flush=True)
    outcomes.append(same_second(out))
    outcomes.append(killed_while_writing(out))
    outcomes += reused_folder(out, reference)
    outcomes += contradictory_data(out)
    return outcomes


if __name__ == "__main__":
    sys.exit(main())
