"""Run a data subject request's job now, in this process (what the Celery task does).

    python manage.py privacy_run <request id> [--chunk ROWS]

For an operator: re-run an erasure that a crash interrupted, or run one on a machine without a
worker. --chunk sets how many rows each erasure transaction deletes (smaller: shorter locks).
"""

from django.core.management.base import BaseCommand, CommandError

from personalization.people import personal_data
from privacy import services
from privacy.models import DataSubjectRequest


class Command(BaseCommand):
    help = "Run a data subject request's job (export, erasure, objection, restriction) now."
    # No system checks at start (as events_drain): they import every view, half the command's start-up.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("request_id", type=int)
        parser.add_argument("--chunk", type=int, default=personal_data.ERASE_CHUNK, help="rows per erasure transaction")

    def handle(self, *args, request_id: int, chunk: int, **options):
        if not DataSubjectRequest.objects.filter(pk=request_id).exists():
            raise CommandError(f"request_id: no request {request_id}; see the Privacy page for references")
        if chunk < 1:
            raise CommandError("--chunk: give a positive number of rows")
        personal_data.ERASE_CHUNK = chunk
        self.stdout.write(services.dsr_run(request_id=request_id))
