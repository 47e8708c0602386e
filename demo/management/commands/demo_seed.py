"""Create the demo shop: `manage.py demo_seed [--if-empty | --reset] [--profiles 20000] [--days 14] [--long-term]`.

`make run` calls it with --if-empty on every start, so it returns at once when the demo exists.
"""

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from demo import seed as demo_services
from demo.world import LONG_TERM_MIN_DAYS as LONG_TERM_DAYS
from demo.world import PLANTED_ATTRIBUTE
from experiments import services as experiments_services
from personalization import selectors as personalization_selectors
from segments import services as segments_services


class Command(BaseCommand):
    help = "Create the Demo Shop project with simulated visitors, two weeks of history and running experiences."

    def add_arguments(self, parser):
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--if-empty", action="store_true", help="do nothing when the demo project exists")
        mode.add_argument("--reset", action="store_true", help="delete the demo project first, then create it anew")
        parser.add_argument("--profiles", type=int, default=20_000, help="simulated visitors (default 20000)")
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help=f"days of history, at most 29 (default 14; {LONG_TERM_DAYS} with --long-term)",
        )
        parser.add_argument(
            "--long-term",
            action="store_true",
            help="also plant the long-term story (a discount that lifts conversion and lowers 30-day return)"
            f" in {LONG_TERM_DAYS} days of history",
        )
        parser.add_argument("--seed", type=int, default=7, help="random seed; the same seed gives the same demo")
        parser.add_argument(
            "--keys-file",
            type=Path,
            default=None,
            help=f"where to write the raw keys (default {demo_services.demo_keys_path()})",
        )

    def handle(self, *args, if_empty: bool, reset: bool, profiles: int, days, seed: int, keys_file, **options):
        long_term = options["long_term"]
        if profiles < 1:
            raise CommandError("--profiles must be at least 1")
        if long_term:
            days = LONG_TERM_DAYS if days is None else days
            if not LONG_TERM_DAYS <= days <= 120:
                raise CommandError(f"--days must be between {LONG_TERM_DAYS} and 120 with --long-term")
        elif not 1 <= (days := 14 if days is None else days) <= 29:
            raise CommandError("--days must be between 1 and 29 (events older than 30 days are not accepted)")
        existing = demo_services.demo_project_get()
        if existing is not None:
            if if_empty:
                self.stdout.write(f"demo project “{existing.slug}” exists; nothing to do")
                return
            if not reset:
                raise CommandError(f"the demo project “{existing.slug}” exists; use --reset to recreate it")
            started = time.monotonic()
            demo_services.demo_delete()
            self.stdout.write(f"deleted the old demo in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        project = demo_services.demo_seed(
            profiles=profiles,
            days=days,
            seed=seed,
            keys_path=keys_file,
            progress=self.stdout.write,
            long_term=long_term,
        )
        elapsed = time.monotonic() - started
        # Queue the first lift reports, so the Lift page has them as soon as a worker runs: the
        # usual ones, and the demo's planted heterogeneity (the pop-up against its control, by intent).
        experiments_services.lift_reports_precompute()
        experiments_services.lift_report_request(
            project=project,
            experience_key="signup-popup",
            comparison="control",
            segment_by=f"attribute:{PLANTED_ATTRIBUTE}",
        )
        # And the first behavior clustering, so the Segments page has segments once a worker runs.
        segments_services.clustering_run_request(project=project)
        counts = personalization_selectors.project_history_counts(project_id=project.pk)
        self.stdout.write(
            self.style.SUCCESS(
                f"demo “{project.name}” ready in {elapsed:.1f}s: "
                + ", ".join(f"{n:,} {name}" for name, n in counts.items())
                + f"; keys in {keys_file or demo_services.demo_keys_path()}; login demo / {demo_services.DEMO_PASSWORD}"
            )
        )
