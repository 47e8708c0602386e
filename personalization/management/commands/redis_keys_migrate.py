"""Rename Redis keys written before the Redis Cluster hash tags: `manage.py redis_keys_migrate`.

Runs after `manage.py migrate` in `make run`, `make test` and compose's migrate service; a second
run finds nothing to do (personalization/redis_migrate.py says how keys are renamed and merged).
"""

from django.core.management.base import BaseCommand

from personalization import redis_client
from personalization.redis_migrate import redis_keys_migrate


class Command(BaseCommand):
    help = "Rename Redis keys of older releases (kr:<project>:…) to their hash-tagged names (kr:{<project>}:…)."

    def handle(self, *args, **options):
        counts = redis_keys_migrate(client=redis_client.worker())
        if counts["renamed"] or counts["merged"]:
            self.stdout.write(f"Redis keys: {counts['renamed']} renamed, {counts['merged']} merged into existing keys")
