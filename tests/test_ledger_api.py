"""GET /v1/account/ledger: every balance change with the balance of its bucket after it."""

from collections import defaultdict
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.errors import ExchangeError
from exchange.fields import to_milliseconds
from trading import dispatch, ledger, services
from trading.audit import audit
from trading.ledger import Bucket, Journal, Posting, Reason
from trading.models import Asset, Balance, LedgerEntry
from trading.orders import OrderRequest
from wallets.deposits import credit_deposit
from wallets.statements import KINDS
from wallets.transfers import TransferRequest, make_transfer

from .test_public_api import assert_error

pytestmark = pytest.mark.django_db
LEDGER = "/v1/account/ledger"
D = Decimal


def everything(client, query: str = "", limit: int = 1000) -> list[dict]:
    """Every entry the ledger lists for ``query``, following ``next`` from page to page."""
    response = client.get(f"{LEDGER}?limit={limit}{'&' if query else ''}{query}")
    assert response.status_code == 200, response.content
    entries = response.json()["results"]
    while response.json()["next"]:
        response = client.get(response.json()["next"].removeprefix("http://testserver"))
        assert response.status_code == 200, response.content
        entries += response.json()["results"]
    return entries


def running_sums(account) -> dict[int, Decimal]:
    """Each of the account's entries' bucket balance after it, summed from the first entry on."""
    total: dict[tuple, Decimal] = defaultdict(Decimal)
    after = {}
    for pk, asset, wallet, bucket, amount in LedgerEntry.objects.filter(account=account).order_by("id").values_list(
            "pk", "asset__symbol", "wallet", "bucket", "amount"):
        total[(asset, wallet, bucket)] += amount
        after[pk] = total[(asset, wallet, bucket)]
    return after


def bucket_totals(entries: list[dict]) -> dict[tuple, Decimal]:
    total: dict[tuple, Decimal] = defaultdict(Decimal)
    for entry in entries:
        total[(entry["asset"], entry["wallet"], entry["bucket"])] += D(entry["amount"])
    return total


def balances_of(account) -> dict[tuple, Decimal]:
    return {(balance.asset.symbol, balance.wallet, bucket): getattr(balance, bucket)
            for balance in Balance.objects.filter(account=account).select_related("asset")
            for bucket in ("available", "locked")}


def assert_reconciles(client, account, limit: int = 1000) -> list[dict]:
    """The listed entries are all of the account's, each bucket's add up to its balance, and each
    balance_after is the running sum from the first entry."""
    entries = everything(client, limit=limit)
    assert [entry["id"] for entry in entries] == list(
        LedgerEntry.objects.filter(account=account).order_by("-id").values_list("pk", flat=True))
    totals = bucket_totals(entries)
    assert {key: total for key, total in totals.items() if total} == {
        key: value for key, value in balances_of(account).items() if value}
    expected = running_sums(account)
    assert {entry["id"]: D(entry["balance_after"]) for entry in entries} == expected
    return entries


def match_all(pair: str = "BTC-USD") -> None:
    dispatch.matcher_for(pair).drain()


@pytest.fixture
def busy(funded, make_account, markets):
    """Carol and dave after deposits, transfers, and orders that held, traded (with fees finer than
    the assets' places) and were cancelled."""
    carol, dave = funded("carol", USD="100000"), make_account("dave")
    btc, usd = Asset.objects.get(symbol="BTC"), Asset.objects.get(symbol="USD")
    credit_deposit(dave, btc, D("2.5"), "tx-1", credited_by="test")
    credit_deposit(carol, usd, D("0.01"), "tx-2", credited_by="test")
    make_transfer(carol, TransferRequest("USD", D("250.50"), "spot", "margin"))
    make_transfer(carol, TransferRequest("USD", D("100"), "margin", "earn"))
    make_transfer(dave, TransferRequest("BTC", D("0.5"), "spot", "earn"))
    ask, _ = services.place_order(dave, request("sell", "60000.01", "1"))
    services.place_order(carol, request("buy", "60000.01", "0.12345678"))
    resting, _ = services.place_order(carol, request("buy", "59000", "0.2"))
    match_all()
    services.request_cancel(carol, resting.pk)
    services.request_cancel(dave, ask.pk)
    match_all()
    make_transfer(carol, TransferRequest("BTC", D("0.1"), "spot", "margin"))
    make_transfer(dave, TransferRequest("BTC", D("0.25"), "earn", "margin"))
    assert audit() == []
    return carol, dave


def request(side: str, price: str, size: str) -> OrderRequest:
    return OrderRequest("BTC-USD", side, "limit", price=D(price), size=D(size))


def test_every_wallets_entries_add_up_to_its_balance_and_each_balance_after_is_the_running_sum(busy, as_trader):
    carol, dave = busy

    for account in (carol, dave):
        entries = assert_reconciles(as_trader(account), account)
        kinds = {entry["kind"] for entry in entries}
        assert {"deposit", "transfer", "order_hold", "order_release", "trade", "fee"} <= kinds
        assert {entry["wallet"] for entry in entries} == {"spot", "margin", "earn"}


def test_an_entry_is_rendered_with_its_kind_bucket_and_exact_signed_amounts(busy, as_trader):
    carol, _ = busy
    entries = everything(as_trader(carol))

    transfer = next(e for e in entries if e["kind"] == "transfer" and e["wallet"] == "margin" and e["asset"] == "USD"
                    and e["amount"].startswith("-"))
    stored = LedgerEntry.objects.get(pk=transfer["id"])
    assert transfer == {"id": stored.pk, "time": to_milliseconds(stored.created_at), "asset": "USD",
                        "wallet": "margin", "bucket": "available", "kind": "transfer", "amount": "-100.00",
                        "balance_after": "150.50", "reference": stored.reference}
    # The fee on 0.12345678 BTC bought as taker (0.2 %) is finer than BTC's 8 places: never rounded.
    fee = next(e for e in entries if e["kind"] == "fee" and e["asset"] == "BTC")
    assert fee["amount"] == "-0.00024691356"
    assert all(len(e["amount"].partition(".")[2]) >= (2 if e["asset"] == "USD" else 8) for e in entries)


def test_pages_of_any_size_give_the_same_entries_and_balances_after(busy, as_trader):
    carol, _ = busy
    client = as_trader(carol)

    whole = everything(client)

    assert len(whole) > 12
    for limit in (1, 2, 5):
        assert everything(client, limit=limit) == whole


def test_oldest_first_pages_list_the_same_entries_and_balances_after_in_reverse(busy, as_trader):
    carol, _ = busy
    client = as_trader(carol)

    for query in ("", "kind=transfer", "asset=USD"):
        newest_first = everything(client, query)
        assert len(newest_first) > 1, query
        for limit in (1, 3, 1000):
            # The next link keeps sort=asc: each page newer than the one before, the last one empty of next.
            assert everything(client, f"sort=asc{'&' if query else ''}{query}", limit=limit) == newest_first[::-1]


def test_filters_list_their_entries_with_the_balance_after_of_the_whole_ledger(busy, as_trader):
    carol, _ = busy
    client = as_trader(carol)
    whole = {entry["id"]: entry for entry in everything(client)}

    for query, keeps in [
        ("asset=BTC", lambda e: e["asset"] == "BTC"),
        ("wallet=margin", lambda e: e["wallet"] == "margin"),
        ("asset=USD&wallet=spot", lambda e: e["asset"] == "USD" and e["wallet"] == "spot"),
        ("kind=transfer", lambda e: e["kind"] == "transfer"),
        ("kind=fee,order_release", lambda e: e["kind"] in ("fee", "order_release")),
        ("kind=deposit&asset=USD", lambda e: e["kind"] == "deposit" and e["asset"] == "USD"),
    ]:
        # Within a page and across pages, balance_after counts the entries the filter skips.
        for limit in (1, 3, 1000):
            listed = everything(client, query, limit=limit)
            assert listed == [entry for entry in whole.values() if keeps(entry)], (query, limit)
            assert listed, query


def test_time_filters_are_inclusive_then_exclusive(busy, as_trader):
    carol, _ = busy
    client = as_trader(carol)
    times = sorted({to_milliseconds(at) for at in LedgerEntry.objects.filter(account=carol).values_list(
        "created_at", flat=True)})
    middle = times[len(times) // 2]
    whole = everything(client)

    assert everything(client, f"start_time={middle}") == [e for e in whole if e["time"] >= middle]
    assert everything(client, f"end_time={middle}") == [e for e in whole if e["time"] < middle]
    assert everything(client, f"start_time={middle}&end_time={middle + 1}") == [
        e for e in whole if e["time"] == middle]


def test_the_kinds_are_the_contracts():
    assert sorted(KINDS) == sorted(["deposit", "withdrawal", "withdrawal_fee", "transfer", "order_hold",
                                    "order_release", "trade", "fee", "interest", "adjustment"])


def test_legacy_settlements_are_trades_and_testnet_money_is_a_deposit(funded, as_trader):
    carol = funded("carol", USD="10")
    usd = Asset.objects.get(symbol="USD")
    ledger.adjust_balance(account_id=carol.pk, asset_id=usd.pk, amount=D("5"), reference="sandbox:faucet",
                          memo="", reason=Reason.FAUCET)
    ledger.apply_journal(Journal(reason=Reason.SETTLEMENT, reference="legacy:1", postings=[
        Posting(carol.pk, usd.pk, D("-1"), Bucket.AVAILABLE), Posting(carol.pk, usd.pk, D("1"), Bucket.LOCKED)]))
    client = as_trader(carol)

    assert [(e["kind"], e["amount"]) for e in everything(client)] == [
        ("trade", "1.00"), ("trade", "-1.00"), ("deposit", "5.00"), ("adjustment", "10.00")]
    assert [e["reference"] for e in everything(client, "kind=trade")] == ["legacy:1", "legacy:1"]
    assert [e["reference"] for e in everything(client, "kind=deposit")] == ["sandbox:faucet"]
    assert_reconciles(client, carol)


def test_other_accounts_entries_are_never_listed(busy, as_trader, make_key):
    carol, dave = busy

    listed = {entry["id"] for entry in everything(make_key(carol, scope="read_only"))}

    assert listed == set(LedgerEntry.objects.filter(account=carol).values_list("pk", flat=True))
    assert not listed & set(LedgerEntry.objects.exclude(account=carol).values_list("pk", flat=True))
    assert LedgerEntry.objects.filter(account=dave).exists()


@pytest.mark.parametrize("query, field", [
    ("wallet=futures", "wallet"),
    ("wallet=Spot", "wallet"),
    ("kind=bogus", "kind"),
    ("kind=trade,bogus", "kind"),
    ("kind=settlement", "kind"),
    ("kind=", "kind"),
    ("kind=trade&kind=fee", "kind"),
    ("asset=DOGE", "asset"),
    ("start_time=abc", "start_time"),
    ("start_time=-1", "start_time"),
    ("start_time=10&end_time=9", "end_time"),
    ("bucket=locked", "bucket"),
    ("limit=0", "limit"),
    ("limit=1001", "limit"),
    ("sort=oldest", "sort"),
])
def test_a_bad_filter_is_refused_naming_it(busy, as_trader, query, field):
    carol, _ = busy

    response = as_trader(carol).get(f"{LEDGER}?{query}")

    assert_error(response, 400, "INVALID_PARAMETER")
    assert response.json()["error"]["details"] == {"parameter": field}, response.json()


def test_a_cursor_not_taken_from_next_is_refused(busy, as_trader):
    carol, _ = busy

    assert_error(as_trader(carol).get(f"{LEDGER}?cursor=bm9wZQ"), 400, "INVALID_PARAMETER")


def test_any_key_scope_reads_it_and_an_unsigned_request_is_refused(busy, make_key, api):
    carol, _ = busy

    for scope in ("read_only", "trade", "trade_withdraw"):
        assert make_key(carol, scope=scope, ip_allowlist=["127.0.0.1"]).get(LEDGER).status_code == 200
    assert_error(api.get(LEDGER), 401, "MISSING_AUTH_HEADERS")


def test_an_account_with_no_entries_has_an_empty_ledger(make_account, markets, as_trader):
    response = as_trader(make_account()).get(LEDGER)

    assert response.status_code == 200 and response.json()["results"] == []


def test_a_page_costs_the_same_queries_however_long_it_is(busy, as_trader):
    carol, _ = busy
    client = as_trader(carol)

    counts = []
    for query in ("limit=2", "limit=1000", "limit=3&kind=transfer"):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"{LEDGER}?{query}").status_code == 200
        counts.append(len(queries))

    assert len(set(counts)) == 1, counts


def test_the_rate_weight_is_five(busy, make_key):
    carol, _ = busy
    bot = make_key(carol)

    first = bot.get(LEDGER)
    second = bot.get(LEDGER)

    assert int(first["X-RateLimit-Remaining"]) - int(second["X-RateLimit-Remaining"]) == 5


deposits = st.decimals(min_value=D("0.01"), max_value=D("1000"), places=2)  # on every asset's grid
amounts = st.decimals(min_value=D("0.000000000000000001"), max_value=D("1000"), places=18)
steps = st.lists(st.one_of(
    st.tuples(st.just("deposit"), st.sampled_from(["USD", "BTC"]), deposits),
    st.tuples(st.sampled_from(["spot", "margin", "earn"]), st.sampled_from(["spot", "margin", "earn"]),
              st.sampled_from(["USD", "BTC"]), amounts),
), min_size=1, max_size=20)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps, limit=st.integers(1, 7))
def test_random_deposits_and_transfers_keep_balance_after_the_running_sum(make_account, markets, as_trader,
                                                                           steps, limit):
    account = make_account()
    for n, step in enumerate(steps):
        if step[0] == "deposit":
            _, symbol, amount = step
            credit_deposit(account, Asset.objects.get(symbol=symbol), amount, f"tx-{account.pk}-{n}",
                           credited_by="test")
        else:
            source, target, symbol, amount = step
            try:
                make_transfer(account, TransferRequest(symbol, amount, source, target))
            except ExchangeError as refused:  # to its own wallet, or short of funds: nothing written
                assert refused.code in ("INVALID_REQUEST", "INSUFFICIENT_FUNDS"), refused

    assert_reconciles(as_trader(account), account, limit=limit)
