"""docker-compose.yml scales by count (`--scale decide=4`): checked on the file itself, as this machine
runs no Docker. tests/test_load_balancer.py runs its load balancer's config with a real HAProxy."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SCALED = ("web", "decide", "worker", "drain")


def test_compose__replicas_publish_no_port_and_only_the_lb_does():
    for name in SCALED:
        assert "ports" not in SERVICES[name], f"{name} publishes a port: --scale {name}=2 would clash"
        assert "container_name" not in SERVICES[name]
    published = [name for name, service in SERVICES.items() if "ports" in service]
    assert published == ["lb"]
    lb = SERVICES["lb"]
    assert lb["image"].startswith("haproxy:")
    assert "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]
    assert set(lb["depends_on"]) == {"web", "decide"}


def test_haproxy_cfg__replicas_by_docker_dns_checked_on_readyz():
    cfg = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "nameserver dns 127.0.0.11:53" in cfg
    for name in ("decide", "web"):
        backend = cfg.split(f"\nbackend {name}\n")[1].split("\nbackend ")[0]
        assert re.search(rf"server-template {name} \S+ {name}:8000 resolvers docker", backend)
        assert "uri /readyz" in backend and "http-check expect status 200" in backend
        assert "check inter" in backend
    # The public endpoints go to decide (the events import, a secret-key endpoint, stays on web).
    assert "acl public_path path /api/v1/decide /api/v1/events /api/v1/ping" in cfg
    assert "acl public_path path_beg /api/v1/decide/ /ofrep/" in cfg
    assert "option forwardfor" in cfg


def test_compose__kairos_services_share_env_through_pgbouncer_and_trust_one_proxy():
    for name in (*SCALED, "beat"):
        env = SERVICES[name]["environment"]
        assert "@pgbouncer:5432/" in env["DATABASE_URL"] and env["KAIROS_PGBOUNCER"] == "1", name
        assert env["KAIROS_TRUSTED_PROXIES"] == "${KAIROS_TRUSTED_PROXIES:-1}", name
        assert SERVICES[name]["depends_on"]["pgbouncer"] == {"condition": "service_healthy"}, name
        assert SERVICES[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert SERVICES["decide"]["environment"]["KAIROS_ROLE"] == "decide"
    assert SERVICES["drain"]["command"] == ["python", "manage.py", "events_drain"]
    # Migrations talk to PostgreSQL itself: one long session, nothing to pool.
    assert "@postgres:5432/" in SERVICES["migrate"]["environment"]["DATABASE_URL"]
    bouncer = SERVICES["pgbouncer"]
    assert bouncer["environment"]["POOL_MODE"] == "transaction" and bouncer["environment"]["DB_HOST"] == "postgres"
    for name in ("postgres", "pgbouncer", "redis", "web", "decide"):
        assert "healthcheck" in SERVICES[name], name
    assert "/readyz" in " ".join(SERVICES["web"]["healthcheck"]["test"])
    assert "/readyz" in " ".join(SERVICES["decide"]["healthcheck"]["test"])


def database_settings(**env) -> dict:
    """config.settings' database, as a process started with `env` sees it."""
    code = "import json, config.settings as s; print(json.dumps(s.DATABASES['default']))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=ROOT, capture_output=True)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


def test_pgbouncer_setting__no_server_side_cursors_nor_prepared_statements():
    behind = database_settings(KAIROS_PGBOUNCER="1", DATABASE_URL="postgres://kairos:pw@pgbouncer:5432/kairos")
    assert behind["HOST"] == "pgbouncer" and behind["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert behind["OPTIONS"] == {"prepare_threshold": None}
    direct = database_settings(KAIROS_PGBOUNCER="0")
    assert "DISABLE_SERVER_SIDE_CURSORS" not in direct and "prepare_threshold" not in direct.get("OPTIONS", {})
