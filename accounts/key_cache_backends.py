"""The stores of the API keys' tokens and of the nonces (accounts/key_cache.py), one per stack;
settings.NONCE_TOKENS names the one a process uses."""

import secrets
import threading

from django.core.cache import cache

from accounts.key_cache import ALL_KEYS_TOKEN, NONCE_EPOCH, Admission, Admitted, now_ms, token_name
from exchange.ratelimit import Charge, window_seconds, windows
from exchange.ratelimit_backends import CHARGE_FUNCTION, decision_from_script, redis_key
from exchange.redis import get_redis


def new_token() -> str:
    return secrets.token_hex(8)


class LocalTokens:
    """The embedded default: one process, so a dict; nonces stay in the local cache as before, which
    is empty when the process starts: that is the epoch."""

    def __init__(self):
        self.lock = threading.Lock()
        self.start()

    def start(self) -> None:
        """The process (re)starts: no tokens, and the nonce memory starts now."""
        with self.lock:
            self.values: dict[str, str] = {}
            self.epoch_ms = now_ms()

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
        """The process starts: the epoch is set if the store has none (it is empty)."""
        self.redis.set(NONCE_EPOCH, now_ms(), nx=True)

    def delete(self, names: list[str]) -> None:
        self.redis.delete(*names)
