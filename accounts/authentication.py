"""Signed requests (SPEC section 3): the checks, in an order that leaks nothing to a caller without the secret.

Unknown or revoked key, then the key's IP allowlist, then the clock window, then the signature in
constant time, and only then the nonce is remembered (so a forger cannot burn a bot's nonces), if
the request is not older than the nonce store's memory (``key_cache``: its epoch).
The key comes from this process's cache (accounts/key_cache.py): the round trip that remembers the
nonce also confirms the cached key is current, and a refusal is confirmed the same way before it
is given, so a key changed elsewhere is reloaded and the request checked again on fresh rows.
"""

import hmac
import logging
import re
from dataclasses import dataclass

from cryptography.fernet import InvalidToken
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication

from accounts import key_cache, keys
from accounts.key_cache import Admission
from accounts.models import ApiKey
from accounts.secrets import decrypt_secret
from exchange.errors import (OUTAGE_ERRORS, AuthenticationFailed, ErrorCode, ExchangeError, Forbidden,
                             ServiceUnavailable, log_outage)
from exchange.fields import to_milliseconds
from exchange.net import client_address, parse_address
from exchange.ratelimit import Charge, Prepaid, key_budget, view_weight

HEADERS = ("X-Api-Key", "X-Api-Timestamp", "X-Api-Nonce", "X-Api-Signature")
TIMESTAMP = re.compile(r"[0-9]{1,15}")  # ASCII digits only (str.isdigit() takes "²"); 15 reach the year 33658
NONCE = re.compile(r"[A-Za-z0-9_-]{8,64}")
SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
KEY_ID = re.compile(r"hkt_(?:live|test)_[0-9a-f]{24}")  # accounts.keys.create_api_key's public ids
LOADS = 3  # a key whose tokens change again between each reload and its check is refused

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignedRequest:
    key_id: str
    timestamp: str
    nonce: str
    signature: str
    method: str
    path: str
    body: bytes
    address: str
    # An ASGI server (Daphne) gives no query string for both "/path" and "/path?": either may be what was signed.
    query_may_be_bare: bool = False


def check_shape(signed: SignedRequest) -> int:
    if not TIMESTAMP.fullmatch(signed.timestamp):
        raise AuthenticationFailed(ErrorCode.MISSING_AUTH_HEADERS,
                                   "X-Api-Timestamp must be integer milliseconds since the epoch.")
    if not NONCE.fullmatch(signed.nonce):
        raise AuthenticationFailed(ErrorCode.MISSING_AUTH_HEADERS,
                                   "X-Api-Nonce must be 8 to 64 characters of A-Z a-z 0-9 _ -.")
    if not KEY_ID.fullmatch(signed.key_id):  # no look-up for what no key is (a NUL would reach the database)
        raise AuthenticationFailed(ErrorCode.INVALID_API_KEY, "Unknown API key.")
    if not signed.key_id.startswith(keys.public_id_prefix()):  # a database the other environment used
        raise AuthenticationFailed(ErrorCode.INVALID_API_KEY, "A sandbox key (hkt_test_) works only in the sandbox."
                                   if signed.key_id.startswith("hkt_test_") else
                                   "A production key (hkt_live_) does not work in the sandbox.")
    return int(signed.timestamp)


class StaleKey(Exception):
    """The cached key changed since it was loaded: reload it and check the request again."""


@dataclass(frozen=True)
class Verified:
    key: ApiKey
    cached: key_cache.CachedKey
    rate_limit: Prepaid | None  # the key's budget, charged with the request's weight when one was given


def verify_signed_request(signed: SignedRequest, weight: int | None = None) -> Verified:
    """The key that signed this request, or the ExchangeError that refuses it. With a weight, the
    key's budget is charged in the same round trip as the nonce; the throttle applies the decision."""
    timestamp = check_shape(signed)
    try:
        cached = key_cache.find(signed.key_id)
        for _ in range(LOADS):
            try:
                return admit_request(cached, signed, timestamp, weight)
            except StaleKey:
                cached = key_cache.load(signed.key_id)
    except OUTAGE_ERRORS as error:
        # Redis or the database is down: the request cannot be checked, which is no answer about it
        # (here rather than in the REST handler alone, so that a WebSocket auth gets it too).
        log_outage("signed request", error)
        raise ServiceUnavailable("Signed requests cannot be checked right now; retry shortly.") from None
    raise ServiceUnavailable("This key's settings are being changed; retry.", retry_after=None)


def admit_request(cached: key_cache.CachedKey | None, signed: SignedRequest, timestamp: int,
                  weight: int | None) -> Verified:
    """Checks on the cached rows, confirmed current before a refusal; then one round trip confirms
    them again, remembers the nonce and charges the weight (if given)."""
    try:
        key = check_key(cached, signed, timestamp)
    except ExchangeError:
        if cached is not None and not key_cache.unchanged(cached):
            raise StaleKey from None
        raise
    # Remembered for the whole span a timestamp can be accepted in, tolerance on both sides, at the
    # widest tolerance a key can be given: raising the key's tolerance later must not reopen a replay.
    nonce_seconds = 2 * ApiKey.MAX_DRIFT_MS // 1000 + 1
    made_ms = max(timestamp, to_milliseconds(key.created_at))
    charge = None if weight is None else Charge(*key_budget(key), weight)
    admitted = key_cache.admit(cached, f"nonce:{key.pk}:{signed.nonce}", nonce_seconds, made_ms, charge)
    if admitted.admission is Admission.STALE:
        raise StaleKey
    if admitted.admission is Admission.REPLAYED:
        raise AuthenticationFailed(ErrorCode.NONCE_REUSED, "This nonce was already used with this key.")
    if admitted.admission is Admission.BEFORE_EPOCH:
        # The same code as a clock out of the window: clients already sign again with a fresh timestamp.
        raise AuthenticationFailed(
            ErrorCode.TIMESTAMP_OUT_OF_WINDOW,
            f"X-Api-Timestamp is older than the server's nonce memory, which starts at {admitted.epoch_ms} "
            "(it was restarted), so this request cannot be told from a replay; sign it again with the "
            "current time.", server_time=to_milliseconds(timezone.now()),
            tolerance_ms=key.drift_tolerance_ms, nonce_epoch=admitted.epoch_ms)
    return Verified(key, cached, None if charge is None else Prepaid(charge, admitted.decision))


def record_key_use(cached: key_cache.CachedKey) -> None:
    """Once a request has passed every check (scope and budget too): a refused request writes nothing."""
    now = timezone.now()
    if cached.last_use_due(now):
        ApiKey.objects.filter(public_id=cached.public_id).update(last_used_at=now)
        cached.last_used_at = now


def check_standing(cached: key_cache.CachedKey | None, address: str) -> ApiKey:
    """The key exists, is not revoked, its user is active and ``address`` is on its allowlist."""
    if cached is None:
        raise AuthenticationFailed(ErrorCode.INVALID_API_KEY, "Unknown API key.")
    key = cached.instance()
    if key.is_revoked:
        raise AuthenticationFailed(ErrorCode.API_KEY_REVOKED, "This API key has been revoked.")
    if not cached.user_active:
        raise AuthenticationFailed(ErrorCode.API_KEY_REVOKED, "This API key's user has been deactivated.")
    if not keys.ip_allowed(key, address):
        compared = str(parse_address(address) or address)  # what an allowlist entry must hold
        raise Forbidden(ErrorCode.IP_NOT_ALLOWED, f"{compared} is not on this key's IP allowlist", address=compared)
    return key


def check_session_key(public_id: str, address: str) -> None:
    """For a session signed in once with this key (a WebSocket): raise the ExchangeError that would
    refuse it now (revoked, user deactivated, address no longer allowed), on current rows."""
    cached = key_cache.find(public_id)
    if cached is not None and not key_cache.unchanged(cached):
        cached = key_cache.load(public_id)
    check_standing(cached, address)


def check_key(cached: key_cache.CachedKey | None, signed: SignedRequest, timestamp: int) -> ApiKey:
    key = check_standing(cached, signed.address)
    server_time = to_milliseconds(timezone.now())
    if abs(server_time - timestamp) > key.drift_tolerance_ms:
        raise AuthenticationFailed(
            ErrorCode.TIMESTAMP_OUT_OF_WINDOW,
            f"X-Api-Timestamp is {timestamp - server_time:+d} ms from server time; this key allows "
            f"±{key.drift_tolerance_ms} ms.", server_time=server_time, tolerance_ms=key.drift_tolerance_ms)
    # In its place in the order of the checks (docs/api.md), and before compare_digest, which takes ASCII only.
    if not SIGNATURE.fullmatch(signed.signature):
        raise AuthenticationFailed(ErrorCode.INVALID_SIGNATURE, "X-Api-Signature must be 64 hex digits (HMAC-SHA256).")
    try:
        secret = decrypt_secret(key.secret_ciphertext)
    except InvalidToken:
        # None of the configured encryption keys opens it: the server's settings are wrong, not the request.
        logger.error("API key %s: no key in API_KEY_ENCRYPTION_KEYS (or derived from SECRET_KEY) decrypts its "
                     "secret", key.public_id)
        raise ServiceUnavailable("Signed requests cannot be checked right now; retry later.",
                                 retry_after=None) from None
    signature = signed.signature.lower()
    paths = (signed.path, signed.path + "?") if signed.query_may_be_bare else (signed.path,)
    if not any(hmac.compare_digest(keys.sign(secret, keys.prehash(signed.timestamp, signed.nonce, signed.method, path,
                                                                  signed.body)), signature) for path in paths):
        raise AuthenticationFailed(ErrorCode.INVALID_SIGNATURE, "The signature does not match this request.")
    return key


def request_path(django_request) -> str:
    """The path and query exactly as sent, which is what the client signed: gunicorn keeps the raw
    request line, an ASGI server (Daphne) the raw path and query string. Rebuilding them from the
    decoded path would re-encode some characters differently (``|``, ``{``, ``%7C``)."""
    raw_uri = django_request.META.get("RAW_URI")
    if raw_uri:
        return raw_uri
    scope = asgi_scope(django_request)
    if scope.get("raw_path"):
        query = scope.get("query_string", b"")
        return scope["raw_path"].decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    return django_request.get_full_path()


def asgi_scope(django_request) -> dict:
    return {} if django_request.META.get("RAW_URI") else getattr(django_request, "scope", None) or {}


def query_may_be_bare(django_request) -> bool:
    """Whether the path may have ended in a "?" the server did not see: ASGI's scope has no query string
    for both "/v1/orders" and "/v1/orders?"."""
    scope = asgi_scope(django_request)
    return bool(scope.get("raw_path")) and not scope.get("query_string")


class ApiKeyAuthentication(BaseAuthentication):
    """DRF authentication for signed requests; returns (user, key) so that ``request.auth`` is the key.

    The view's weight is charged to the key's budget with the nonce, before the permission checks:
    WeightedRateThrottle applies that decision, and RateLimitHeadersMiddleware refunds it if the
    request is refused before the throttle (wrong scope), so refusals spend what they did before."""

    def authenticate(self, request):
        meta = request.META
        values = {name: meta.get("HTTP_" + name.upper().replace("-", "_"), "") for name in HEADERS}
        if not any(values.values()):
            return None
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise AuthenticationFailed(ErrorCode.MISSING_AUTH_HEADERS, f"Missing {', '.join(missing)}.",
                                       missing=missing)
        verified = verify_signed_request(
            SignedRequest(
                key_id=values["X-Api-Key"], timestamp=values["X-Api-Timestamp"], nonce=values["X-Api-Nonce"],
                signature=values["X-Api-Signature"], method=request.method, path=request_path(request._request),
                body=request._request.body, address=client_address(meta),
                query_may_be_bare=query_may_be_bare(request._request),
            ),
            weight=view_weight(request.parser_context["view"], request),
        )
        request._request.prepaid_rate_limit = verified.rate_limit
        request._request.on_admitted = lambda: record_key_use(verified.cached)
        return verified.key.account.user, verified.key

    def authenticate_header(self, request) -> str:
        return 'HMAC-SHA256 headers="X-Api-Key X-Api-Timestamp X-Api-Nonce X-Api-Signature"'
