"""The production topology for end-to-end tests: PostgreSQL, Redis, gunicorn, Daphne, Celery matchers.

Each stack gets its own PostgreSQL database and Redis database, so it never touches the suite's.
"""

import json
import os
import signal
import subprocess
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
import redis

from .processes import ROOT, free_port, process_env, running

POSTGRES = os.environ.get("E2E_POSTGRES", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("E2E_REDIS", "redis://127.0.0.1:6379")
# Overlapping runs on one machine (two engineers, or CI beside a session) each need their own db.
REDIS_DB = int(os.environ.get("E2E_REDIS_DB", "2"))


def require_services() -> None:
    try:
        psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=3).close()
        redis.Redis.from_url(f"{REDIS}/{REDIS_DB}", socket_connect_timeout=3).ping()
    except (psycopg.Error, redis.RedisError) as error:
        pytest.skip(f"end-to-end tests need PostgreSQL and Redis (.ci/run starts them): {error}")


class Stack:
    def __init__(self, tmp: Path):
        require_services()
        self.tmp = tmp
        self.database = f"e2e_{uuid.uuid4().hex[:12]}"
        self.env = process_env(
            DATABASE_URL=f"{POSTGRES}/{self.database}", REDIS_URL=f"{REDIS}/{REDIS_DB}", MATCHER_MODE="celery",
            SECRET_KEY="e2e-" + "k" * 60, EXCHANGE_VAR_DIR=str(tmp), DJANGO_SETTINGS_MODULE="exchange.settings",
            EXCHANGE_ADMIN_PASSWORD="e2e-operator-password", LOG_LEVEL="WARNING",
        )
        self.processes = ExitStack()
        self.matchers: dict[str, subprocess.Popen] = {}

    def __enter__(self):
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        redis.Redis.from_url(self.env["REDIS_URL"]).flushdb()
        self.manage("migrate", "--no-input", "-v", "0")
        self.manage("seed_demo")
        return self

    def __exit__(self, *exc_info):
        self.processes.close()
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def create_trader(self, username: str, *deposits: str, scope: str = "trade", verified: bool = False) -> dict:
        args = ["create_trader", username, "--scope", scope, *[f"--deposit={d}" for d in deposits]]
        return json.loads(self.manage(*args, *(["--verified"] if verified else [])))

    def audit(self) -> dict:
        result = subprocess.run([sys.executable, "manage.py", "audit_ledger"], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=300)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def start_rest(self, workers: int = 2) -> str:
        """gunicorn, as in production; returns its base URL."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.processes.enter_context(running(
            ["gunicorn", "exchange.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
            self.env, self.tmp / f"gunicorn-{port}.log", ready_url=f"{url}/v1/time",
        ))
        return url

    def start_daphne(self, processes: int = 1, **env: str) -> str:
        """Daphne as in production (bin/start-websocket): ``processes`` of them sharing one port."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.processes.enter_context(running(
            ["bin/start-websocket", f"127.0.0.1:{port}", str(processes)],
            {**self.env, **env}, self.tmp / f"daphne-{port}.log", ready_url=f"{url}/v1/time",
        ))
        return url

    def start_matcher(self, pair: str) -> subprocess.Popen:
        log = self.tmp / f"matcher-{pair}.log"
        context = running(
            ["celery", "-A", "exchange", "worker", "--queues", f"match.{pair}", "--concurrency", "1", "--pool", "solo",
             "--hostname", f"match-{pair}-{uuid.uuid4().hex[:6]}@e2e", "--without-gossip", "--without-mingle",
             "--loglevel", "INFO"],
            self.env, log,
        )
        process = self.processes.enter_context(context)
        self.matchers[pair] = process
        return process

    def kill_matcher(self, pair: str) -> None:
        """SIGKILL: no cleanup, no chance to finish a batch or publish."""
        process = self.matchers.pop(pair)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
