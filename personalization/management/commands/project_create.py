"""Create a project: `manage.py project_create "Acme shop" --owner alice [--keys]`.

The owner (an existing user) becomes its admin. With --keys, a public and a secret key are created
and printed once (only their hashes are stored).
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from personalization import services


class Command(BaseCommand):
    help = "Create a project; its owner becomes admin. --keys also prints a new public and secret key."

    def add_arguments(self, parser):
        parser.add_argument("name", help='the project\'s name, e.g. "Acme shop"')
        parser.add_argument("--owner", help="username of the first admin (an existing user)")
        parser.add_argument("--slug", help="the project's short id (default: made from the name)")
        parser.add_argument("--keys", action="store_true", help="create and print a public and a secret key")

    def handle(self, *args, name: str, owner: str | None, slug: str | None, keys: bool, **options):
        user = None
        if owner:
            user = get_user_model().objects.filter(username=owner).first()
            if user is None:
                raise CommandError(f"--owner {owner!r}: no such user; create it with manage.py createsuperuser")
        try:
            project = services.project_create(name=name, owner=user, slug=slug)
        except services.ProjectError as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from None
        self.stdout.write(self.style.SUCCESS(f"project {project.name!r} created: slug {project.slug}, id {project.pk}"))
        if user is None:
            self.stdout.write("nobody is a member yet: add one with --owner, or in the admin site")
        if keys:
            for kind in ("public", "secret"):
                _, raw = services.api_key_create(project=project, kind=kind, name=f"{kind} key", by=user)
                self.stdout.write(f"{kind} key (shown once): {raw}")
