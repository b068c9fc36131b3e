"""Interrupted fine-tunes resume exactly: kill -9 after a mid-epoch checkpoint, SIGTERM at a step that validation
follows, SIGTERM during a validation. Each resumed run must end with the uninterrupted run's adapter weights and
predictions (to 1e-6). Faults are placed exactly by simlab.devtools.faults.SignalAtStep on a tiny random Llama."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO, auto_precision

# 12 optimizer steps of 4 rows, validation after steps 6 and 12, a resume checkpoint every 2 steps
BASE = [
    "model=hf", "experiment=smoke", "logger=none", "data.limit_per_subset=48", "data.limit_eval_per_subset=12",
    "data.batch_size=4", "trainer.limit_train_batches=12", "data.max_length=2048", "data.test_subsets=[C1-Q2,C2-Q1]",
    "callbacks.resume_checkpoint.every_n_steps=2", "callbacks.progress.refresh_rate=0",
]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # a tiny model runs fastest on one thread
AUTO = auto_precision(ONE_THREAD)  # trainer.precision=auto, measured on this machine (conftest pins 32-true)


def run_py(*overrides, expect: int = 0, env: dict = ONE_THREAD):
    result = subprocess.run([sys.executable, "run.py", *overrides], cwd=REPO, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def base(tiny_llama_dir, shared_data):
    return [*BASE, f"model.path={tiny_llama_dir}", f"data.root={shared_data}"]


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_py(*base, f"hydra.run.dir={out}")
    return out


def fault(step: int, name: str, phase: str = "train") -> list[str]:
    return ["+callbacks.fault._target_=simlab.devtools.faults.SignalAtStep", f"+callbacks.fault.step={step}",
            f"+callbacks.fault.signal={name}", f"+callbacks.fault.phase={phase}"]


def status(folder):
    return json.loads((folder / "status.json").read_text())


def assert_same_result(reference, resumed):
    from safetensors.torch import load_file

    ref = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    got = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    assert ref.keys() == got.keys()
    assert max(float((ref[k] - got[k]).abs().max()) for k in ref) <= 1e-6
    lines = [json.loads(l) for l in (reference / "predictions.jsonl").read_text().splitlines()]
    again = [json.loads(l) for l in (resumed / "predictions.jsonl").read_text().splitlines()]
    assert ([(l["subset"], l["country"], l["question_id"]) for l in lines]
            == [(l["subset"], l["country"], l["question_id"]) for l in again])
    assert max(abs(p - q) for a, b in zip(lines, again) for p, q in zip(a["predicted"], b["predicted"])) <= 1e-6
    ref_metrics, got_metrics = (json.loads((f / "metrics.json").read_text()) for f in (reference, resumed))
    for subset, values in ref_metrics["subsets"].items():
        assert got_metrics["subsets"][subset] == pytest.approx(values, abs=1e-6)


def test_kill_9_after_a_mid_epoch_checkpoint_then_resume(base, reference, tmp_path):
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "run.py", *base, *fault(5, "SIGKILL"), f"hydra.run.dir={out}"],
                            cwd=REPO, capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert killed.returncode == -signal.SIGKILL
    record = status(out)
    assert record["status"] == "running" and not (out / "metrics.json").exists()
    from simlab.report.collect import load_job
    from simlab.runs.status import read_status

    assert read_status(out)["dead"] and load_job(out).status == "dead"  # never counted as completed
    run_py(*base, *fault(5, "SIGKILL"), f"hydra.run.dir={out}", f"resume={out}")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"]["global_step"] == 4  # the last checkpoint before the kill at step 5
    assert status(out)["status"] == "completed"
    assert_same_result(reference, out)


@pytest.mark.parametrize("step, phase, stopped_at", [(6, "train", 6), (6, "validation", 6), (3, "train", 3)])
def test_sigterm_stops_with_a_checkpoint_and_resumes_exactly(base, reference, tmp_path, step, phase, stopped_at):
    out = tmp_path / "terminated"
    stopped = run_py(*base, *fault(step, "SIGTERM", phase), f"hydra.run.dir={out}", expect=128 + signal.SIGTERM)
    record = status(out)
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM" and record["step"] == stopped_at
    assert (record["checkpoint"] == str(out / "checkpoints" / "last.ckpt")
            and f"resume={out}" in record["resume_command"])
    assert "Resume with: python run.py" in stopped.stderr + stopped.stdout
    run_py(*base, *fault(step, "SIGTERM", phase), f"hydra.run.dir={out}", f"resume={out}")
    assert json.loads((out / "metrics.json").read_text())["resumed_from"]["global_step"] == stopped_at
    assert_same_result(reference, out)


def test_resume_refuses_another_config_and_a_finished_run(base, reference, tmp_path):
    result = run_py(*base, f"hydra.run.dir={reference}", f"resume={reference}", expect=1)
    assert "already completed" in result.stderr
    out = tmp_path / "stopped"
    run_py(*base, *fault(3, "SIGTERM"), f"hydra.run.dir={out}", expect=128 + signal.SIGTERM, env=AUTO)
    result = run_py(*base, *fault(3, "SIGTERM"), "data.batch_size=2", f"hydra.run.dir={out}", f"resume={out}", expect=1,
                    env=AUTO)
    assert "data.batch_size: 4 -> 2" in result.stderr
    assert status(out)["status"] == "interrupted"  # a refused resume leaves the run as it was
    # precision=auto is measured on the machine (simlab.training.precision): naming a precision is no config
    # difference, but the checkpoint refuses to continue in another one than the run trained in
    chosen = next(line.split("precision ", 1)[1].split(":")[0] for line in (out / "run.log").read_text().splitlines()
                  if "simlab.training.distributed" in line and "precision " in line)
    other = "bf16-mixed" if chosen == "32-true" else "32-true"
    result = run_py(*base, *fault(3, "SIGTERM"), f"trainer.precision={other}", f"hydra.run.dir={out}",
                    f"resume={out}", expect=1, env=AUTO)
    assert f"the run trained in precision {chosen}" in result.stderr and f"trainer.precision={chosen}" in result.stderr
    # refused when the checkpoint is read: the run is marked failed (with why) and still resumes with that override
    assert status(out)["status"] == "failed" and f"trainer.precision={chosen}" in status(out)["error"]
    # left at auto, the resume is not measured again: it continues in what the run chose (a busy machine may differ)
    resumed = run_py(*base, *fault(3, "SIGTERM"), f"hydra.run.dir={out}", f"resume={out}", env=AUTO)
    said = resumed.stdout + resumed.stderr
    assert f"trainer.precision=auto: resuming in {chosen}, the precision the run chose" in said
    assert status(out)["status"] == "completed"


def test_the_resume_checkpoint_carries_the_precision(tmp_path):
    from simlab.training.callbacks import ResumeCheckpoint

    saved = ResumeCheckpoint(tmp_path)
    saved._precision = "bf16-mixed"
    state = saved.state_dict()
    same = ResumeCheckpoint(tmp_path)
    same._precision = "bf16-mixed"
    same.load_state_dict(state)
    other = ResumeCheckpoint(tmp_path)
    other._precision = "32-true"
    with pytest.raises(ValueError, match="trained in precision bf16-mixed.*trainer.precision=bf16-mixed"):
        other.load_state_dict(state)
    older = {k: v for k, v in state.items() if k != "precision"}  # a checkpoint from before the record: accepted
    other.load_state_dict(older)

    from simlab.training.callbacks import recorded_precision

    torch.save({"state_dict": {}, "callbacks": {"ResumeCheckpoint": state}}, tmp_path / "last.ckpt")
    assert recorded_precision(tmp_path / "last.ckpt") == "bf16-mixed"
    torch.save({"state_dict": {}, "callbacks": {"ResumeCheckpoint": older}}, tmp_path / "older.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    assert recorded_precision(tmp_path / "older.ckpt") is None and recorded_precision(tmp_path / "empty.ckpt") is None
