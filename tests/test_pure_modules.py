"""The house rule: computation lives in modules that import no Django, so it is fast to test and to reuse."""

import subprocess
import sys

import pytest

PURE = [
    "demo.world",
    "experiments.stats",
    "experiments.stats_types",
    "experiments.sentences",
    "experiments.decomposition",
    "experiments.metrics_stats",
    "experiments.metric_report",
    "experiments.retention",
    "experiments.sequential",
    "experiments.simulation",
    "experiments.survival",
    "personalization.decide.engine",
    "personalization.decide.live",  # the server SDK runs it too (sdk/python)
    "personalization.decide.ofrep",
    "personalization.decide.batch_csv",
    "personalization.experiences.limits",
    "personalization.decide.hashing",
    "personalization.experiences.thompson",
    "personalization.ingest.schema",
    "personalization.decide.redis_wire",
    "personalization.ingest.schema",
    "personalization.segment_keys",
    "personalization.score_fields",
    "personalization.intent_fields",
    "personalization.experiences.conditions",
    "personalization.decide.context",
    "personalization.people.journey",
    "personalization.people.live_session",
    "personalization.rkeys",
    "personalization.throttle",
    "segments.embedding",
    "segments.kmeans",
    "segments.scoring",
    "segments.scoring_eval",
    "segments.meaning",
    "segments.explain",
    "personalization.decide.explain",
    "segments.text_encoder",
    "segments.intents",
    "segments.meaning",
    "segments.sensitive",
]


@pytest.mark.parametrize("module", PURE)
def test_pure_module__imported_alone__loads_no_django(module):
    # A fresh interpreter: this test process has Django loaded already.
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{module} pulls in Django: {out.stdout}"
