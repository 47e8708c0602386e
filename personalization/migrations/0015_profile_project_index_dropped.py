"""Profile.project loses its own index: profile_project_last_seen leads with the project and serves every
lookup by project. The drain rewrites a profile row for every person of a step (last_seen is indexed, so
those updates are never HOT): one index fewer to write for each.

Only the index is dropped (the foreign key stays as it is: re-adding it, as AlterField does, would check
every profile again under a lock)."""

import django.db.models.deletion
from django.db import migrations, models

_INDEX = "personalization_profile_project_id_7af19c3e"


class Migration(migrations.Migration):
    dependencies = [
        ("personalization", "0014_metric_values"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="profile",
                    name="project",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="profiles",
                        to="personalization.project",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {_INDEX}",
                    f'CREATE INDEX IF NOT EXISTS {_INDEX} ON personalization_profile ("project_id")',
                ),
            ],
        ),
    ]
