from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """pgvector, for behavior embeddings."""

    initial = True
    dependencies: list = []
    operations = [VectorExtension()]
