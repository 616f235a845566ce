"""The slowest recent requests under gunicorn with two workers (the production stack): whichever worker serves the
admin's page lists the requests every worker served, since they keep them in Redis."""

import json
import re

import httpx

from .processes import form_post, free_port

OPERATOR = ("operator", "e2e-operator-password")  # seed_demo's operator, from the stack's environment
PAGE = "/admin/trading/slowrequest/"


def served_by(log_text: str) -> dict[str, int]:
    """Each request id's worker (process id), from the request lines gunicorn's workers log."""
    lines = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    return {line["request_id"]: line["process"] for line in lines if line["logger"] == "exchange.requests"}


def test_every_worker_lists_the_requests_every_worker_served(stack):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Every request kept (more than the test sends), and each one's line logged with its worker's process id.
    stack.start(f"gunicorn-{port}", ["gunicorn", "-c", "exchange/gunicorn.conf.py", "exchange.wsgi:application",
                                     "--bind", f"127.0.0.1:{port}", "--workers", "2"],
                ready_url=f"{url}/v1/time", SLOW_REQUESTS_KEEP="1000", LOG_LEVEL="INFO", LOG_FORMAT="json")
    sent = []
    for _ in range(100):  # each on a connection of its own, until both workers have served some
        sent.append(httpx.get(f"{url}/v1/time").headers["X-Request-Id"])
        workers = served_by(stack.log(f"gunicorn-{port}").read_text())
        if len({workers.get(request_id) for request_id in sent} - {None}) == 2 and len(sent) >= 10:
            break

    pages = []
    with httpx.Client(base_url=url, timeout=10) as admin:
        form_post(admin, "/admin/login/?next=/admin/", {"username": OPERATOR[0], "password": OPERATOR[1]})
        for _ in range(40):  # the page, until each worker has served it at least twice
            page = httpx.get(f"{url}{PAGE}", cookies=admin.cookies)
            pages.append((page.headers["X-Request-Id"], page.text))
            workers = served_by(stack.log(f"gunicorn-{port}").read_text())
            by_worker = [workers.get(request_id) for request_id, _ in pages]
            if min(by_worker.count(pid) for pid in set(workers.values())) >= 2:
                break

    workers = served_by(stack.log(f"gunicorn-{port}").read_text())
    assert len({workers[request_id] for request_id in sent}) == 2  # the requests were spread over both workers
    assert len({workers[request_id] for request_id, _ in pages}) == 2  # and so was the page
    for request_id, text in pages:
        listed = set(re.findall(r'<td class="field-request_id"><code>([^<]+)</code>', text))
        assert set(sent) <= listed, f"the page served by worker {workers[request_id]} misses requests"
