"""API key services: create (the secret is returned once), change, revoke, and the checks auth applies."""

import hmac
import secrets
from hashlib import sha256

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import key_cache
from accounts.models import Account, ApiKey
from accounts.secrets import encrypt_secret
from exchange.errors import InvalidFields, InvalidRequest
from exchange.net import parse_address, parse_network

SECRET_BYTES = 32  # 256 bits


def public_id_prefix() -> str:
    """Recognisable at a glance, and a sandbox key never looks like a production one."""
    return "hkt_test_" if settings.EXCHANGE_ENVIRONMENT == "sandbox" else "hkt_live_"


def normalize_allowlist(entries: list[str]) -> list[str]:
    """Each entry an IPv4/IPv6 address or CIDR range, in canonical form, at most MAX_ALLOWLIST_ENTRIES;
    INVALID_REQUEST otherwise."""
    if len(entries) > MAX_ALLOWLIST_ENTRIES:
        message = f"At most {MAX_ALLOWLIST_ENTRIES} addresses or ranges: use a CIDR range for a block."
        raise InvalidFields({"ip_allowlist": [message]}, message)
    networks, bad = [], []
    for entry in entries:
        try:
            networks.append(str(parse_network(entry.strip())))
        except ValueError:
            bad.append(entry)
    if bad:
        raise InvalidFields({"ip_allowlist": [f"Not an IP address or CIDR range: {entry}" for entry in bad]},
                            f"Not an IP address or CIDR range: {', '.join(bad)}.")
    return sorted(set(networks), key=networks.index)


# Checked against each signed request from outside it, entry by entry (Binance allows 30 a key).
MAX_ALLOWLIST_ENTRIES = 100
# The widest range a key that can withdraw may allow: an allowlist of 0.0.0.0/0 is none at all.
WITHDRAW_PREFIX = {4: 8, 6: 32}


def too_broad(entry: str) -> bool:
    network = parse_network(entry)
    return network.prefixlen < WITHDRAW_PREFIX[network.version]


def check_key_settings(scope: str, ip_allowlist: list[str], drift_tolerance_ms: int) -> None:
    errors = {}
    if scope not in ApiKey.Scope.values:
        errors["scope"] = [f"One of {', '.join(ApiKey.Scope.values)}."]
    if scope == ApiKey.Scope.TRADE_WITHDRAW and not ip_allowlist:
        errors["ip_allowlist"] = ["A key that can withdraw must be limited to an IP allowlist."]
    elif scope == ApiKey.Scope.TRADE_WITHDRAW and (broad := [entry for entry in ip_allowlist if too_broad(entry)]):
        errors["ip_allowlist"] = [(f"A key that can withdraw takes IPv4 ranges of /{WITHDRAW_PREFIX[4]} or narrower "
                                   f"and IPv6 ranges of /{WITHDRAW_PREFIX[6]} or narrower, not {', '.join(broad)}.")]
    if not ApiKey.MIN_DRIFT_MS <= drift_tolerance_ms <= ApiKey.MAX_DRIFT_MS:
        errors["drift_tolerance_ms"] = [f"Between {ApiKey.MIN_DRIFT_MS} and {ApiKey.MAX_DRIFT_MS} ms."]
    if errors:
        raise InvalidFields(errors, "Invalid key settings.")


def check_room_for_a_key(account: Account) -> None:
    """Under the account row's lock, so that concurrent creates cannot pass the cap together."""
    Account.objects.select_for_update().only("pk").get(pk=account.pk)
    if ApiKey.objects.filter(account=account, revoked_at__isnull=True).count() >= ApiKey.MAX_LIVE_PER_ACCOUNT:
        raise InvalidRequest(f"An account has at most {ApiKey.MAX_LIVE_PER_ACCOUNT} live keys: revoke one first.",
                             limit=ApiKey.MAX_LIVE_PER_ACCOUNT)


@transaction.atomic
def create_api_key(
    account: Account, *, label: str, scope: str, ip_allowlist: list[str],
    drift_tolerance_ms: int = ApiKey.DEFAULT_DRIFT_MS,
) -> tuple[ApiKey, str]:
    """Returns the key and its secret; the secret is never available again."""
    ip_allowlist = normalize_allowlist(ip_allowlist)
    check_key_settings(scope, ip_allowlist, drift_tolerance_ms)
    check_room_for_a_key(account)
    secret = secrets.token_hex(SECRET_BYTES)
    key = ApiKey.objects.create(
        account=account,
        public_id=public_id_prefix() + secrets.token_hex(12),
        label=label,
        scope=scope,
        secret_ciphertext=encrypt_secret(secret),
        ip_allowlist=ip_allowlist,
        drift_tolerance_ms=drift_tolerance_ms,
    )
    return key, secret


@transaction.atomic
def update_api_key(key: ApiKey, *, label: str, scope: str, ip_allowlist: list[str], drift_tolerance_ms: int) -> ApiKey:
    ip_allowlist = normalize_allowlist(ip_allowlist)
    check_key_settings(scope, ip_allowlist, drift_tolerance_ms)
    key.label, key.scope, key.ip_allowlist, key.drift_tolerance_ms = label, scope, ip_allowlist, drift_tolerance_ms
    key.save(update_fields=["label", "scope", "ip_allowlist", "drift_tolerance_ms"])
    return key


@transaction.atomic
def revoke_api_keys(keys) -> int:
    live = list(keys.filter(revoked_at__isnull=True).values_list("public_id", flat=True))
    revoked = ApiKey.objects.filter(public_id__in=live, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key_cache.forget_keys(live)  # a queryset update sends no post_save
    return revoked


def ip_allowed(key: ApiKey, address: str) -> bool:
    """An empty allowlist allows every address (not permitted for keys that can withdraw)."""
    if not key.ip_allowlist:
        return True
    ip = parse_address(address)
    return ip is not None and any(ip in parse_network(entry) for entry in key.ip_allowlist)


def prehash(timestamp: str, nonce: str, method: str, path: str, body: bytes) -> bytes:
    """SPEC section 3: timestamp, nonce, METHOD, path with query, raw body, joined by newlines."""
    return b"\n".join([timestamp.encode(), nonce.encode(), method.upper().encode(), path.encode(), body])


def sign(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, sha256).hexdigest()
