from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from accounts.services import open_account
from trading import ledger
from trading.demo import load_demo_markets
from trading.models import Asset, Balance, LedgerEntry, Market


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    """The production topology (tests/stack.py), shared by an end-to-end module's tests."""
    from .stack import Stack

    with Stack(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])) as stack:
        yield stack


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def markets(db) -> dict[str, Market]:
    return {market.pair: market for market in load_demo_markets()}


@pytest.fixture
def btc_usd(markets) -> Market:
    return markets["BTC-USD"]


@pytest.fixture
def make_account(db):
    counter = iter(range(1, 10_000))

    def make(username: str | None = None):
        # No password: hashing one costs a third of a second, and bots never log in with it.
        user = get_user_model().objects.create_user(username=username or f"trader{next(counter)}")
        return open_account(user)

    return make


@pytest.fixture
def fund(markets):
    """Credit an account through the ledger, as an operator's deposit would."""

    def fund(account, symbol: str, amount: str) -> None:
        asset = Asset.objects.get(symbol=symbol)
        ledger.adjust_balance(
            account_id=account.pk, asset_id=asset.pk, amount=Decimal(amount), reference="test:deposit", memo="fixture"
        )

    return fund


@pytest.fixture
def funded(make_account, fund):
    """An account with deposits, e.g. funded("alice", USD="100000", BTC="10")."""

    def funded(username: str, **deposits: str):
        account = make_account(username)
        for symbol, amount in deposits.items():
            fund(account, symbol, amount)
        return account

    return funded


def trader_fixture(username: str, **deposits: str):
    """A fixture named ``username``: that trader's account, funded with ``deposits``."""

    def trader(funded):
        return funded(username, **deposits)

    return pytest.fixture(trader, name=username)


alice = trader_fixture("alice", USD="100000", BTC="10")
bob = trader_fixture("bob", USD="100000", BTC="10")


def balance_of(account, symbol: str, wallet: str = "spot") -> Balance | None:
    return Balance.objects.filter(account=account, asset__symbol=symbol, wallet=wallet).first()


def ledger_snapshot() -> tuple:
    """Everything the ledger owns, to assert that a refused call wrote nothing."""
    return (
        sorted(Balance.objects.values_list("id", "available", "locked")),
        LedgerEntry.objects.count(),
    )


@pytest.fixture(autouse=True)
def matcher_in_process(settings):
    """Inside the test process the pair's matcher runs after each commit, in-process; the Celery
    worker path runs in the end-to-end tests, which start real workers (tests/stack.py)."""
    settings.MATCHER_BACKEND = "trading.backends.InProcessMatchers"


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Matchers keep books in memory, signed-request keys are cached in process, and budgets and
    nonces live in the cache (Redis in CI): each test starts afresh, as its database does."""
    from django.core.cache import cache

    from accounts import key_cache
    from exchange import ratelimit
    from marketdata import publishing, replay
    from trading import backends, dispatch, markets

    def forget_matchers_and_publishing():
        dispatch.reset()
        backends.reset()
        publishing.tickers.reset()
        publishing.candle_state.reset()

    forget_matchers_and_publishing()
    markets.recent_markets.reset()
    cache.clear()
    replay.buffer().reset()
    ratelimit.windows().reset()
    key_cache.reset()
    yield
    forget_matchers_and_publishing()


@pytest.fixture
def trade(db, django_capture_on_commit_callbacks):
    """Place an order as the API does and let the pair's matcher run after the commit, as it would."""
    from trading import services
    from trading.orders import OrderRequest

    def place(account, pair="BTC-USD", **fields):
        with django_capture_on_commit_callbacks(execute=True):
            order, _ = services.place_order(account, OrderRequest(pair=pair, **fields))
        order.refresh_from_db()
        return order

    return place


@pytest.fixture
def as_trader():
    """An API client signed in as an account (for tests that commit, so the matcher runs on commit)."""

    def client_for(account):
        client = APIClient()
        client.force_authenticate(user=account.user)
        return client

    return client_for


@pytest.fixture
def make_key(db):
    """A real API key (the secret is returned once, as on the key pages) and a client that signs with it."""
    from accounts.keys import create_api_key

    from .signing import SignedClient

    def make(account, scope="trade", ip_allowlist=(), drift_tolerance_ms=5000, remote_addr="127.0.0.1"):
        key, secret = create_api_key(account, label="bot", scope=scope, ip_allowlist=list(ip_allowlist),
                                     drift_tolerance_ms=drift_tolerance_ms)
        return SignedClient(key.public_id, secret, remote_addr=remote_addr)

    return make


@pytest.fixture
def announced():
    """The account ids whose balance changes are announced to their private channel (trading.signals
    .balances_changed, sent on commit), in order."""
    from trading.signals import balances_changed

    account_ids = []

    def receiver(sender, account_id, **kwargs):
        account_ids.append(account_id)

    balances_changed.connect(receiver)
    yield account_ids
    balances_changed.disconnect(receiver)
