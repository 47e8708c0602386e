"""ProfileIdentity loses its two single-column indexes: the project's is covered by identity_unique_value
(project, kind, value), the profile's was there twice (identity_profile). With the project's, the drain's
lookup of a batch's ids could be planned as a scan of the project's every identity (models/people.py)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('personalization', '0010_exposure_behavior_segments'),
    ]

    operations = [
        migrations.AlterField(
            model_name='profileidentity',
            name='profile',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='identities', to='personalization.profile'),
        ),
        migrations.AlterField(
            model_name='profileidentity',
            name='project',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, to='personalization.project'),
        ),
    ]
