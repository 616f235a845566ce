"""Signed requests through Django's test client, built exactly as a bot builds them."""

import json
import secrets
import time

from django.test import Client

from accounts.keys import prehash, sign


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SignedClient:
    def __init__(self, key_id: str, secret: str, remote_addr: str = "127.0.0.1"):
        self.key_id, self.secret, self.remote_addr = key_id, secret, remote_addr
        self.client = Client()

    def headers(self, method: str, path: str, body: bytes, *, timestamp=None, nonce=None, secret=None) -> dict:
        timestamp = str(now_ms() if timestamp is None else timestamp)
        nonce = nonce or secrets.token_hex(8)
        signature = sign(secret or self.secret, prehash(timestamp, nonce, method, path, body))
        return {"X-Api-Key": self.key_id, "X-Api-Timestamp": timestamp, "X-Api-Nonce": nonce,
                "X-Api-Signature": signature}

    def request(self, method: str, path: str, data=None, *, headers=None, remote_addr=None, **signing):
        body = b"" if data is None else json.dumps(data).encode()
        sent = {**self.headers(method, path, body, **signing), **(headers or {})}
        sent = {name: value for name, value in sent.items() if value is not None}
        return self.client.generic(method, path, body, content_type="application/json", headers=sent,
                                   REMOTE_ADDR=remote_addr or self.remote_addr)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, data=None, **kwargs):
        return self.request("POST", path, data, **kwargs)
