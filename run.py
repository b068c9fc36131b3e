"""simlab's Hydra entry point: compose the config (conf/), then run the task it names (conf/task/*.yaml: task.run)
through one wrapper that claims the run folder and records the run's fate in status.json (simlab.tasks).
An installed simlab runs the same main with the same configs as ``simlab run <overrides>`` (simlab.tasks.entry).

    python run.py                              # fine-tune the embedded model with LoRA, test every subset
    python run.py task=zeroshot                # evaluate the bare model
    python run.py task=baseline baseline=knn   # a baseline: uniform | avg_culture | knn | json_zs
    python run.py model=hf model.path=DIR loss=js
    python run.py -m loss=kl,js,ce,wasserstein # a Hydra multirun sweep (outputs under multirun/)
    python run.py <same overrides> resume=<run dir>   # continue an interrupted fine-tune exactly
"""

from __future__ import annotations

from simlab.tasks.entry import main

if __name__ == "__main__":
    main()
