import os

from django.core.wsgi import get_wsgi_application

from config.env import env_bool, env_str

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
if env_str("KAIROS_ROLE", "web") == "decide" and env_bool("KAIROS_DECIDE_CPU_PINNING"):
    from config.cpu_pinning import worker_cpu_pin

    worker_cpu_pin(f"decide-{os.getppid()}")  # a granian server's workers share its main process as parent
application = get_wsgi_application()
