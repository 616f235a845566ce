"""What the checks of a signed request need of its API key, cached in each server process.

Reading a key with its account and tier costs about a millisecond on PostgreSQL (mostly Django
compiling the query), and bots sign every request. So each process keeps those rows by public id,
and trusts them only while two tokens are still the ones they were loaded under: the key's own and
one shared by all keys. The tokens live where every server process sees them (Redis; a dict on the
embedded default, which is one process), and they are compared in the same round trip that
remembers the request's nonce and charges its key's budget (``admit``).

A change deletes tokens (``forget_*``), so the next request in every process reloads the key:
saves of keys, accounts and tiers through the ORM by the receivers in ``accounts/signals.py``,
queryset writes (``revoke_api_keys``, ``rotate_api_key_secrets``) by their own call. A write that
does neither (raw SQL, ``QuerySet.update`` in a shell) is seen within ``MAX_AGE_SECONDS``.

The nonce store has an epoch: the time from which it has remembered every nonce it admitted. A
restart of Redis without its data, a flush, or a restart of the process on the embedded default
empties the store; the epoch then moves to the first use after it (when a process starts, or
within the round trip that admits a nonce, set only when absent: later requests never move it).
A request is provably fresh only if it is not older than the epoch: its timestamp, or its key's
creation (no request with a key can have been admitted before the key existed), is at or after
the epoch. ``admit`` refuses any other, so the requests of before a loss cannot be replayed after it.
"""

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import NamedTuple

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, models, transaction
from django.db.models.functions import Coalesce

from accounts.models import Account, ApiKey, RateTier
from exchange.ratelimit import (CHARGE_FUNCTION, Charge, Decision, decision_from_script, redis_key, window_seconds,
                                windows)
from exchange.redis import get_redis

logger = logging.getLogger(__name__)

MAX_AGE_SECONDS = 60
MAX_KEYS = 10_000  # per process; the oldest is dropped beyond this
ALL_KEYS_TOKEN = "authtoken:all"
NONCE_EPOCH = "nonce-epoch"  # integer ms since the Unix epoch, server time
LAST_USED_RESOLUTION = timedelta(minutes=1)


def token_name(public_id: str) -> str:
    return f"authtoken:key:{public_id}"


class Admission(IntEnum):
    """What the round trip that remembers a nonce found (the numbers are the Lua script's answers)."""

    STALE = 0  # a token changed: reload the key and check again; the nonce was not remembered
    ADMITTED = 1
    REPLAYED = 2
    BEFORE_EPOCH = 3  # the request and its key are older than the nonce store's memory; nothing was remembered


class Admitted(NamedTuple):
    admission: Admission
    decision: Decision | None = None  # the charge's, when admitted with one
    epoch_ms: int | None = None  # when the nonce store's memory starts, for BEFORE_EPOCH


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def row_of(instance: models.Model) -> tuple:
    return tuple(getattr(instance, field.attname) for field in instance._meta.concrete_fields)


@dataclass
class CachedKey:
    """The key's, its account's and its tier's columns as loaded (read-only), and the tokens then."""

    public_id: str
    key_row: tuple
    account_row: tuple
    tier_row: tuple
    tokens: tuple[str, str]
    loaded_at: float  # time.monotonic()
    last_used_at: datetime | None  # as this process last wrote it
    user_active: bool  # an operator can deactivate a user: every key of theirs stops

    def instance(self) -> ApiKey:
        """Fresh model instances per request, as the old select_related gave; the user's own columns
        are deferred (read from the database if something asks for them)."""
        key = ApiKey.from_db(DEFAULT_DB_ALIAS, None, self.key_row)
        account = Account.from_db(DEFAULT_DB_ALIAS, None, self.account_row)
        account.rate_tier = RateTier.from_db(DEFAULT_DB_ALIAS, None, self.tier_row)
        user_id = account.user_id
        # Setting the one-to-one also caches user.account, which the trading views read.
        account.user = None if user_id is None else get_user_model().from_db(DEFAULT_DB_ALIAS, ["id"], [user_id])
        key.account = account
        return key

    def last_use_due(self, now: datetime) -> bool:
        """last_used_at is written at most once a minute per key and process, not on every request."""
        return self.last_used_at is None or now - self.last_used_at > LAST_USED_RESOLUTION


_cached: dict[str, CachedKey] = {}
_cached_lock = threading.Lock()


def find(public_id: str) -> CachedKey | None:
    """The key as cached here, or as loaded now; None when no key has this public id."""
    cached = _cached.get(public_id)
    if cached is not None and time.monotonic() - cached.loaded_at < MAX_AGE_SECONDS:
        return cached
    return load(public_id)


def load(public_id: str) -> CachedKey | None:
    # The tokens are taken before the rows are read: a change committed after this read deletes them.
    tokens = token_store().current(public_id)
    key = (ApiKey.objects.select_related("account__rate_tier").filter(public_id=public_id)
           .annotate(user_active=Coalesce("account__user__is_active", True)).first())
    cached = None if key is None else CachedKey(
        public_id, row_of(key), row_of(key.account), row_of(key.account.rate_tier), tokens, time.monotonic(),
        key.last_used_at, key.user_active,
    )
    with _cached_lock:
        _cached.pop(public_id, None)
        if cached is not None:
            if len(_cached) >= MAX_KEYS:
                _cached.pop(next(iter(_cached)))
            _cached[public_id] = cached
    return cached


def unchanged(cached: CachedKey) -> bool:
    """Whether the key's rows are still as cached; asked before refusing a request on cached rows."""
    return token_store().tokens(cached.public_id) == cached.tokens


def admit(cached: CachedKey, nonce_name: str, nonce_seconds: int, made_ms: int, charge: Charge | None) -> Admitted:
    """One round trip: the tokens are still the cached ones, then the request (made at ``made_ms``, the
    later of its timestamp and its key's creation) is not older than the nonce store's epoch, then the
    nonce is remembered if new, then the charge (if any) is made; its decision comes back when the
    request was admitted."""
    return token_store().admit(cached.public_id, cached.tokens, nonce_name, nonce_seconds, made_ms, charge)


def forget_keys(public_ids) -> None:
    """Call after writing the keys, in the writing transaction: now, so that this transaction's own
    later requests see the change, and again after the commit, since another process may reload the
    old rows in between."""
    names = [token_name(public_id) for public_id in public_ids]
    if names:
        token_store().delete(names)
        transaction.on_commit(lambda: token_store().delete(names))


def forget_accounts(account_ids) -> None:
    forget_keys(list(ApiKey.objects.filter(account_id__in=account_ids).values_list("public_id", flat=True)))


def forget_users(user_ids) -> None:
    forget_keys(list(ApiKey.objects.filter(account__user_id__in=user_ids).values_list("public_id", flat=True)))


def forget_all_keys() -> None:
    """For changes that reach every key: a tier's budget, the encryption of every secret."""
    token_store().delete([ALL_KEYS_TOKEN])
    transaction.on_commit(lambda: token_store().delete([ALL_KEYS_TOKEN]))


def new_token() -> str:
    return secrets.token_hex(8)


class LocalTokens:
    """The embedded default: one process, so a dict; nonces stay in the local cache as before, which
    is empty when the process starts: that is the epoch."""

    def __init__(self, epoch_ms: int):
        self.lock = threading.Lock()
        self.values: dict[str, str] = {}
        self.epoch_ms = epoch_ms

    def current(self, public_id: str) -> tuple[str, str]:
        with self.lock:
            return (self.values.setdefault(token_name(public_id), new_token()),
                    self.values.setdefault(ALL_KEYS_TOKEN, new_token()))

    def tokens(self, public_id: str) -> tuple[str | None, str | None]:
        return self.values.get(token_name(public_id)), self.values.get(ALL_KEYS_TOKEN)

    def admit(self, public_id: str, expected: tuple[str, str], nonce_name: str, nonce_seconds: int, made_ms: int,
              charge: Charge | None) -> Admitted:
        if self.tokens(public_id) != expected:
            return Admitted(Admission.STALE)
        if made_ms < self.epoch_ms:
            return Admitted(Admission.BEFORE_EPOCH, epoch_ms=self.epoch_ms)
        if not cache.add(nonce_name, 1, timeout=nonce_seconds):
            return Admitted(Admission.REPLAYED)
        return Admitted(Admission.ADMITTED, None if charge is None else windows().charge(*charge))

    def delete(self, names: list[str]) -> None:
        with self.lock:
            for name in names:
                self.values.pop(name, None)


CURRENT_SCRIPT = """
for i, name in ipairs(KEYS) do redis.call('SET', name, ARGV[i], 'NX') end
return redis.call('MGET', unpack(KEYS))
"""

# KEYS: the key's token, the all-keys token, the nonce epoch, the nonce, and the budget if charged; ARGV:
# the two tokens expected, the time now and the time the request was made (ms), the nonce's lifetime (s),
# and the charge's limit, cost and window.
ADMIT_SCRIPT = CHARGE_FUNCTION + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then return {0} end
redis.call('SET', KEYS[3], ARGV[3], 'NX')
local epoch = tonumber(redis.call('GET', KEYS[3]))
if tonumber(ARGV[4]) < epoch then return {3, epoch} end
if not redis.call('SET', KEYS[4], 1, 'NX', 'EX', ARGV[5]) then return {2} end
if #KEYS == 4 then return {1} end
return {1, charge(KEYS[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]))}
"""


class RedisTokens:
    """Production: tokens in Redis, shared by every process; a missing token (deleted, evicted,
    flushed) never matches, so the key is reloaded."""

    def __init__(self):
        self.redis = get_redis()
        self.current_script = self.redis.register_script(CURRENT_SCRIPT)
        self.admit_script = self.redis.register_script(ADMIT_SCRIPT)

    def current(self, public_id: str) -> tuple[str, str]:
        values = self.current_script(keys=[token_name(public_id), ALL_KEYS_TOKEN], args=[new_token(), new_token()])
        return tuple(value.decode() for value in values)

    def tokens(self, public_id: str) -> tuple[str | None, str | None]:
        values = self.redis.mget([token_name(public_id), ALL_KEYS_TOKEN])
        return tuple(None if value is None else value.decode() for value in values)

    def admit(self, public_id: str, expected: tuple[str, str], nonce_name: str, nonce_seconds: int, made_ms: int,
              charge: Charge | None) -> Admitted:
        # The nonce under the name Django's cache.add gives it, so processes of the previous release
        # (which used cache.add) share nonce memory with this one during a deploy.
        keys = [token_name(public_id), ALL_KEYS_TOKEN, NONCE_EPOCH, cache.make_key(nonce_name)]
        args = [*expected, now_ms(), made_ms, nonce_seconds]
        if charge is not None:
            keys.append(redis_key(charge.bucket))
            args += [charge.limit, charge.cost, window_seconds()]
        reply = self.admit_script(keys=keys, args=args)
        admission = Admission(reply[0])
        if admission is Admission.BEFORE_EPOCH:
            return Admitted(admission, epoch_ms=reply[1])
        charged = admission is Admission.ADMITTED and charge is not None
        return Admitted(admission, decision_from_script(reply[1], charge.limit, charge.cost) if charged else None)

    def start(self) -> None:
        self.redis.set(NONCE_EPOCH, now_ms(), nx=True)

    def delete(self, names: list[str]) -> None:
        self.redis.delete(*names)


_token_store = None
_started_ms = now_ms()


def token_store() -> LocalTokens | RedisTokens:
    global _token_store
    if _token_store is None:
        _token_store = RedisTokens() if settings.REDIS_URL else LocalTokens(_started_ms)
    return _token_store


def start() -> None:
    """When the process starts (accounts.apps): an empty nonce store's memory starts now at the latest,
    so that the first requests signed after a deploy on an empty Redis are not refused. The embedded
    default's store is this process's memory: its epoch is now, in any case."""
    global _started_ms
    _started_ms = now_ms()
    if settings.REDIS_URL:
        try:
            token_store().start()
        except redis.RedisError as error:  # the first signed request sets it instead
            logger.warning("the nonce store's epoch could not be set at start: %s", error)


def reset() -> None:
    """Forget everything this process holds, as a restarted process would (tests: each starts with an
    empty cache and database)."""
    global _token_store
    _cached.clear()
    _token_store = None
    start()
