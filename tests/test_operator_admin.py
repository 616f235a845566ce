"""The operator's view of each pair's matcher in the admin's market list: its queue of unprocessed commands, its
lag, its committed sequence and batches and its last batch time, beside the market's status and halt actions."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from trading import dispatch, services
from trading.models import BookState, Market, MatcherCommand
from trading.orders import OrderRequest

pytestmark = pytest.mark.django_db
D = Decimal
MARKETS_URL = "/admin/trading/market/"


def matcher_rows(admin_client) -> dict[str, dict[str, str]]:
    """The market list's columns, per pair, as rendered."""
    page = admin_client.get(MARKETS_URL).content.decode()
    columns = ["queue_depth", "lag", "sequence", "batches", "last_batch_at", "status"]
    rows = {}
    for row in re.findall(r"<tr>.*?</tr>", page, re.S):
        pair = re.search(r'<th class="field-pair">.*?>([A-Z]+-[A-Z]+)<', row, re.S)
        if pair:
            rows[pair.group(1)] = {name: re.search(rf'<td class="field-{name}[^"]*">(.*?)</td>', row, re.S).group(1)
                                   for name in columns}
    return rows


def place(account, price: str) -> None:
    """Accepted and queued; the pair's matcher does not run (the test's transaction never commits), as when
    its worker is stopped."""
    request = OrderRequest(pair="BTC-USD", side="sell", type="limit", price=D(price), size=D("0.1"))
    services.place_order(account, request)


def test_a_stopped_matchers_queue_and_lag_grow_and_drain_when_it_runs(admin_client, alice):
    place(alice, "63000")
    first = matcher_rows(admin_client)
    place(alice, "63001")
    place(alice, "63002")
    # The oldest command as if accepted a minute ago: the lag is its age, not the newest one's.
    MatcherCommand.objects.filter(pk=MatcherCommand.objects.order_by("pk").first().pk).update(
        queued_at=timezone.now() - timedelta(minutes=1))
    second = matcher_rows(admin_client)

    assert (first["BTC-USD"]["queue_depth"], second["BTC-USD"]["queue_depth"]) == ("1", "3")
    assert float(first["BTC-USD"]["lag"]) >= 0 and float(second["BTC-USD"]["lag"]) >= 60
    assert second["ETH-USD"]["queue_depth"] == "0" and second["ETH-USD"]["lag"] == "-"
    assert second["BTC-USD"]["sequence"] == second["BTC-USD"]["batches"] == "-"  # it has never committed a batch

    dispatch.run_matcher("BTC-USD")

    drained = matcher_rows(admin_client)["BTC-USD"]
    state = BookState.objects.get(market__pair="BTC-USD")
    assert (drained["queue_depth"], drained["lag"]) == ("0", "-")
    assert drained["sequence"] == str(state.sequence) and state.sequence > 0
    assert drained["batches"] == str(state.batches) == "1"
    assert state.last_batch_at is not None and drained["last_batch_at"] not in ("", "-")


def test_the_matcher_columns_cost_one_query_for_every_pair(admin_client, alice, django_assert_max_num_queries):
    for price in ("63000", "63001"):
        place(alice, price)
    admin_client.get(MARKETS_URL)  # the session and user, cached as on any later page

    with django_assert_max_num_queries(8) as queries:
        admin_client.get(MARKETS_URL)

    market_queries = [q["sql"] for q in queries.captured_queries if "trading_matchercommand" in q["sql"]]
    assert len(market_queries) == 1  # the rows with their queue and lag, in one statement


def test_the_halt_action_is_beside_the_matcher_columns(admin_client, markets):
    page = admin_client.get(MARKETS_URL).content.decode()
    assert 'value="halt"' in page and 'value="set_cancel_only"' in page

    admin_client.post(MARKETS_URL, {"action": "halt", "_selected_action": [markets["BTC-USD"].pk]})

    assert matcher_rows(admin_client)["BTC-USD"]["status"] == "Halted"
    assert Market.objects.get(pair="BTC-USD").status == "halted"
