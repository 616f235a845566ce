"""Signed requests (SPEC section 3), byte for byte as the server checks them (accounts/keys.py)."""

import hashlib
import hmac
import secrets
import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_nonce() -> str:
    """32 hex characters: inside the server's 8-64 `[A-Za-z0-9_-]`, and never repeats in practice."""
    return secrets.token_hex(16)


def prehash(timestamp: int | str, nonce: str, method: str, path: str, body: bytes | str = b"") -> bytes:
    """`{timestamp}\\n{nonce}\\n{METHOD}\\n{path with query as sent}\\n{raw body bytes}`."""
    if isinstance(body, str):
        body = body.encode()
    return b"\n".join([str(timestamp).encode(), nonce.encode(), method.upper().encode(), path.encode(), body])


def sign(secret: str, message: bytes) -> str:
    """Lowercase hex HMAC-SHA256 keyed with the secret string's UTF-8 bytes."""
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(
    key: str, secret: str, method: str, path: str, body: bytes | str = b"",
    timestamp: int | str | None = None, nonce: str | None = None,
) -> dict[str, str]:
    """The four X-Api-* headers; the current time and a fresh nonce unless given."""
    timestamp = str(now_ms() if timestamp is None else timestamp)
    nonce = new_nonce() if nonce is None else nonce
    return {
        "X-Api-Key": key,
        "X-Api-Timestamp": timestamp,
        "X-Api-Nonce": nonce,
        "X-Api-Signature": sign(secret, prehash(timestamp, nonce, method, path, body)),
    }
