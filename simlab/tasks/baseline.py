"""task=baseline: a baseline (baseline=uniform|avg_culture|knn|json_zs|survey_prior; for the breakdown use of
populations country_shares|subgroup_shift) fitted on the train subset,
scored on every test subset with the same metrics and outputs as a model."""

from __future__ import annotations

import time

from omegaconf import DictConfig

from simlab.runs.rundir import RunDir
from simlab.tasks.common import build_loggers, closing_wandb, code_state, job_choice, load_data, log_metrics
from simlab.tasks.outputs import write_outputs


def baseline(cfg: DictConfig) -> dict:
    started, code = time.time(), code_state()
    run = RunDir(cfg.paths.output_dir)
    loggers = build_loggers(cfg)
    with closing_wandb():
        datamodule, test_results, predictions, info = fit_baseline(cfg)
        log_metrics(loggers, {f"test/{s}/{m}": v for s, vs in test_results.items() for m, v in vs.items() if m != "n"})
        return write_outputs(cfg, run, datamodule, test_results, predictions, info, loggers=loggers,
                             started=started, code=code)


def fit_baseline(cfg: DictConfig) -> tuple:
    """Fit the baseline on the train subset and predict every test subset; (datamodule, scores, predictions, info)."""
    from hydra.utils import instantiate

    from simlab.metrics.scoring import score_subsets

    if not cfg.get("baseline"):
        raise ValueError("task=baseline needs baseline=<uniform|avg_culture|knn|json_zs|survey_prior|country_shares|"
                         "subgroup_shift>")
    model = instantiate(cfg.baseline, _convert_="all")
    datamodule = load_data(cfg)
    if hasattr(model, "set_language_model"):
        lm = instantiate(cfg.model.loader)
        model.set_language_model(lm)
        datamodule.set_tokenizer(lm.tokenizer)
    datamodule.setup()
    train = datamodule.rows.get(datamodule.train_subset, []) if datamodule.train_subset else []
    if hasattr(model, "prior"):  # the survey prior also embeds the test countries
        model.fit(train, countries=sorted({r.country for rows in datamodule.rows.values() for r in rows}))
    else:
        model.fit(train)
    predictions = {s: model.predict(datamodule.rows[s]) for s in datamodule.test_subsets}
    info = {"baseline": job_choice("baseline"), "baseline_report": model.report()}
    if hasattr(model, "set_language_model"):
        info.update(model=cfg.model.name, model_source=lm.source)
    return datamodule, score_subsets(datamodule.rows, predictions), predictions, info
