"""The segment migration screen: move an experience from an older clustering run's segments to a
newer run's. Nothing changes until the marketer confirms (personalization.experiences.segment_migration)."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render

from personalization import hooks, selectors, services
from personalization.segment_keys import run_of_key
from personalization.workspace.web import workspace_view


def migration_notice(*, experience, latest_run_id: int | None) -> dict | None:
    """What the experience page and list say when a newer finished run exists: the runs in use,
    the newer run, and a sentence naming what uses the old run."""
    due = services.experience_migration_due(experience=experience, latest_run_id=latest_run_id)
    if due is None:
        return None
    use = services.experience_segment_use(experience=experience)
    targets = sorted(run for run in use.keys_by_run if run < due["target"])
    parts = []
    if targets:
        parts.append("Targets segments of " + ", ".join(f"run #{run}" for run in targets))
    if use.bandit_run is not None and use.bandit_run < due["target"]:
        parts.append(f"{'its' if parts else 'Its'} per-segment bandit learns on run #{use.bandit_run}")
    return {**due, "text": f"{' and '.join(parts)}; run #{due['target']} is newer."}


def _run_choice(raw: str, runs: list) -> tuple[object | None, str]:
    """The run to migrate to (default: the newest finished one) and an error naming the fix."""
    if not raw:
        return runs[0], ""
    if not raw.isdigit():
        return None, "run: give the number of a finished clustering run, e.g. 12"
    run = next((r for r in runs if r.pk == int(raw)), None)
    if run is not None:
        return run, ""
    return None, f"run: run #{raw} is not a finished clustering run of this project; pick one from the list"


def _rows(project_id: int, old_keys: list[str], run, posted) -> list[dict]:
    proposal = hooks.segments().segments_overlap(project_id=project_id, old_keys=old_keys, run_id=run.pk)
    old = hooks.segments().segments_by_keys(project_id=project_id, keys=old_keys)
    rows = []
    for key in old_keys:
        candidates = proposal.get(key, [])
        best = candidates[0]["key"] if candidates and candidates[0]["jaccard"] > 0 else ""
        choice = posted.get(f"map-{key}", best) if posted is not None else best
        for candidate in candidates:
            candidate["percent"] = 100 * candidate["jaccard"]
            candidate["old_percent"] = 100 * candidate["share_of_old"]
        chosen = next((c for c in candidates if c["key"] == choice), None)
        rows.append(
            {
                "key": key,
                "segment": old.get(key),
                "run": run_of_key(key),
                "candidates": candidates,
                "choice": choice,
                "chosen": chosen,
                "best": best,
            }
        )
    return rows


@workspace_view("experiences.edit")
def experience_migrate(request, key: str):
    project = request.workspace.project
    experience = selectors.experience_for_project(project=project, key=key)
    if experience is None:
        raise Http404(f"No experience “{key}” in this project.")
    runs = hooks.segments().runs_done(project_id=project.pk)
    if not runs:
        messages.error(request, "run: no finished clustering run to migrate to; run one on the Segments page.")
        return redirect("experience-detail", key=key)
    run, error = _run_choice((request.POST.get("run") or request.GET.get("run") or "").strip(), runs)
    if run is None:
        context = {"experience": experience, "runs": runs, "run": None, "error": error, "rows": []}
        return render(request, "personalization/experiences/migrate.html", context, status=400)
    use = services.experience_segment_use(experience=experience)
    old_keys = [k for run_id, keys in sorted(use.keys_by_run.items()) if run_id != run.pk for k in keys]
    bandit_from = use.bandit_run if use.bandit_run is not None and use.bandit_run != run.pk else None
    status = 200
    if request.method == "POST":
        mapping = {k: request.POST[f"map-{k}"].strip() for k in old_keys if f"map-{k}" in request.POST}
        version = request.POST.get("version", "")
        try:
            services.experience_segments_migrate(
                experience=experience,
                run_id=run.pk,
                mapping=mapping,
                move_bandit=request.POST.get("move_bandit") == "on",
                expected_version=int(version) if version.isdigit() else None,
                by=request.user,
            )
        except services.ExperienceError as exc:
            error, status = f"{exc.field}: {exc.message}", 400
        else:
            experience.refresh_from_db()
            messages.success(
                request, f"{experience.name} now uses run #{run.pk} (saved as version {experience.version})."
            )
            return redirect("experience-detail", key=key)
    context = {
        "experience": experience,
        "runs": runs,
        "run": run,
        "error": error,
        "rows": _rows(project.pk, old_keys, run, request.POST if request.method == "POST" else None),
        "bandit_from": bandit_from,
        "move_bandit": request.POST.get("move_bandit") == "on" if request.method == "POST" else True,
        "nothing": not old_keys and bandit_from is None,
    }
    return render(request, "personalization/experiences/migrate.html", context, status=status)
