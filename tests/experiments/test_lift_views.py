import pytest

from experiments.models import LiftReport, ReportStatus
from experiments.tasks import lift_report_task
from tests import factories
from tests.experiments.test_lift_report import _population, hero_report_done


@pytest.mark.django_db
def test_lift_page__no_report__explains_and_offers_compute(client, marketer):
    response = client.get("/lift/")
    assert response.status_code == 200
    assert b"No report with these settings yet" in response.content


@pytest.mark.django_db
def test_lift_page__done_report__shows_charts_table_and_csv(client, project, marketer):
    _population(project, n=3000)
    report = hero_report_done(project)
    assert report.status == ReportStatus.DONE and report.progress == 100
    LiftReport.objects.filter(pk=report.pk).update(span="days:14")  # the page looks up the range it is asked for
    response = client.get("/lift/?experience=hero&segment_by=attribute:intent&days=14")
    body = response.content.decode()
    assert 'id="waterfall"' in body and 'id="forest"' in body and "Download CSV" in body
    assert "runners" in body and "bargain" in body
    csv_response = client.get(f"/lift/reports/{report.pk}.csv")
    lines = csv_response.content.decode().strip().splitlines()
    assert lines[0].startswith("segment,users_treatment") and len(lines) == 4  # header, 2 segments, all users


@pytest.mark.django_db
def test_lift_page__registered_split__both_sample_ratio_checks_side_by_side(client, project, marketer):
    factories.external_experience_make(project=project, key="hero", variants=("a", "b"), holdout_share=0.2)
    _population(project, n=1000)  # about 20 % held out, as registered
    report = hero_report_done(project)
    LiftReport.objects.filter(pk=report.pk).update(span="days:14")
    body = client.get("/lift/?experience=hero&segment_by=attribute:intent&days=14").content.decode()
    assert "Sample ratio OK" in body
    assert 'id="lift-srm-sequential" class="badge good"' in body and "Daily check (always valid)" in body
    assert "Trust it over the one-off chi-square check" in body


@pytest.mark.django_db
def test_lift_report__other_projects_report__404(client, marketer, other_project):
    report = LiftReport.objects.create(project=other_project, start="2020-01-01T00:00Z", end="2030-01-01T00:00Z")
    assert client.get(f"/lift/reports/{report.pk}/progress").status_code == 404


@pytest.mark.django_db
def test_lift_api__secret_key__queues_then_polls_the_pages_report(client, project, secret_key, marketer):
    _population(project, n=3000)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret_key}"}
    url = "/api/v1/lift/?experience=hero&segment_by=attribute:intent&days=30"
    queued = client.get(url, **auth)
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    poll = queued.json()["poll"]
    assert client.get(url, **auth).json()["id"] == queued.json()["id"]  # asked again: the same report, not a second
    lift_report_task(queued.json()["id"])  # what the worker runs
    done = client.get(poll, **auth)
    assert done.status_code == 200 and done.json()["status"] == "done"
    names = {s["name"] for s in done.json()["result"]["report"]["segments"]}
    assert names == {"runners", "bargain"}
    # the Lift page shows that very report: one computation path for both
    page = client.get("/lift/?experience=hero&segment_by=attribute:intent&days=30").content.decode()
    assert f"/lift/reports/{queued.json()['id']}.csv" in page


@pytest.mark.django_db
def test_lift_api__bad_segment_by__400_naming_the_field(client, project, secret_key):
    response = client.get("/api/v1/lift/?segment_by=intent", HTTP_AUTHORIZATION=f"Bearer {secret_key}")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "segment_by"


@pytest.mark.django_db
def test_lift_api__public_key__rejected(client, project, public_key):
    response = client.get("/api/v1/lift/", HTTP_AUTHORIZATION=f"Bearer {public_key}")
    assert response.status_code in (401, 403)


@pytest.mark.django_db
def test_lift_page__dates__report_over_those_days_found_and_labelled(client, project, marketer):
    _population(project, n=600)
    form = {"experience": "hero", "segment_by": "attribute:intent", "start": "2011-03-01", "end": "2011-04-30"}
    assert client.post("/lift/compute", form).status_code == 302
    report = LiftReport.objects.get(project=project)
    assert report.span == "dates:2011-03-01..2011-04-30" and report.range_label == "2011-03-01 to 2011-04-30"
    lift_report_task(report.pk)
    query = "&".join(f"{name}={value}" for name, value in form.items())
    body = client.get(f"/lift/?{query}").content.decode()
    assert "Nothing to compare yet" in body and "hero&#x27;s exposures run from" in body  # the rows are recent

    bad = client.post("/lift/compute", {**form, "end": "2011-02-30"}, follow=True).content.decode()
    assert "end: must be a date as YYYY-MM-DD" in bad
    assert LiftReport.objects.filter(project=project).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("days=30&start=2011-03-01&end=2011-04-30", "days"),
        ("start=2011-03-01", "end"),
        ("start=2011-3-1&end=x", "start"),
        ("start=2011-05-01&end=2011-04-30", "start"),
        ("days=0", "days"),
        ("fresh=maybe", "fresh"),
    ],
)
def test_lift_api__bad_range__400_naming_the_field(client, project, secret_key, query, field):
    response = client.get(f"/api/v1/lift/?experience=hero&{query}", HTTP_AUTHORIZATION=f"Bearer {secret_key}")
    assert response.status_code == 400 and response.json()["error"]["field"] == field, response.content
