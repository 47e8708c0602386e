"""Run the event drain in the foreground: `manage.py events_drain [--once]`.

The Celery beat task does this in production; this command is for operations and the crash tests.
"""

import time

from django.core.management.base import BaseCommand

from personalization import services

_ROUND_SECONDS = 3.0


class Command(BaseCommand):
    help = "Move accepted events from the Redis stream into PostgreSQL."
    # No system checks at start: they import every view (scipy.stats, plotly: 1.2 of 2.6 CPU-s) for a loop that
    # serves no URL; `migrate` runs them once per deployment, `manage.py check` on demand.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="stop when the stream is empty")
        parser.add_argument("--entries", type=int, default=None, help="stream entries per step")
        parser.add_argument("--claim-idle-ms", type=int, default=None, help="claim entries idle this long")

    def handle(self, *args, once: bool, entries: int | None, claim_idle_ms: int | None, **options):
        total = 0
        while True:
            # In rounds, as the Celery task drains: each round first claims entries a dead drain left.
            moved = services.events_drain_backlog(
                budget_seconds=_ROUND_SECONDS, max_entries=entries, claim_idle_ms=claim_idle_ms
            )
            total += moved
            if moved == 0:
                if once:
                    break
                time.sleep(0.2)
        self.stdout.write(f"drained {total} events")
