"""Money in, traded, and out again on the production topology: a custody script's deposit
(``manage.py credit_deposit``), a trade through gunicorn and a Celery matcher, the holder's address
book on the account pages, a signed withdrawal request, and an operator approving it and marking it
sent in the admin over HTTP, with every balance exact to the cent or satoshi at each step and each
change pushed on the holder's private ``balances`` channel by Daphne."""

import json
import time
from decimal import Decimal

import httpx
import pytest
from hkt_client import Client, errors
from hkt_client.signing import signed_headers
from websockets.sync.client import connect

from .processes import form_post, wait_until
from .stack import Stack

pytestmark = pytest.mark.slow
D = Decimal

WAITING_SECONDS = 4  # the address book's waiting period on this stack
HOLDER_PASSWORD = "holder-password-e2e"
OPERATOR = ("operator", "e2e-operator-password")  # seed_demo's operator, from the stack's environment


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    waiting_hours = str(WAITING_SECONDS / 3600)
    with Stack(tmp_path_factory.mktemp("wallets"), WITHDRAWAL_ADDRESS_WAITING_HOURS=waiting_hours) as stack:
        yield stack


def spot(client: Client, asset: str) -> dict:
    return next(row["spot"] for row in client.balances()["balances"] if row["asset"] == asset)


class BalancesChannel:
    """The holder's private ``balances`` channel on Daphne, read as a bot reads it."""

    def __init__(self, ws_url: str, key: dict):
        self.socket = connect(ws_url).__enter__()  # closed by the test
        headers = signed_headers(key["key"], key["secret"], "GET", "/v1/ws")
        self.socket.send(json.dumps({"op": "auth", "key": headers["X-Api-Key"], "timestamp": headers["X-Api-Timestamp"],
                                     "nonce": headers["X-Api-Nonce"], "signature": headers["X-Api-Signature"]}))
        self.socket.send(json.dumps({"op": "subscribe", "channels": [{"name": "balances"}]}))

    def spot_until(self, asset: str, expected: dict, timeout: float = 15) -> dict:
        """The first pushed spot balance of ``asset`` equal to ``expected``; fails if none comes in time."""
        deadline, seen = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            try:
                message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            except TimeoutError:
                break
            if message.get("type") != "balances":
                continue
            row = next((row["spot"] for row in message["balances"] if row["asset"] == asset), None)
            seen.append(row)
            if row == expected:
                return row
        raise AssertionError(f"no balances message with {asset} spot {expected}; saw {seen}")


def test_deposit_trade_withdraw_review_and_send_exact_at_every_step(stack):
    stack.start_matcher("BTC-USD")
    rest = stack.start_rest()
    ws_url = stack.start_daphne().replace("http://", "ws://") + "/v1/ws"
    holder_key = stack.create_trader("holder", scope="trade_withdraw", allow=("127.0.0.1",))
    seller_key = stack.create_trader("seller", "BTC=1")
    stack.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                 f"u = get_user_model().objects.get(username='holder'); u.set_password({HOLDER_PASSWORD!r}); u.save(); "
                 "from trading.models import Asset; from wallets.models import AssetWalletSettings; "
                 "AssetWalletSettings.objects.create(asset=Asset.objects.get(symbol='USD'), withdraw_fee='1.50', "
                 "withdraw_minimum='10.00')")
    holder = Client(rest, holder_key["key"], holder_key["secret"])
    seller = Client(rest, seller_key["key"], seller_key["secret"])
    channel = BalancesChannel(ws_url, holder_key)

    # 1. A custody system's script credits a deposit; crediting the same transaction again is refused.
    deposit = json.loads(stack.manage("credit_deposit", "holder", "USD", "1000.25", "bank-tx-1").splitlines()[-1])
    assert deposit["amount"] == "1000.25"
    with pytest.raises(RuntimeError, match="already credited"):
        stack.manage("credit_deposit", "holder", "USD", "1000.25", "bank-tx-1")
    assert spot(holder, "USD") == {"available": "1000.25", "locked": "0.00", "total": "1000.25"}
    channel.spot_until("USD", {"available": "1000.25", "locked": "0.00", "total": "1000.25"})
    assert [d["external_id"] for d in holder.deposits()["results"]] == ["bank-tx-1"]

    # 2. It buys 0.01 BTC at 63,000 from a resting ask: 630.00 USD, and a taker fee of 0.2 % in BTC.
    ask = seller.place_order("BTC-USD", "sell", "limit", price="63000", size="0.01")
    wait_until(lambda: seller.get_order(ask["order_id"])["status"] == "open")
    bid = holder.place_order("BTC-USD", "buy", "limit", price="63000", size="0.01")
    wait_until(lambda: holder.get_order(bid["order_id"])["status"] == "filled")
    assert spot(holder, "USD") == {"available": "370.25", "locked": "0.00", "total": "370.25"}
    assert spot(holder, "BTC") == {"available": "0.00998000", "locked": "0.00000000", "total": "0.00998000"}
    channel.spot_until("USD", {"available": "370.25", "locked": "0.00", "total": "370.25"})

    # 3. The holder adds an address on the account pages (asked for the password again); until its
    # waiting period is over it cannot be withdrawn to, and the refusal holds nothing.
    with httpx.Client(base_url=rest, timeout=10) as browser:
        form_post(browser, "/account/login/", {"username": "holder", "password": HOLDER_PASSWORD})
        added = form_post(browser, "/account/wallets/addresses/new/", {
            "asset": "USD", "address": "US00BANK0001", "label": "my bank", "password": HOLDER_PASSWORD})
    assert added.status_code == 200 and "US00BANK0001" in added.text
    with pytest.raises(errors.WithdrawalAddressNotYetUsable):
        holder.withdraw("USD", "300.00", "US00BANK0001")
    with pytest.raises(errors.WithdrawalAddressNotAllowed):
        holder.withdraw("USD", "300.00", "US00ELSEWHERE")
    assert spot(holder, "USD") == {"available": "370.25", "locked": "0.00", "total": "370.25"}

    # 4. Once usable: 300.00 plus the 1.50 fee are held; a retry with the same id is the same withdrawal.
    time.sleep(WAITING_SECONDS)
    request = wait_until(lambda: try_withdraw(holder, "300.00", "US00BANK0001", "payout-1"), timeout=10)
    assert (request["status"], request["amount"], request["fee"]) == ("pending_review", "300.00", "1.50")
    assert holder.withdraw("USD", "300.00", "US00BANK0001", client_withdrawal_id="payout-1")["id"] == request["id"]
    assert spot(holder, "USD") == {"available": "68.75", "locked": "301.50", "total": "370.25"}
    channel.spot_until("USD", {"available": "68.75", "locked": "301.50", "total": "370.25"})

    # 5. The operator approves it in the admin, then marks it sent with the network's transaction id.
    with httpx.Client(base_url=rest, timeout=10) as admin:
        form_post(admin, "/admin/login/?next=/admin/", {"username": OPERATOR[0], "password": OPERATOR[1]})
        queue = "/admin/wallets/withdrawal/"
        form_post(admin, queue, {"action": "approve_selected", "_selected_action": [request["id"]]})
        assert holder.get_withdrawal(request["id"])["status"] == "approved"
        assert spot(holder, "USD") == {"available": "68.75", "locked": "301.50", "total": "370.25"}
        form_post(admin, queue, {"action": "mark_sent_selected", "_selected_action": [request["id"]],
                                 "tx_id": "0xfeed01", "apply": "Mark sent"})
        history = admin.get(f"{queue}{request['id']}/history/").text
    sent = holder.get_withdrawal(request["id"])
    assert (sent["status"], sent["tx_id"]) == ("sent", "0xfeed01")
    assert "Approved." in history and "Marked sent in 0xfeed01." in history
    assert spot(holder, "USD") == {"available": "68.75", "locked": "0.00", "total": "68.75"}
    channel.spot_until("USD", {"available": "68.75", "locked": "0.00", "total": "68.75"})

    # The holder's ledger tells the whole story, newest first, each line with its bucket's balance after it.
    lines = [(e["kind"], e["bucket"], e["amount"], e["balance_after"])
             for e in holder.ledger(asset="USD", wallet="spot")["results"]]
    assert lines == [
        ("withdrawal_fee", "locked", "-1.50", "0.00"),
        ("withdrawal", "locked", "-300.00", "1.50"),
        ("withdrawal", "locked", "301.50", "301.50"),
        ("withdrawal", "available", "-301.50", "68.75"),
        ("trade", "locked", "-630.00", "0.00"),
        ("order_hold", "locked", "630.00", "630.00"),
        ("order_hold", "available", "-630.00", "370.25"),
        ("deposit", "available", "1000.25", "1000.25"),
    ]
    # The fee account has the withdrawal's fee and the seller's maker fee (0.1 % of 630.00, in USD).
    fees = json.loads(stack.manage("shell", "-c", (
        "import json; from accounts.services import fee_account; from trading.models import Balance; "
        "print(json.dumps({b.asset.symbol: str(b.available) for b in Balance.objects.filter(account=fee_account())}))"
    )).splitlines()[-1])
    assert {asset: Decimal(amount) for asset, amount in fees.items()} == {"USD": D("2.13"), "BTC": D("0.00002")}
    assert stack.audit()["problems"] == []
    channel.socket.close()


def try_withdraw(client: Client, amount: str, address: str, client_id: str) -> dict | None:
    """The withdrawal, or None while the address is still in its waiting period (clocks differ slightly)."""
    try:
        return client.withdraw("USD", amount, address, client_withdrawal_id=client_id)
    except errors.WithdrawalAddressNotYetUsable:
        return None
