from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0005_metric_values"),
    ]

    operations = [
        migrations.AddField(
            model_name="metric",
            name="values_progress_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
