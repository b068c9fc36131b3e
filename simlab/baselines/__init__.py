"""Simple baselines of the paper (Cao et al., NAACL 2025, Table 2): Uniform, Avg_Culture, KNN and JSON-ZS, plus the
survey prior alone; for subgroups of countries (populations), the same at population level for a new country, and
for the breakdown use (the country's overall shares known) the country's shares and the subgroup shift.
One module per baseline; each implements :class:`simlab.baselines.base.Baseline`:

* ``fit(train_rows) -> self``: learn from the training rows (a no-op where nothing is learnt),
* ``predict(rows) -> list[list[float]]``: one distribution per row, in the row's option order, summing to 1,
* ``report() -> dict``: counts worth recording (fallbacks, unparsed outputs), totals over every ``predict``
  call so far plus a breakdown by subset.

Predictions are scored with :func:`simlab.metrics.scoring.score_subset`.
"""

from simlab.baselines.avg_culture import AvgCultureBaseline
from simlab.baselines.base import Baseline, Distribution, NeedsLanguageModel
from simlab.baselines.country_shares import CountrySharesBaseline
from simlab.baselines.embedding import PACKAGED_EMBEDDING_MODELS, load_sentence_embedder, sentence_embedding_model_path
from simlab.baselines.json_parse import parse_json_distribution
from simlab.baselines.json_zs import JSON_INSTRUCTION, JsonZeroShotBaseline
from simlab.baselines.knn import KNNBaseline, knn_text
from simlab.baselines.subgroup_shift import SubgroupShiftBaseline
from simlab.baselines.survey_prior import SurveyPriorBaseline
from simlab.baselines.uniform import UniformBaseline

__all__ = [
    "JSON_INSTRUCTION",
    "PACKAGED_EMBEDDING_MODELS",
    "AvgCultureBaseline",
    "Baseline",
    "CountrySharesBaseline",
    "Distribution",
    "JsonZeroShotBaseline",
    "KNNBaseline",
    "NeedsLanguageModel",
    "SubgroupShiftBaseline",
    "SurveyPriorBaseline",
    "UniformBaseline",
    "knn_text",
    "load_sentence_embedder",
    "parse_json_distribution",
    "sentence_embedding_model_path",
]
