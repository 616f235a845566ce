"""Start the real processes (Daphne, gunicorn, Celery workers) for end-to-end tests."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = str(Path(sys.executable).parent)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_env(**overrides: str | None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def wait_until(condition, timeout=60.0, interval=0.2, what="condition"):
    """``condition()``'s first true value, polled every ``interval`` seconds for up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met in {timeout}s")


def wait_ready(process: subprocess.Popen, log: Path, ready, what: str, timeout: float = 90) -> None:
    """Until ``ready()`` is true; fails with the process's log if it exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{log.read_text()}")
        if ready():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready in {timeout}s:\n{log.read_text()}")


def answers_http(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.TransportError:
        return False


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    wait_ready(process, log, lambda: answers_http(url), url, timeout)


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM to the process's group (and SIGCONT, should it be paused), SIGKILL if it outlives ``timeout``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        os.killpg(process.pid, signal.SIGCONT)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:  # the group is gone: only the exit status is left to collect
        process.wait()


@contextmanager
def running(args: list[str], env: dict[str, str], log: Path, ready_url: str | None = None,
            ready_text: str | None = None):
    """Run a process in its own session (its pid names its process group); stop the whole group on exit.
    Ready when ``ready_url`` answers or ``ready_text`` appears in its log."""
    with log.open("w") as out:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if ready_url:
            wait_for_http(ready_url, process, log)
        if ready_text:
            wait_ready(process, log, lambda: ready_text in log.read_text(errors="replace"), f"{args[0]} ({log.name})")
        yield process
    finally:
        stop(process)


def form_post(client: httpx.Client, path: str, fields: dict, page: str | None = None) -> httpx.Response:
    """Submit a form as a browser does, with the CSRF token of the page it is on (``page``, else ``path``)."""
    form_page = client.get(page or path)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form_page.text).group(1)
    return client.post(path, data={"csrfmiddlewaretoken": token, **fields}, follow_redirects=True)
