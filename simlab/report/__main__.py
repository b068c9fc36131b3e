"""python -m simlab.report RUN_OR_SWEEP_DIR [...] [--out DIR] [--subset C2-Q1] [--names ...] [--wandb]"""

from __future__ import annotations

import logging
from pathlib import Path

from simlab.common import commandline
from simlab.data.files import find_data_file
from simlab.paths import data_root
from simlab.report.build import write_report
from simlab.report.collect import collect_jobs


def main(argv: list[str] | None = None) -> None:
    parser = commandline.parser("report", description=__doc__)
    parser.add_argument("dirs", nargs="+", help="run folders, or sweep folders whose subfolders are runs")
    parser.add_argument("--out", help="report folder (default: <first dir>/report)")
    parser.add_argument("--subset", help="subset for the per-country, diversity and position-bias figures")
    parser.add_argument("--names", nargs="+", help="row labels, one per job found (default: the varying overrides)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--wandb", action="store_true",
                        help="also log the report (tables, figures) as one W&B run in the jobs' group (offline unless "
                             "--wandb-online); `wandb sync` uploads it")
    parser.add_argument("--wandb-online", action="store_true", help="with --wandb: log online (after `wandb login`)")
    parser.add_argument("--questionnaire", default=None,
                        help="questionnaire JSON with a 'dimension' per question (default: <data root>/wvs7/"
                             "questionnaire_en.json; 'none' to skip the breakdown)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    jobs = collect_jobs(args.dirs, args.names)
    questionnaire = args.questionnaire
    if questionnaire is None:
        try:
            questionnaire = find_data_file("wvs7/questionnaire_en.json", data_root())
        except FileNotFoundError:  # a data root without the questionnaire: the report has no dimension breakdown
            questionnaire = None
    elif questionnaire == "none":
        questionnaire = None
    out = Path(args.out) if args.out else Path(args.dirs[0]) / "report"
    path = write_report(jobs, out, subset=args.subset, questionnaire=questionnaire,
                        title=args.title or f"simlab report: {', '.join(args.dirs)}")
    if args.wandb:
        from simlab.report.wandb_logging import log_report

        log_report(out, jobs, offline=not args.wandb_online)
    print(path)


if __name__ == "__main__":
    main()
