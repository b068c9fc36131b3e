"""simlab from Python (a notebook, a script): :func:`evaluate` runs ``task=zeroshot`` on the packaged configs and
returns its metrics (like lm-evaluation-harness's ``simple_evaluate``); :func:`load_survey` gives the survey rows
as a table. Both compose the same configs as ``python run.py`` / ``simlab run``, so a number from here means what
the same run's number means.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from simlab.tasks.entry import CONFIG_NAME, VERSION_BASE, config_dir, register_resolvers

SAFE_VALUE = re.compile(r"^[\w./:@+~-]+$")  # an override value Hydra reads as written, unquoted


def override_value(value: Any) -> str:
    """A Python value in Hydra's override syntax (None -> null, a list -> [a,b], odd strings quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    text = str(value)
    if SAFE_VALUE.match(text) and text not in ("null", "true", "false"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def option_overrides(options: Mapping[str, Any]) -> list[str]:
    """Keyword options as overrides: a double underscore stands for a dot (``data__limit_per_subset=8``)."""
    return [f"{key.replace('__', '.')}={override_value(value)}" for key, value in options.items()]


@contextlib.contextmanager
def composed(overrides: Sequence[str], output_dir: str | Path | None = None) -> Iterator[DictConfig]:
    """The packaged config composed with ``overrides`` as a job sees it (Hydra's own node set aside and Hydra's
    job facts in place, as under ``@hydra.main``); any Hydra state from before is restored afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    register_resolvers()
    outer_hydra, outer_job = get_gh_backup(), HydraConfig.instance().cfg
    GlobalHydra.instance().clear()
    out = [f"paths.output_dir={override_value(str(output_dir))}"] if output_dir is not None else []
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=VERSION_BASE, job_name="run"):
            cfg = compose(CONFIG_NAME, overrides=[*overrides, *out], return_hydra_config=output_dir is not None)
        if output_dir is not None:
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]
        yield cfg
    finally:
        HydraConfig.instance().cfg = outer_job
        restore_gh_from_backup(outer_hydra)


def model_overrides(model: str | Path) -> list[str]:
    """A config name (``smollm2_135m``, ``llama3_instruct``, ``hf``...) or a local Hugging Face model folder."""
    name = str(model)
    if Path(name).expanduser().is_dir():
        return ["model=hf", f"model.path={override_value(str(Path(name).expanduser().resolve()))}"]
    if not (config_dir() / "model" / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml") if not p.stem.startswith("_"))
        raise ValueError(f"model={name!r} is neither a local model folder nor a model config; configs: {known}")
    return [f"model={name}"]


def evaluate(
    model: str | Path = "smollm2_135m",
    adapter: str | Path | None = None,
    subsets: str | Sequence[str] | None = None,
    *,
    data: str = "wvs_en",
    root: str | Path | None = None,
    limit: int | None = None,
    logger: str = "none",
    output_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    **options: Any,
) -> dict:
    """Evaluate a model (and a LoRA adapter) on test subsets: ``task=zeroshot`` run as ``simlab run`` runs it;
    returns the run's metrics (what metrics.json holds: per subset, the paper average, the settings).

    Args:
        model: a model config (conf/model: ``smollm2_135m``, ``llama3_instruct``...) or a local HF model folder.
        adapter: a saved LoRA adapter folder (``<run dir>/adapter``) or ``wandb:NAME[:ALIAS]``; None: the bare model.
        subsets: test subsets (``"C2-Q1"`` or a list); None: the data config's test subsets.
        data: the data config (``wvs_en``, ``pew``, ``wvs_zh``); root: the data folder (``data.root``).
        limit: a seeded sample of this many rows per subset (``data.limit_per_subset``); None: every row.
        logger: ``none``, ``csv`` or ``wandb`` (offline); output_dir: the run folder (a new folder is made);
            None: a temporary folder, removed once the metrics are read.
        overrides: more Hydra overrides (``["data.eval_batch_size=16"]``); options: the same as keywords, a double
            underscore for each dot (``trainer__accelerator="gpu"``).
    """
    chosen = [*model_overrides(model), "task=zeroshot", f"data={data}", f"logger={logger}"]
    if adapter is not None:
        chosen.append(f"model.adapter={override_value(str(adapter))}")
    if subsets is not None:
        chosen.append(f"data.test_subsets={override_value([subsets] if isinstance(subsets, str) else list(subsets))}")
    if root is not None:
        chosen.append(f"data.root={override_value(str(root))}")
    if limit is not None:
        chosen.append(f"data.limit_per_subset={int(limit)}")
    chosen += [*overrides, *option_overrides(options)]
    with contextlib.ExitStack() as stack:
        out = output_dir
        if out is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="simlab-evaluate-"))) / "run"
        from simlab.tasks.wrapper import run_task

        with composed(chosen, output_dir=Path(out).expanduser().resolve()) as cfg:
            return run_task(cfg)


def load_survey(
    split: str | Sequence[str] | None = None,
    *,
    data: str = "wvs_en",
    root: str | Path | None = None,
    format: str = "long",  # noqa: A002 - the word users look for
    to: str = "pandas",
):
    """The survey rows of a data config as a table, read and checked as a run reads them.

    Args:
        split: a subset (``"C1-Q2"``, ``"pew_c1"``) or a list; None: every subset in the data config's files.
        data: the data config (``wvs_en``, ``pew``, ``wvs_zh``); root: the data folder (default: as a run finds it).
        format: ``long``: one row per country x question x option (survey, subset, country, question_id,
            question, letter, option, share, n); ``wide``: one row per (country, question) with ``options`` and
            ``shares`` as mappings letter -> label / share. Shares sum to 1 within each (country, question).
            Subgroup rows (``data="wvs_populations"``) add a column per attribute (``sex``, ``age``) and ``n_eff``.
        to: ``pandas`` (a DataFrame) or ``datasets`` (a Hugging Face ``datasets.Dataset``: pip install
            "simlab[datasets]").
    """
    from hydra.utils import instantiate

    from simlab.data.frames import rows_table

    overrides = [f"data={data}", "data.invalid_rows_file=null"]
    if root is not None:
        overrides.append(f"data.root={override_value(str(root))}")
    with composed(overrides) as cfg:
        subset_names = dict(cfg.data.subset_names)
        every = list(dict.fromkeys(subset_names.values()))
        wanted = every if split is None else ([split] if isinstance(split, str) else list(split))
        unknown = [s for s in wanted if s not in every]
        if unknown:
            raise ValueError(f"split {unknown} is not a subset of data={data}; its subsets: {every}")
        datamodule = instantiate(cfg.data, tokenizer=None, train_subset=None, valid_subset=None,
                                 test_subsets=wanted, prior_subset=None, limit_per_subset=None,
                                 limit_eval_per_subset=None, shuffle_options=False, country_control=False,
                                 attribute_control=False)
    datamodule.load_rows()
    rows = [row for subset in wanted for row in datamodule.rows[subset]]
    return rows_table(rows, format=format, to=to)
