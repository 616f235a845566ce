"""The production topology for end-to-end tests: PostgreSQL, Redis, gunicorn, Daphne, Celery matchers.

Each stack gets its own PostgreSQL database and Redis database, so it never touches the suite's.
"""

import atexit
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis
from hkt_client import Client
from hkt_client.errors import OrderAlreadyClosed

from .processes import ROOT, free_port, process_env, running, wait_for_http

POSTGRES = os.environ.get("E2E_POSTGRES", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("E2E_REDIS", "redis://127.0.0.1:6379")
# Overlapping runs on one machine (two engineers, or CI beside a session) each need their own db.
REDIS_DB = int(os.environ.get("E2E_REDIS_DB", "2"))


def require_services(redis_url: str = f"{REDIS}/{REDIS_DB}") -> None:
    try:
        psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=3).close()
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except (psycopg.Error, redis.RedisError) as error:
        pytest.skip(f"end-to-end tests need PostgreSQL and Redis (.ci/run starts them): {error}")


_migrated_templates: dict[str | None, str] = {}  # EXCHANGE_ENVIRONMENT -> database


def migrated_template(environment: str | None) -> str:
    """A database migrated and seeded once per process and environment (the sandbox's seed differs), which
    each stack's database copies: a copy takes a fraction of a second where migrating takes seconds.
    Dropped when the process ends."""
    if environment not in _migrated_templates:
        seeded = Stack(Path(os.environ.get("TMPDIR", "/tmp")), name="e2e_template",
                       EXCHANGE_ENVIRONMENT=environment)
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{seeded.database}"')
        atexit.register(drop_database, seeded.database)
        seeded.manage("migrate", "--no-input", "-v", "0")
        seeded.manage("seed_demo")
        _migrated_templates[environment] = seeded.database
    return _migrated_templates[environment]


def drop_database(name: str) -> None:
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Stack:
    def __init__(self, tmp: Path, redis_url: str = f"{REDIS}/{REDIS_DB}", name: str = "e2e",
                 template: str | None = None, **env: str | None):
        """``redis_url``: a Redis of the test's own (one it restarts, say) instead of the suite's. The database is
        ``<name>_<random>``, a copy of ``template`` (see clone()), by default of a migrated and seeded one
        (migrated_template()); ``env``: more for every process."""
        require_services(redis_url)
        self.tmp, self.template = tmp, template
        self.database = f"{name}_{uuid.uuid4().hex[:12]}"
        self.env = process_env(**{
            "DATABASE_URL": f"{POSTGRES}/{self.database}", "REDIS_URL": redis_url, "MATCHER_MODE": "celery",
            "SECRET_KEY": "e2e-" + "k" * 60, "EXCHANGE_VAR_DIR": str(tmp), "DJANGO_SETTINGS_MODULE": "exchange.settings",
            "EXCHANGE_ADMIN_PASSWORD": "e2e-operator-password", "LOG_LEVEL": "WARNING", **env,
        })
        self.processes = ExitStack()
        self.started: list[tuple[str, subprocess.Popen]] = []  # (name, process), for CPU accounting by session
        self.matchers: dict[str, subprocess.Popen] = {}

    def __enter__(self):
        template = self.template or migrated_template(self.env.get("EXCHANGE_ENVIRONMENT"))
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}" TEMPLATE "{template}"')
        try:
            self.flush_redis()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info):
        self.processes.close()
        drop_database(self.database)

    def clone(self, tag: str) -> "Stack":
        """A stack (to enter) on a copy of this one's database as it is now: each run of a benchmark starts
        from the same state without migrating again. Nothing may be connected to this database meanwhile."""
        clone = Stack(self.tmp, self.env["REDIS_URL"], name=f"{self.database}_{tag}", template=self.database)
        clone.env = {**self.env, "DATABASE_URL": f"{POSTGRES}/{clone.database}"}
        return clone

    def flush_redis(self) -> None:
        redis.Redis.from_url(self.env["REDIS_URL"]).flushdb()

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def create_trader(self, username: str, *deposits: str, scope: str = "trade", verified: bool = False,
                      allow: tuple[str, ...] = ()) -> dict:
        return self.create_traders([username], *deposits, scope=scope, verified=verified, allow=allow)[0]

    def create_traders(self, usernames: list[str], *deposits: str, scope: str = "trade",
                       verified: bool = False, allow: tuple[str, ...] = ()) -> list[dict]:
        """``manage.py create_trader`` for each username, in one process: each one's account_id, key and secret;
        ``allow``: the keys' IP allowlist (a key that can withdraw needs one)."""
        args = [*[f"--deposit={d}" for d in deposits], "--scope", scope, *(["--verified"] if verified else []),
                "--outside-sandbox",
                *[f"--allow={network}" for network in allow]]
        code = ("import io, json\nfrom django.core.management import call_command\nkeys = []\n"
                f"for username in {usernames!r}:\n"
                "    out = io.StringIO()\n"
                f"    call_command('create_trader', username, *{args!r}, stdout=out)\n"
                "    keys.append(json.loads(out.getvalue()))\n"
                "print(json.dumps(keys))\n")
        return json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1])

    def audit(self) -> dict:
        result = subprocess.run([sys.executable, "manage.py", "audit_ledger"], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=300)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def start(self, name: str, args: list[str], ready_url: str | None = None, ready_text: str | None = None,
              **env: str) -> subprocess.Popen:
        """A process of the stack (or beside it, such as a benchmark's clients) in its own session, with the stack's
        environment and ``env``, logging to log(name); stopped on exit."""
        process = self.processes.enter_context(running(args, {**self.env, **env}, self.log(name), ready_url=ready_url,
                                                       ready_text=ready_text))
        self.started.append((name, process))
        return process

    def start_rest(self, workers: int = 2, *options: str) -> str:
        """gunicorn, as in production (``options``: more of its command-line options); returns its base URL."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.start(f"gunicorn-{port}", ["gunicorn", "-c", "exchange/gunicorn.conf.py", "exchange.wsgi:application",
                                        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), *options],
                   ready_url=f"{url}/v1/time")
        return url

    def start_daphne(self, processes: int = 1, **env: str) -> str:
        """Daphne as in production (bin/start-websocket): ``processes`` of them sharing one port."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.start(f"daphne-{port}", ["bin/start-websocket", f"127.0.0.1:{port}", str(processes)],
                   ready_url=f"{url}/v1/time", **env)
        return url

    def start_production(self, workers: int = 2, ws_processes: int = 2) -> "Production":
        """Every process of ``make production`` (bin/run-production: supervisord) on free ports."""
        rest_port, ws_port = free_port(), free_port()
        production = Production(
            {**self.env, "REST_BIND": f"127.0.0.1:{rest_port}", "WS_BIND": f"127.0.0.1:{ws_port}",
             "WEB_CONCURRENCY": str(workers), "WS_PROCESSES": str(ws_processes),
             "EXCHANGE_VAR_DIR": str(self.tmp / f"production-{rest_port}")},
            rest=f"http://127.0.0.1:{rest_port}", websocket=f"ws://127.0.0.1:{ws_port}/v1/ws",
        )
        production.process = self.processes.enter_context(running(
            ["bin/run-production"], production.env, self.tmp / f"production-{rest_port}.log",
            ready_url=f"{production.rest}/v1/time",
        ))
        wait_for_http(f"http://127.0.0.1:{ws_port}/v1/time", production.process, self.tmp / f"production-{rest_port}.log")
        deadline = time.monotonic() + 60
        while not production.all_running():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every process came up: {production.states()}")
            time.sleep(0.5)
        return production

    def start_matcher(self, pair: str) -> subprocess.Popen:
        """A Celery matcher for the pair's queue, as bin/start-matchers starts them; returns once it consumes."""
        process = self.start(f"matcher-{pair}", [
            "celery", "-A", "exchange", "worker", "--queues", f"match.{pair}", "--concurrency", "1", "--pool", "solo",
            "--hostname", f"match-{pair}-{uuid.uuid4().hex[:6]}@e2e", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO"], ready_text=" ready.")
        self.matchers[pair] = process
        return process

    def kill_matcher(self, pair: str) -> None:
        """SIGKILL: no cleanup, no chance to finish a batch or publish."""
        process = self.matchers.pop(pair)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Production:
    """The supervised processes of one ``make production``, driven through bin/supervise."""

    def __init__(self, env: dict[str, str], rest: str, websocket: str):
        self.env, self.rest, self.websocket = env, rest, websocket
        self.process: subprocess.Popen | None = None

    def supervise(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "bin/supervise", *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=120)
        return result.stdout

    def states(self) -> dict[str, tuple[str, int]]:
        """Each program's supervisorctl name: its state and pid (0 when it has none)."""
        states = {}
        for line in self.supervise("status").splitlines():
            name, state, *rest = line.split()
            pid = rest[1].rstrip(",") if rest[:1] == ["pid"] else "0"
            states[name] = (state, int(pid))
        return states

    def all_running(self) -> bool:
        states = self.states()
        return bool(states) and all(state == "RUNNING" for state, _ in states.values())

    def stop(self) -> int:
        """The one command that stops the whole; returns the exit status of bin/run-production."""
        self.supervise("stop")
        return self.process.wait(timeout=30)


class OrderStream:
    """Bots placing random limit orders near ``mid`` (and cancelling some) from threads, each as fast as it is
    answered, from enter to exit. ``accepted`` maps each accepted client_order_id to its order_id; the
    client_order_ids of bot i start with ``s<i>-``. An error other than a refused cancel ends the bot and is kept
    in ``failures``."""

    def __init__(self, bots: list[Client], pair: str, mid: Decimal, size_step: Decimal):
        self.bots, self.pair, self.mid, self.size_step = bots, pair, mid, size_step
        self.accepted: dict[str, int] = {}
        self.failures: list[Exception] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.stream, args=(bot, i)) for i, bot in enumerate(bots)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def stream(self, bot: Client, seed: int):
        rng = random.Random(seed)
        n = 0
        while not self.stopping.is_set():
            n += 1
            client_order_id = f"s{seed}-{n}"
            price = self.mid + Decimal(rng.randint(-20, 20)) / 2
            try:
                order = bot.place_order(self.pair, rng.choice(["buy", "sell"]), "limit", price=str(price),
                                        size=str(rng.randint(1, 50) * self.size_step), client_order_id=client_order_id)
                with self.lock:
                    self.accepted[client_order_id] = order["order_id"]
                if rng.random() < 0.15:
                    bot.cancel_order(order["order_id"])
            except OrderAlreadyClosed:
                pass  # it filled first, as orders near the mid do
            except Exception as error:
                self.failures.append(error)
                return

    def wait_for(self, count: int, timeout: float = 120) -> None:
        """Until ``count`` orders in all were accepted (a count, not a time: machines differ in speed)."""
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count:
            if self.failures or time.monotonic() > deadline:
                raise AssertionError(f"{len(self.accepted)} of {count} orders accepted; failures: {self.failures}")
            time.sleep(0.05)

    def order_ids_of(self, bot_index: int) -> set[int]:
        return {oid for cid, oid in self.accepted.items() if cid.startswith(f"s{bot_index}-")}
