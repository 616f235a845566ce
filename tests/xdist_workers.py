"""Loaded early (``-p tests.xdist_workers`` in pyproject.toml), before Django reads its settings: under
pytest-xdist (CI's PostgreSQL run), each worker after the first gets Redis databases of its own, since
tests flush theirs; pytest-django gives each its own test database already. Tests marked slow (they start
the production processes) run one at a time on one worker (``--dist loadgroup``): two topologies at once
would fight over the two cores their timings assume."""

import os
import re

import pytest

WORKER_REDIS_STRIDE = 8  # worker N uses the databases of worker 0 plus N * 8 (modulo Redis's 16)


def shifted(db: int, worker: int) -> int:
    return (db + worker * WORKER_REDIS_STRIDE) % 16


def give_worker_its_redis_databases(worker: int) -> None:
    if url := os.environ.get("REDIS_URL"):
        match = re.fullmatch(r"(redis://[^/]*)(?:/(\d+))?", url)
        if match:
            os.environ["REDIS_URL"] = f"{match[1]}/{shifted(int(match[2] or 0), worker)}"
    os.environ["E2E_REDIS_DB"] = str(shifted(int(os.environ.get("E2E_REDIS_DB", "2")), worker))


if (worker := os.environ.get("PYTEST_XDIST_WORKER", "gw0")) != "gw0":
    give_worker_its_redis_databases(int(worker.removeprefix("gw")))


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group("processes"))
