"""Events in: validation, the public edge (request → Redis stream), the drain (stream → PostgreSQL),
history import and dead letters."""
