"""Hooks: where personalization lets a higher app act without importing it.

Personalization is the lowest app (pure modules ← personalization ← segments, experiments ← privacy
← demo). When its write, decide or page code needs something only a higher app knows, it asks a
provider here, and the higher app fills the slot in its `AppConfig.ready()`:

- `suppression` (privacy): which of a batch's ids belong to erased people; the drain drops their events.
- `decide_privacy` (privacy): the consent, GPC and "anyone erased" settings decide's snapshot carries.
- `segment_catalog` (segments): the saved segments and clustering runs experiences target and migrate.
- `lift_headline` (experiments): the first sentence of the newest global-holdout lift report (Overview).
- `person_why` (segments): why a visitor is in each segment, intent and score band (the visitor page's Why panel).
- `metric_definitions` (experiments): a project's metrics with their slots in the exposures' kept metric
  values (personalization/experiences/metric_values.py; the drain keeps them up to date).

Signals (personalization/signals.py) are for "this happened, whoever cares"; a provider here is for
"personalization needs an answer", so each slot takes exactly one provider and says in `when_missing`
what happens without one. A slot marked `required` is a configuration error at startup (a Django
system check, run by `manage.py check`, `migrate` and the servers) and raises where it is used, so the
code that needs it stops instead of going on as if the answer were "nothing".

The registry of personal data locations (personalization/people/personal_data.py) is the other
registry higher apps fill: each app lists its own tables and Redis keys there.
"""

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")


class HookMissing(ImproperlyConfigured):
    """A required provider was never registered (its app is not installed or its ready() did not run)."""


class Provider(Generic[T]):
    """One slot that one higher app fills in its AppConfig.ready()."""

    def __init__(self, name: str, *, owner: str, required: bool, when_missing: str) -> None:
        self.name, self.owner, self.required, self.when_missing = name, owner, required, when_missing
        self._provider: T | None = None

    def provide(self, provider: T) -> None:
        # A second, different provider would silently replace the first: say so instead.
        if self._provider is not None and self._provider is not provider:
            raise ImproperlyConfigured(f"hook {self.name!r} already has a provider: {self._provider!r}")
        self._provider = provider

    def get(self) -> T | None:
        """The provider, or None when no app registered one (the caller does what `when_missing` says)."""
        return self._provider

    def require(self) -> T:
        """The provider; HookMissing when none was registered."""
        if self._provider is None:
            raise HookMissing(f"no provider for hook {self.name!r} ({self.owner} registers it): {self.when_missing}")
        return self._provider


class SegmentCatalog(Protocol):
    """What experiences (validation, the picker, migration between clustering runs) read of segments.
    Runs and segments come back as the segments app's objects; personalization reads their public
    attributes only (pk, key, name, kind, status, k, index, size, run)."""

    def segment_keys_untargetable(self, *, project_id: int, keys: list[str]) -> list[str]: ...
    def intent_keys_unknown(self, *, project_id: int, keys: list[str]) -> list[str]: ...
    def segment_names(self, *, project_id: int) -> dict[str, str]: ...
    def segment_traits(self, *, project_id: int, keys: list[str]) -> dict[str, str]: ...
    def segment_picker_groups(self, *, project_id: int) -> list[dict]: ...
    def segments_by_keys(self, *, project_id: int, keys: list[str]) -> dict[str, Any]: ...
    def segments_overlap(self, *, project_id: int, old_keys: list[str], run_id: int) -> dict[str, list[dict]]: ...
    def run_for_project(self, *, project_id: int, run_id: int) -> Any | None: ...
    def run_latest_done(self, *, project_id: int) -> Any | None: ...
    def run_segments(self, *, run: Any) -> list[Any]: ...
    def runs_done(self, *, project_id: int) -> list[Any]: ...


suppression: Provider[Callable[..., set[str]]] = Provider(
    "suppression",
    owner="privacy",
    required=True,
    when_missing="the drain refuses to store events (they stay in the stream, unacknowledged) rather than"
    " store erased people's events again",
)
decide_privacy: Provider[Callable[..., dict]] = Provider(
    "decide_privacy",
    owner="privacy",
    required=True,
    when_missing="the snapshot compile fails, so decide keeps serving the snapshot it has (or defaults)",
)
segment_catalog: Provider[SegmentCatalog] = Provider(
    "segment_catalog",
    owner="segments",
    required=False,
    when_missing="no segments exist: the picker is empty, every segment key is refused, no run is found",
)
lift_headline: Provider[Callable[..., str]] = Provider(
    "lift_headline",
    owner="experiments",
    required=False,
    when_missing="the Overview shows no lift sentence",
)

person_why: Provider[Callable[..., dict]] = Provider(
    "person_why",
    owner="segments",
    required=False,
    when_missing="the visitor page shows no Why panel",
)

metric_definitions: Provider[Callable[..., list[dict]]] = Provider(
    "metric_definitions",
    owner="experiments",
    required=False,
    when_missing="no metric values are kept on exposures; lift reports compute every metric from the events",
)

HOOKS = (suppression, decide_privacy, segment_catalog, lift_headline, person_why, metric_definitions)


def suppressed_among(*, project_id: int, identifiers: set[str]) -> set[str]:
    """Those of `identifiers` that belong to an erased subject. Raises HookMissing without privacy."""
    return suppression.require()(project_id=project_id, identifiers=identifiers)


def decide_privacy_settings(*, project_id: int) -> dict:
    """The privacy section of decide's snapshot. Raises HookMissing without privacy."""
    return decide_privacy.require()(project_id=project_id)


class _NoSegments:
    """The catalog without the segments app: nothing to target, pick or migrate to."""

    def segment_keys_untargetable(self, *, project_id: int, keys: list[str]) -> list[str]:
        return list(keys)

    def intent_keys_unknown(self, *, project_id: int, keys: list[str]) -> list[str]:
        return list(keys)

    def segment_names(self, *, project_id: int) -> dict[str, str]:
        return {}

    def segment_traits(self, *, project_id: int, keys: list[str]) -> dict[str, str]:
        return {}

    def segment_picker_groups(self, *, project_id: int) -> list[dict]:
        return []

    def segments_by_keys(self, *, project_id: int, keys: list[str]) -> dict[str, Any]:
        return {}

    def segments_overlap(self, *, project_id: int, old_keys: list[str], run_id: int) -> dict[str, list[dict]]:
        return {key: [] for key in old_keys}

    def run_for_project(self, *, project_id: int, run_id: int) -> None:
        return None

    def run_latest_done(self, *, project_id: int) -> None:
        return None

    def run_segments(self, *, run: Any) -> list[Any]:
        return []

    def runs_done(self, *, project_id: int) -> list[Any]:
        return []


def segments() -> SegmentCatalog:
    """The segment catalog segments registered, or an empty one (see `segment_catalog.when_missing`)."""
    return segment_catalog.get() or _NoSegments()


@checks.register()
def hooks_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Startup: a required hook without a provider is an error, not a surprise in the drain."""
    return [
        checks.Error(
            f"hook {hook.name!r} has no provider; without it {hook.when_missing}",
            hint=f"install the {hook.owner} app (INSTALLED_APPS) so its AppConfig.ready() registers it",
            id="personalization.E001",
        )
        for hook in HOOKS
        if hook.required and hook.get() is None
    ]
