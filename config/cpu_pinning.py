"""Give each decide worker process a CPU of its own (KAIROS_DECIDE_CPU_PINNING=1, which config.runner
sets for `make run`; docker compose leaves it off, see docker-compose.yml).

granian hands every request from its network thread to a Python thread, which sends to Redis, sleeps
until Redis answers, and hands the response back. When a worker's threads float over all cores,
each hand-over can wake a thread on the other core; pinned, they switch on one core. On the bench's
two cores, at a fixed 1,900 decide req/s, this cut p99 from a median of 11.3 ms to 9.5 ms over 12
runs each, and raised the closed-loop peak ~14 % (bench/decide.py --cpu-pinning 0 / 1).

No Django here: config.wsgi calls it before the app loads, in each worker, before granian starts the
worker's threads, so they inherit the pin.
"""

import os
import socket

_claims: list[socket.socket] = []  # held for the life of the process


def worker_slot_claim(group: str, limit: int = 256) -> int | None:
    """The lowest slot number no live sibling holds. A slot is an abstract Unix socket name, so a
    worker that dies frees its slot (the one granian respawns takes it) and nothing is left on disk."""
    for slot in range(limit):
        claim = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            claim.bind(f"\0kairos-{group}-{slot}")
        except OSError:
            claim.close()
            continue
        _claims.append(claim)
        return slot
    return None


def worker_cpu_pin(group: str) -> int | None:
    """Pin this process (its threads now and those it starts later) to one CPU: slot n of the workers
    sharing `group` gets the n-th CPU this process may use, round robin. Returns the CPU, or None
    when there is nothing to choose (one CPU, or no affinity support)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    slot = worker_slot_claim(group)
    if slot is None:
        return None
    cpu = cpus[slot % len(cpus)]
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), {cpu})
    return cpu
