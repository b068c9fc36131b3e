"""hparams_search=recipe_optuna: an Optuna study over the recipe whose objective is the fine-tune's best valid
1-JSD (run.py returns it), stored in SQLite under the sweep folder so a second run resumes the study."""

import sqlite3
import subprocess
import sys

import yaml
from conftest import REPO


def search(sweep_dir, tiny_llama_dir, shared_data, trials):
    result = subprocess.run(
        [sys.executable, "run.py", "-m", "hparams_search=recipe_optuna", "model=hf", f"model.path={tiny_llama_dir}",
         "data.limit_per_subset=8", "data.max_length=2048", "trainer.limit_train_batches=2", f"data.root={shared_data}",
         f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.n_trials={trials}",
         "hydra.sweeper.sampler.n_startup_trials=2"],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def trials(sweep_dir):
    with sqlite3.connect(sweep_dir / "optuna.db") as db:
        return db.execute("select t.number, t.state, v.value from trials t join trial_values v "
                          "on v.trial_id = t.trial_id order by t.number").fetchall()


def test_the_study_optimises_valid_1_jsd_and_resumes(tmp_path, tiny_llama_dir, shared_data):
    import json

    sweep = tmp_path / "search"
    search(sweep, tiny_llama_dir, shared_data, trials=2)
    done = trials(sweep)
    assert [t[0] for t in done] == [0, 1] and all(t[1] == "COMPLETE" for t in done)
    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 2
    objectives = []
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert list(metrics["subsets"]) == ["C1-Q2"]  # no test subset is run during a search
        objectives.append(metrics["best_valid"]["value"])
    assert sorted(objectives) == sorted(t[2] for t in done)  # the study's values are the runs' best valid 1-JSD
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(objectives) and "module.optimizer.lr" in best["best_params"]
    search(sweep, tiny_llama_dir, shared_data, trials=1)  # the same sweep folder: the study goes on
    assert [t[0] for t in trials(sweep)] == [0, 1, 2]
    assert len([p for p in sweep.iterdir() if (p / "metrics.json").is_file()]) == 3
