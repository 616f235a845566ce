"""What the checks of a signed request need of its API key, cached in each server process.

Reading a key with its account and tier is a four-table query that Django compiles on every request
(docs/performance.md), and bots sign every request. So each process keeps those rows by public id,
and trusts them only while two tokens are still the ones they were loaded under: the key's own and
one shared by all keys. The tokens live where every server process sees them (Redis; a dict on the
embedded default, which is one process; accounts/key_cache_backends.py), and they are compared in the
same round trip that remembers the request's nonce and charges its key's budget (``admit``).

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
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import NamedTuple

import redis
from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, models, transaction
from django.db.models.functions import Coalesce

from accounts.models import Account, ApiKey, RateTier
from exchange.backends import chosen
from exchange.ratelimit import Charge, Decision

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
        """Fresh model instances per request, as a select_related read gives; the user's own columns
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


def token_store():
    """The tokens' and nonces' store that settings.NONCE_TOKENS names (accounts/key_cache_backends.py)."""
    return chosen("NONCE_TOKENS")


def start() -> None:
    """When the process starts (accounts.apps): an empty nonce store's memory starts now at the latest,
    so that the first requests signed after a deploy on an empty Redis are not refused. The embedded
    default's store is this process's memory: its epoch is now, in any case."""
    try:
        token_store().start()
    except redis.RedisError as error:  # the first signed request sets it instead
        logger.warning("the nonce store's epoch could not be set at start: %s", error)


def reset() -> None:
    """Forget everything this process holds, as a restarted process would (tests: each starts with an
    empty cache and database)."""
    _cached.clear()
    start()
