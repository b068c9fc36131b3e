"""The tasks ``python run.py task=<name>`` runs: one function per task, ``task(cfg) -> dict``.

    finetune.finetune   task=finetune   LoRA fine-tune, then test every subset with the best adapter
    evaluate.evaluate   task=zeroshot   test the bare model (or model.adapter) on every test subset
    baseline.baseline   task=baseline   fit a baseline on the train subset, predict every test subset
    simulate.simulate   task=simulate   simulate new questions per country (simlab.simulate)

``conf/task/<name>.yaml`` names its function under ``task.run`` (``_target_`` with ``_partial_: true``); run.py
instantiates it and calls it through :func:`simlab.tasks.wrapper.task_wrapper`, which claims the run folder,
writes the resolved config, seeds, and records the run's fate in status.json. A new task is a module here and a
yaml in conf/task/, with no change to run.py. The pieces tasks share: :mod:`.common` (data, model, prior,
loggers), :mod:`.lm` (the language model's fit and test), :mod:`.outputs` (calibration and the run's outputs).
"""

from simlab.tasks.wrapper import objective, run_task, task_wrapper

__all__ = ["objective", "run_task", "task_wrapper"]
