"""Reports over finished runs and sweeps: the paper's tables (markdown, CSV, LaTeX), figures and breakdowns.

    python -m simlab.report multirun/table7/<time> [more run or sweep dirs] [--out DIR]
"""

from simlab.report.collect import Job, collect_jobs
from simlab.report.tables import metric_table

__all__ = ["Job", "collect_jobs", "metric_table"]
