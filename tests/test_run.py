"""run.py end to end through Hydra on a tiny random Llama loaded from a folder by model.path."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from scipy.spatial.distance import jensenshannon

SUBSETS = ["C1-Q2", "C1-Q3", "C2-Q1", "C2-Q2", "C2-Q3", "C3-Q1", "C3-Q2", "C3-Q3"]


def run_py(*overrides, cwd=REPO):
    result = subprocess.run(
        [sys.executable, "run.py", *overrides], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def finetune_dir(tmp_path_factory, tiny_llama_dir, shared_data):
    out = tmp_path_factory.mktemp("finetune")
    run_py(
        "model=hf", f"model.path={tiny_llama_dir}", "loss=kl", "experiment=smoke", "logger=csv",
        "data.limit_per_subset=8", "data.max_length=2048", f"data.root={shared_data}", f"hydra.run.dir={out}",
    )
    return out


def test_finetune_writes_every_output(finetune_dir):
    metrics = json.loads((finetune_dir / "metrics.json").read_text())
    assert metrics["task"] == "finetune" and metrics["loss"] == "kl" and metrics["model"] == "hf"
    assert len(metrics["code"]["commit"]) == 40  # the run records the code that produced it
    assert list(metrics["subsets"]) == SUBSETS
    for values in metrics["subsets"].values():
        assert set(values) == {"n", "one_minus_jsd", "emd", "emd_paper", "accuracy", "kl"}
        assert values["n"] == 8 and 0 <= values["one_minus_jsd"] <= 1
    assert set(metrics["paper_average"]) == {"one_minus_jsd", "emd", "accuracy"}
    expected = np.mean([metrics["subsets"][s]["one_minus_jsd"] for s in ["C1-Q3", "C2-Q1", "C2-Q3", "C3-Q1", "C3-Q3"]])
    assert metrics["paper_average"]["one_minus_jsd"] == pytest.approx(expected)
    assert (finetune_dir / "adapter" / "adapter_config.json").is_file()
    assert (finetune_dir / "checkpoints" / "last.ckpt").is_file()
    assert (finetune_dir / "config_resolved.yaml").is_file()
    assert "| C2-Q1 | 8 |" in (finetune_dir / "results.md").read_text()


def test_predictions_reproduce_metrics_with_scipy(finetune_dir):
    metrics = json.loads((finetune_dir / "metrics.json").read_text())
    lines = [json.loads(l) for l in (finetune_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 8 * len(SUBSETS)
    for subset in SUBSETS:
        rows = [l for l in lines if l["subset"] == subset]
        scores = [1 - jensenshannon(r["human"], r["predicted"]) for r in rows]
        assert np.mean(scores) == pytest.approx(metrics["subsets"][subset]["one_minus_jsd"], abs=1e-6)
        for r in rows:
            assert len(r["letters"]) == len(r["human"]) == len(r["predicted"])
            assert sum(r["predicted"]) == pytest.approx(1, abs=1e-5)


def test_zeroshot_with_saved_adapter_and_resume(finetune_dir, tiny_llama_dir, shared_data, tmp_path):
    # evaluating the saved adapter gives the fine-tuned run's numbers
    run_py(
        "model=hf", f"model.path={tiny_llama_dir}", f"model.adapter={finetune_dir / 'adapter'}", "task=zeroshot",
        "logger=none", "data.limit_per_subset=8", "data.max_length=2048", f"data.root={shared_data}",
        f"hydra.run.dir={tmp_path / 'zs'}",
    )
    tuned = json.loads((finetune_dir / "metrics.json").read_text())["subsets"]
    again = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert again["task"] == "zeroshot" and "C1-Q1" not in again["rows"]
    for subset in SUBSETS:
        assert again["subsets"][subset]["one_minus_jsd"] == pytest.approx(tuned[subset]["one_minus_jsd"], abs=1e-5)
    # ckpt_path resumes fine-tuning from the last checkpoint (one more epoch)
    run_py(
        "model=hf", f"model.path={tiny_llama_dir}", "experiment=smoke", "logger=none", "trainer.max_epochs=2",
        f"ckpt_path={finetune_dir / 'checkpoints' / 'last.ckpt'}", "data.limit_per_subset=8", "data.max_length=2048",
        f"data.root={shared_data}", f"hydra.run.dir={tmp_path / 'resumed'}",
    )
    assert (tmp_path / "resumed" / "metrics.json").is_file()


def test_missing_data_root_is_a_clear_error(tiny_llama_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "run.py", "model=hf", f"model.path={tiny_llama_dir}", "task=zeroshot", "logger=none",
         f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "nowhere" in result.stderr and "SIMLAB_DATA" in result.stderr


def test_reanalyse_recomputes_the_analysis_from_predictions(finetune_dir, tmp_path):
    from simlab.analysis.reanalyse import reanalyse

    original = json.loads((finetune_dir / "metrics.json").read_text())
    again = reanalyse(finetune_dir, tmp_path / "again", calibrate_on="C1-Q2")
    assert again["position_bias"] == original["position_bias"]
    assert again["noise_ceiling"] == original["noise_ceiling"]
    assert again["calibrated"]["fitted_on"] == "C1-Q2" and again["calibrated"]["temperature"] > 0
    assert again["reanalysed_from"] == str(finetune_dir.resolve())

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("metrics.json", "config_resolved.yaml"):
        (broken / name).write_text((finetune_dir / name).read_text())
    lines = (finetune_dir / "predictions.jsonl").read_text().splitlines()
    record = json.loads(lines[2])
    record["country"] = "Atlantis"
    lines[2] = json.dumps(record)
    (broken / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"predictions.jsonl: line 3: field 'country' is 'Atlantis'"):
        reanalyse(broken, tmp_path / "out")


def test_the_temperature_is_saved_with_the_adapter_and_applied_when_it_is_loaded(tiny_llama_dir, shared_data, tmp_path):
    common = ["model=hf", f"model.path={tiny_llama_dir}", "logger=none", "data.limit_per_subset=8",
              "data.max_length=2048", f"data.root={shared_data}", "calibrate=true"]
    run_py(*common, "experiment=smoke", "trainer.limit_train_batches=2", f"hydra.run.dir={tmp_path / 'ft'}")
    saved = json.loads((tmp_path / "ft" / "adapter" / "calibration.json").read_text())
    tuned = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert tuned["calibration"]["temperature"] == saved["temperature"] and saved["fitted_on"] == "C1-Q2"
    assert set(tuned["uncalibrated"]["subsets"]) == set(tuned["subsets"])
    lines = [json.loads(l) for l in (tmp_path / "ft" / "predictions.jsonl").read_text().splitlines()]
    assert all(len(l["predicted_uncalibrated"]) == len(l["predicted"]) for l in lines)

    # evaluating the adapter applies the saved temperature (not a refit), even without the valid split
    run_py(*common, "task=zeroshot", f"model.adapter={tmp_path / 'ft' / 'adapter'}", "data.test_subsets=[C2-Q1]",
           f"hydra.run.dir={tmp_path / 'zs'}")
    again = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert again["calibration"]["temperature"] == saved["temperature"]
    assert again["calibration"]["source"].endswith("calibration.json")
    assert again["subsets"]["C2-Q1"]["one_minus_jsd"] == pytest.approx(
        tuned["subsets"]["C2-Q1"]["one_minus_jsd"], abs=1e-6)
    assert again["uncalibrated"]["subsets"]["C2-Q1"]["one_minus_jsd"] == pytest.approx(
        tuned["uncalibrated"]["subsets"]["C2-Q1"]["one_minus_jsd"], abs=1e-6)

    # by default (calibrate unset) evaluation applies the saved temperature too; calibrate=false turns it off
    plain = [o for o in common if o != "calibrate=true"]
    evaluate = ["task=zeroshot", f"model.adapter={tmp_path / 'ft' / 'adapter'}", "data.test_subsets=[C2-Q1]"]
    run_py(*plain, *evaluate, f"hydra.run.dir={tmp_path / 'default'}")
    default = json.loads((tmp_path / "default" / "metrics.json").read_text())
    assert default["calibration"]["temperature"] == saved["temperature"]
    # two processes' float sums can differ in the last bits (MKL may thread a product differently under load)
    assert default["subsets"].keys() == again["subsets"].keys()
    for subset, values in default["subsets"].items():
        assert values == pytest.approx(again["subsets"][subset], rel=1e-9, abs=1e-9), subset
    run_py(*plain, *evaluate, "calibrate=false", f"hydra.run.dir={tmp_path / 'off'}")
    off = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert "calibration" not in off or off["calibration"] is None
    assert off["subsets"]["C2-Q1"]["one_minus_jsd"] == pytest.approx(
        tuned["uncalibrated"]["subsets"]["C2-Q1"]["one_minus_jsd"], abs=1e-6)


def test_a_prior_anchored_fine_tune_saves_its_prior_and_evaluation_reuses_it(tiny_llama_dir, shared_data, tmp_path):
    common = ["model=hf", f"model.path={tiny_llama_dir}", "logger=none", "data.limit_per_subset=8",
              "data.max_length=2048", f"data.root={shared_data}"]
    run_py(*common, "experiment=smoke", "trainer.limit_train_batches=2", "prior=survey", "prior.fallback=position",
           f"hydra.run.dir={tmp_path / 'ft'}")
    saved = json.loads((tmp_path / "ft" / "adapter" / "prior.json").read_text())
    assert saved["build"] == {"similarity": False, "fallback": "position", "smoothing": 0.01}
    tuned = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert tuned["prior"] == {"similarity": False, "fallback": "position"}
    # evaluating the adapter anchors on the same prior without being told (its predictions are residuals to it)
    result = run_py(*common, "task=zeroshot", f"model.adapter={tmp_path / 'ft' / 'adapter'}",
                    "data.test_subsets=[C2-Q1]", f"hydra.run.dir={tmp_path / 'zs'}")
    assert "using the prior saved with" in result.stderr + result.stdout + (tmp_path / "zs" / "run.log").read_text()
    again = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert again["subsets"]["C2-Q1"]["one_minus_jsd"] == pytest.approx(
        tuned["subsets"]["C2-Q1"]["one_minus_jsd"], abs=1e-6)


def test_simlab_cli_rebuilds_the_adapter_from_a_checkpoint(finetune_dir, tmp_path):
    """`simlab adapter-from-ckpt`: the best checkpoint's LoRA weights as a peft folder, equal to the run's adapter."""
    from safetensors.torch import load_file

    best = next((finetune_dir / "checkpoints").glob("best-*.ckpt"))
    result = subprocess.run([sys.executable, "-m", "simlab.cli", "adapter-from-ckpt", str(best), str(tmp_path / "a")],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rebuilt = load_file(tmp_path / "a" / "adapter_model.safetensors")
    saved = load_file(finetune_dir / "adapter" / "adapter_model.safetensors")
    assert set(rebuilt) == set(saved) and all((rebuilt[k] == saved[k]).all() for k in saved)
    unknown = subprocess.run([sys.executable, "-m", "simlab.cli", "nope"], cwd=REPO, capture_output=True, text=True)
    assert unknown.returncode == 2 and "adapter-from-ckpt" in unknown.stderr


def test_the_valid_subset_reuses_the_best_validation_and_equals_testing_it_again(finetune_dir, tiny_llama_dir,
                                                                                  shared_data, tmp_path):
    """The fine-tune takes C1-Q2's test scores from the best checkpoint's validation (simlab.training.reuse): the
    same numbers and predictions as testing it again (another process: equal to 1e-9, as two processes' tests)."""
    reused = json.loads((finetune_dir / "metrics.json").read_text())
    assert reused["reused_validation"]["subset"] == "C1-Q2" and reused["reused_validation"]["step"] > 0
    assert reused["reused_validation"]["checkpoint"] == reused["best_valid"]["checkpoint"]
    run_py(
        "model=hf", f"model.path={tiny_llama_dir}", "loss=kl", "experiment=smoke", "logger=csv",
        "data.limit_per_subset=8", "data.max_length=2048", f"data.root={shared_data}",
        f"hydra.run.dir={tmp_path}", "task.reuse_validation=false",
    )
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert "reused_validation" not in again
    assert list(again["subsets"]) == list(reused["subsets"]) == SUBSETS
    for subset in SUBSETS:
        assert again["subsets"][subset] == pytest.approx(reused["subsets"][subset], rel=1e-9, abs=1e-9), subset
    rows = [[json.loads(line) for line in (d / "predictions.jsonl").read_text().splitlines()]
            for d in (finetune_dir, tmp_path)]
    assert [(r["subset"], r["predicted"]) for r in rows[0]] == [
        (r["subset"], pytest.approx(r["predicted"], rel=1e-9, abs=1e-9)) for r in rows[1]]


def test_a_compiled_finetune_gives_the_eager_runs_results(finetune_dir, tiny_llama_dir, shared_data, tmp_path):
    """module.compile=true (here in CUDA-graph mode, which a CPU compiles as the default): the same run with compiled
    decoder layers (the same dropout draws: inductor's fallback_random) predicts what the eager run predicts, up to
    float rounding (6e-8 measured; inductor's own generator drew other masks and moved predictions by 1e-4)."""
    out = tmp_path / "compiled"
    result = run_py(
        "model=hf", f"model.path={tiny_llama_dir}", "loss=kl", "experiment=smoke", "logger=csv",
        "data.limit_per_subset=8", "data.max_length=2048", f"data.root={shared_data}", f"hydra.run.dir={out}",
        "module.compile=true", "module.compile_mode=reduce-overhead",  # CUDA graphs on a GPU; on a CPU the default
    )
    assert "compiling 2 decoder layers with torch.compile (dynamic shapes, mode reduce-overhead)" in (
        result.stdout + result.stderr)
    eager = [json.loads(line) for line in (finetune_dir / "predictions.jsonl").read_text().splitlines()]
    compiled = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(r["subset"], r["letters"]) for r in eager] == [(r["subset"], r["letters"]) for r in compiled]
    difference = max(abs(a - b) for e, c in zip(eager, compiled) for a, b in zip(e["predicted"], c["predicted"]))
    assert difference < 1e-6, difference  # other dropout draws moved them by 1e-4
