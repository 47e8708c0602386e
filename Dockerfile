# One image for every Kairos service (web, decide, worker, beat); docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY . .
RUN DJANGO_SECRET_KEY=build-only KAIROS_PRIVACY_KEY=build-only DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 \
    python manage.py collectstatic --noinput -v 0 \
 && mkdir -p /app/var/exports && useradd --system --uid 1000 kairos && chown -R kairos /app/var
USER kairos

EXPOSE 8000
CMD ["granian", "--interface", "wsgi", "config.wsgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--workers", "2", "--blocking-threads", "2", "--no-ws"]
