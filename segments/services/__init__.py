"""Every write of the segments app. Import from here: `from segments import services`."""

from segments.services.clustering import (
    SegmentsError,
    clustering_run_delete,
    clustering_run_execute,
    clustering_run_request,
    clustering_runs_resume,
    segment_rename,
)
from segments.services.embeddings import embeddings_fold_in, embeddings_refit
from segments.services.intents import (
    intent_create,
    intent_delete,
    intent_preview,
    intent_update,
    intents_delete,
    intents_rescore,
    intents_rescore_all,
    intents_score,
)
from segments.services.lookalike_builds import lookalike_build_execute, lookalike_build_request
from segments.services.lookalikes import (
    lookalike_build,
    lookalike_preview,
    seed_from_converters,
    seed_from_ids,
    seed_from_intent,
    seed_from_segment,
)
from segments.services.memberships import memberships_publish, memberships_publish_resume, profiling_data_delete
from segments.services.rules import rule_segment_refresh, rule_segment_save, rule_segments_refresh_all
from segments.services.scores import (
    score_models_in_use,
    score_run_execute,
    score_run_request,
    score_runs_scheduled,
    scores_delete,
)

__all__ = [
    "SegmentsError",
    "clustering_run_delete",
    "clustering_run_execute",
    "clustering_run_request",
    "clustering_runs_resume",
    "embeddings_fold_in",
    "embeddings_refit",
    "intent_create",
    "intent_delete",
    "intent_preview",
    "intent_update",
    "intents_delete",
    "intents_rescore",
    "intents_rescore_all",
    "intents_score",
    "lookalike_build",
    "lookalike_build_execute",
    "lookalike_build_request",
    "lookalike_preview",
    "memberships_publish",
    "memberships_publish_resume",
    "profiling_data_delete",
    "rule_segment_refresh",
    "rule_segment_save",
    "rule_segments_refresh_all",
    "score_models_in_use",
    "score_run_execute",
    "score_run_request",
    "score_runs_scheduled",
    "scores_delete",
    "seed_from_converters",
    "seed_from_ids",
    "seed_from_intent",
    "seed_from_segment",
    "segment_rename",
]
