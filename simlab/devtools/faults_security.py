"""The security and integrity section of ``make faults``: each bad case planted for real, then its outcome checked.

A crafted checkpoint whose unpickling would run a command, a run folder whose config names ``subprocess.check_call``,
a refused run into a completed run's folder, a fine-tune that takes no step, a run with no test subset, two processes
claiming one empty folder at the same instant, and ``overwrite=true`` with inputs that do not exist. The payloads
create a marker file: a case passes only when it is refused and the marker is absent. Each payload is first shown to
be live (it does create its marker when loaded the unsafe way), so a row cannot pass because the plant was inert.

``python -m simlab.devtools.faults --only security`` runs this section alone; ``model_free=True`` leaves out the two
cases that load the embedded model (``ckpt_path=`` and ``trainer.max_epochs=0``): tests/test_faults_security.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from simlab.devtools.fault_table import SMOKE, Outcome, run_py
from simlab.paths import REPO_ROOT
from simlab.runs.status import read_status

# the files of a completed run that a refused run must leave byte-identical
KEPT_FILES = (".hydra/config.yaml", ".hydra/overrides.yaml", "run.log", "status.json", "metrics.json")
BASELINE = ["task=baseline", "baseline=uniform", "logger=none", "data.limit_per_subset=4"]


class _RunsCommand:
    """Unpickling this runs ``touch <marker>``: the payload of a crafted checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return subprocess.check_call, (["touch", str(self.marker)],)


def simlab_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simlab.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)


def last_line(output: str, out: Path) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "(no output)").replace(str(out), "<out>")[:220]


def plant_run_folder(folder: Path, loader: dict) -> Path:
    """A run folder as a colleague could share it: config_resolved.yaml (model loader ``loader``, LoRA, data),
    metrics.json and a benign checkpoint; returns the checkpoint."""
    import torch
    import yaml

    (folder / "checkpoints").mkdir(parents=True)
    config = {"model": {"name": "planted", "adapter": None, "loader": loader,
                        "lora": {"_target_": "peft.LoraConfig", "r": 2, "target_modules": "all-linear"}},
              "data": {"_target_": "simlab.data.SurveyDataModule", "files": ["wvs7/sft_wvs_valid.json"]}}
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (folder / "metrics.json").write_text("{}\n", encoding="utf-8")
    checkpoint = folder / "checkpoints" / "best-step1.ckpt"
    torch.save({"state_dict": {}, "global_step": 1}, checkpoint)
    return checkpoint


# ---------------------------------------------------------------------------------------------- the cases
def pickle_checkpoint(out: Path, model_free: bool = False) -> list[Outcome]:
    """A checkpoint whose unpickling runs ``touch <marker>``, fed to ``simlab adapter-from-ckpt`` and (loading the
    model) to ``ckpt_path=``: both refused, no marker."""
    import torch

    folder = out / "pickle_run"
    plant_run_folder(folder, {"_target_": "simlab.model.load_language_model", "embedded": "smollm2_135m_instruct"})
    evil = folder / "checkpoints" / "evil.ckpt"
    control, marker = out / "pickle_control_ran", out / "pickle_ran"
    torch.save({"state_dict": {}, "global_step": 1, "payload": _RunsCommand(control)}, evil)
    torch.load(evil, weights_only=False)  # the unsafe way, here: the payload (a touch) must run
    torch.save({"state_dict": {}, "global_step": 1, "payload": _RunsCommand(marker)}, evil)
    armed = f"payload live: {'yes' if control.exists() else 'NO'}"
    outcomes = []
    result = simlab_cli("adapter-from-ckpt", str(evil), str(out / "pickle_adapter"))
    outcomes.append(Outcome(
        "a checkpoint whose unpickling runs a command, to `simlab adapter-from-ckpt`",
        "refused (weights only), nothing runs, no adapter written",
        f"{armed}; rc {result.returncode}, marker {'CREATED' if marker.exists() else 'absent'}: "
        f"{last_line(result.stderr, out)}",
        control.exists() and result.returncode != 0 and not marker.exists()
        and "code to run" in result.stderr and not (out / "pickle_adapter").exists()))
    if not model_free:
        run = out / "pickle_ckpt_path"
        process = run_py([*SMOKE, f"ckpt_path={evil}", f"hydra.run.dir={run}"])
        status = (read_status(run) or {}).get("status")
        outcomes.append(Outcome(
            "the same checkpoint as `ckpt_path=` of a fine-tune",
            "refused (Lightning loads it weights only), nothing runs",
            f"{armed}; rc {process.returncode}, status {status}, marker {'CREATED' if marker.exists() else 'absent'}: "
            f"{last_line(process.output, out)}",
            control.exists() and process.returncode != 0 and status == "failed" and not marker.exists()
            and "code to run" in last_line(process.output, out)))
    return outcomes


def foreign_target_config(out: Path) -> list[Outcome]:
    """A run folder whose config_resolved.yaml names ``subprocess.check_call`` as its model loader, read by each
    reader of a run folder's config (the command line's in a fresh process, the Python API's here): each refused,
    no marker."""
    from simlab.analysis.reanalyse import reanalyse
    from simlab.simulate import Simulator
    from simlab.simulator.bundle import load_model

    control = out / "foreign_control_ran"
    # what the plant would do if a reader passed it on: simlab's model loader calls the loader config's _target_
    load_model({"_target_": "subprocess.check_call", "args": ["touch", str(control)]})
    armed = f"payload live: {'yes' if control.exists() else 'NO'}"
    outcomes = []
    for reader in ("simlab adapter-from-ckpt", "Simulator.from_run", "simlab.analysis.reanalyse"):
        name = reader.split()[-1].replace(".", "_")
        folder, marker = out / f"foreign_{name}", out / f"foreign_{name}_ran"
        checkpoint = plant_run_folder(folder, {"_target_": "subprocess.check_call", "args": ["touch", str(marker)]})
        if reader.startswith("simlab "):
            result = simlab_cli("adapter-from-ckpt", str(checkpoint), str(out / f"foreign_{name}_adapter"))
            rc, message = result.returncode, result.stderr
        else:
            try:
                Simulator.from_run(folder) if reader == "Simulator.from_run" else reanalyse(folder, out / "reanalysed")
                rc, message = 0, "accepted"
            except ValueError as err:
                rc, message = 1, f"{type(err).__name__}: {err}"
        outcomes.append(Outcome(
            f"a run folder whose config names `subprocess.check_call`, read by `{reader}`",
            "refused naming the key and the target, nothing runs",
            f"{armed}; {'rc' if reader.startswith('simlab ') else 'raised'} {rc}, marker "
            f"{'CREATED' if marker.exists() else 'absent'}: {last_line(message, out)}",
            control.exists() and rc != 0 and not marker.exists() and "subprocess.check_call" in message
            and "refused" in message))
    return outcomes


def file_hashes(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() if (folder / name).is_file() else "absent"
            for name in KEPT_FILES}


def completed_run(out: Path) -> tuple[Path, Outcome | None]:
    """A completed baseline run (the folder the next cases try to take); an Outcome when it could not be made."""
    folder = out / "completed"
    first = run_py([*BASELINE, f"hydra.run.dir={folder}"])
    hashes = file_hashes(folder)
    if first.returncode or "absent" in hashes.values() or (read_status(folder) or {}).get("status") != "completed":
        return folder, Outcome("a completed run to plant the next cases in", "completed",
                               f"rc {first.returncode}, files {hashes}: {last_line(first.output, out)}", False)
    return folder, None


def refused_into_completed(out: Path, folder: Path) -> Outcome:
    """Another run into a completed run's ``folder`` without overwrite: refused, and the completed run's
    .hydra/config.yaml, overrides.yaml, run.log, status.json and metrics.json byte-identical (sha256)."""
    before = file_hashes(folder)
    refused = run_py(["task=baseline", "baseline=avg_culture", "logger=none", f"hydra.run.dir={folder}"])
    after = file_hashes(folder)
    changed = [name for name in KEPT_FILES if before[name] != after[name]]
    return Outcome("a refused run into a completed run's folder",
                   f"refused; {', '.join(KEPT_FILES)} byte-identical (sha256)",
                   f"rc {refused.returncode}, changed: {', '.join(changed) or 'none'}: "
                   f"{last_line(refused.output, out)}",
                   refused.returncode == 1 and not changed and "already holds another run's outputs" in refused.output)


def no_step(out: Path) -> Outcome:
    """``trainer.max_epochs=0``: the fine-tune fails saying no optimizer step ran, and saves no adapter."""
    run = out / "no_step"
    process = run_py([*SMOKE, "trainer.max_epochs=0", f"hydra.run.dir={run}"])
    status, adapter = (read_status(run) or {}).get("status"), "saved" if (run / "adapter").exists() else "none"
    return Outcome("`trainer.max_epochs=0`", "fails: no optimizer step ran; no adapter saved",
                   f"rc {process.returncode}, status {status}, adapter {adapter}: "
                   f"{last_line(process.output, out)[:160]}",
                   process.returncode == 1 and status == "failed" and not (run / "adapter").exists()
                   and "no optimizer step" in process.output)


def no_subset(out: Path) -> Outcome:
    """``data.test_subsets=[]``: fails before any model is loaded, no metrics."""
    run = out / "no_subset"
    process = run_py(["experiment=smoke", "logger=none", "data.test_subsets=[]", f"hydra.run.dir={run}"])
    status = (read_status(run) or {}).get("status")
    return Outcome("`data.test_subsets=[]` (a fine-tune)", "fails before loading a model, no metrics.json",
                   f"rc {process.returncode}, status {status}: {last_line(process.output, out)[:160]}",
                   process.returncode == 1 and status == "failed" and not (run / "metrics.json").exists()
                   and "data.test_subsets is empty" in process.output)


CLAIMER = """
import sys, time
from pathlib import Path
from simlab.runs.status import RunDirError, claim
print("ready", flush=True)
start, folders = float(sys.stdin.readline()), sys.argv[1:]
for i, folder in enumerate(folders):
    moment = start + i * {gap}
    while time.time() < moment:
        pass
    try:
        claim(Path(folder), overrides=[], started="now")
        print("won", flush=True)
    except RunDirError:
        print("refused", flush=True)
"""


def claim_race(out: Path, rounds: int = 5, gap: float = 0.5) -> Outcome:
    """Two processes claim one empty folder at the same instant (both spin until a start time given once both have
    imported simlab), ``rounds`` times: exactly one wins each time."""
    folders = [out / f"race{i}" for i in range(rounds)]
    for folder in folders:
        folder.mkdir(parents=True)
    code = textwrap.dedent(CLAIMER).replace("{gap}", repr(gap))
    processes = [subprocess.Popen([sys.executable, "-c", code, *map(str, folders)], cwd=REPO_ROOT, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
    ready = [p.stdout.readline().strip() for p in processes]
    start = time.time() + 0.5
    for process in processes:
        process.stdin.write(f"{start}\n")
        process.stdin.flush()
    results = [process.communicate(timeout=120)[0].split() for process in processes]
    winners = [sorted(r[i] if i < len(r) else "none" for r in results) for i in range(rounds)]
    ok = ready == ["ready", "ready"] and all(w == ["refused", "won"] for w in winners)
    failed = "" if ready == ["ready", "ready"] else f"; a claimer failed: {processes[0].stderr.read()[-200:]}"
    return Outcome(f"two processes claim one empty folder at the same instant ({rounds} times)", "exactly one wins",
                   f"{sum(w == ['refused', 'won'] for w in winners)} of {rounds} with one winner "
                   f"({', '.join('+'.join(w) for w in winners)}){failed}", ok)


def overwrite_bad_inputs(out: Path, folder: Path) -> list[Outcome]:
    """``overwrite=true`` into a completed run's ``folder`` with a data.root or model path that does not exist:
    refused before anything is deleted or rewritten."""
    outcomes = []
    for label, args in (("data.root=<missing>", ["task=baseline", "baseline=uniform", f"data.root={out}/missing"]),
                        ("model.path=<missing>", ["task=zeroshot", "model=hf", f"model.path={out}/missing"])):
        before = file_hashes(folder)
        process = run_py([*args, "logger=none", "overwrite=true", f"hydra.run.dir={folder}"])
        changed = [name for name in KEPT_FILES if before[name] != file_hashes(folder)[name]]
        lines = [line for line in process.output.strip().splitlines() if line.strip()]
        outcomes.append(Outcome(
            f"`overwrite=true {label}` into a completed run's folder",
            "a one-line error; nothing deleted or rewritten",
            f"rc {process.returncode}, {len(lines)} line(s), changed: {', '.join(changed) or 'none'}: "
            f"{last_line(process.output, out)[:160]}",
            process.returncode == 1 and len(lines) == 1 and not changed
            and (read_status(folder) or {}).get("status") == "completed"))
    return outcomes


def security(out: Path, model_free: bool = False) -> list[Outcome]:
    """Every case of the section (``model_free``: only those that load no model)."""
    outcomes = pickle_checkpoint(out, model_free)
    outcomes += foreign_target_config(out)
    completed, failed = completed_run(out)
    outcomes += [failed] if failed else [refused_into_completed(out, completed), *overwrite_bad_inputs(out, completed)]
    if not model_free:
        outcomes.append(no_step(out))
    outcomes.append(no_subset(out))
    outcomes.append(claim_race(out))
    return outcomes
