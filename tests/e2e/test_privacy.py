"""Privacy in a real browser: a compliance user files an erasure request and sees it complete with its
certificate, the job run by a real Celery worker on the test database and Redis."""

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import Page, expect

from personalization.models import Profile
from tests import factories
from tests.personalization.test_decide import drain_all
from tests.personalization.test_drain_crash import ROOT, drain_env, process_kill

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def celery_worker(tmp_path):
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "--pool", "solo", "-l", "info"],
            cwd=ROOT,
            env=drain_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    yield worker
    process_kill(worker)


def test_privacy__compliance_files_erasure__sees_it_complete_with_certificate(
    page: Page, browser_log, log_in, screenshot, client, celery_worker
):
    owner = factories.user_make()
    project = factories.project_make(owner=owner)
    compliance = factories.member_make(project=project, role="compliance")
    key = factories.key_make(project=project, kind="public")
    events = [factories.event_make(i, event_id=f"z-{i}", anonymous_id="anon-zoe") for i in range(5)]
    events.append(factories.event_make(9, event_id="z-id", type="identify", anonymous_id="anon-zoe", user_id="zoe"))
    assert factories.events_post(client, key, events).status_code == 200
    drain_all()
    assert Profile.objects.filter(project=project, external_id="zoe").exists()

    log_in(compliance.username)
    page.get_by_role("navigation").get_by_role("link", name="Privacy").click()
    expect(page.get_by_role("heading", name="No open requests")).to_be_visible()
    screenshot("privacy_empty")
    page.locator("#kind").select_option("erasure")
    page.locator("#user_id").fill("zoe")
    page.locator("#verification").fill("request came from the account's email address")
    page.get_by_role("button", name="Record request").click()

    expect(page.locator("#status")).to_have_text("Verified")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Erase now").click()
    expect(page.locator("#certificate")).to_contain_text("Verified: nothing left", timeout=60_000)
    expect(page.locator("#status")).to_have_text("Completed")
    expect(page.locator("#certificate tbody tr:has(td:text-is('events'))")).to_contain_text("6")
    expect(page.locator("#timeline")).to_contain_text("erased")
    expect(page.get_by_text("zoe", exact=True)).to_have_count(0)
    screenshot("privacy_certificate")
    assert not Profile.objects.filter(project=project, external_id="zoe").exists()

    with page.expect_download() as download:
        page.get_by_role("link", name="Download as JSON").click()
    certificate = orjson.loads(Path(download.value.path()).read_bytes())
    assert certificate["complete"] is True and "zoe" not in orjson.dumps(certificate).decode()

    page.get_by_role("link", name="Privacy requests").click()
    page.wait_for_load_state("load")  # htmx must be listening before the filter changes
    page.locator("#status-filter").select_option("all")
    expect(page.locator("#requests")).to_contain_text("Completed")
    screenshot("privacy_queue")
    page.get_by_role("link", name="Processing record & settings").click()
    expect(page.locator("#record")).to_contain_text("Record of processing activities")
    screenshot("privacy_record")

    assert browser_log.external_requests == []
    assert browser_log.console_errors == []
