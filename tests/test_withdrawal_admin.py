"""Operators in the admin: the withdrawal review queue (bulk approve and reject, mark sent with the
transaction id), its history, the permissions it needs, and the per-asset wallet settings."""

from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.services import fee_account
from trading.audit import audit
from trading.models import Asset
from wallets.models import AssetWalletSettings, Withdrawal
from wallets.deposits import credit_deposit
from wallets.withdrawals import add_address, approve_withdrawal, cancel_withdrawal, reject_withdrawal

from .conftest import balance_of
from .test_withdrawals import ADDRESS, ask, btc, no_waiting, spot, trader, written  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db
QUEUE = "/admin/wallets/withdrawal/"
ADD_SETTINGS = "/admin/wallets/assetwalletsettings/add/"


def operator(*permissions: str, username="olga") -> Client:
    """A logged-in staff member with the wallets permissions named."""
    user = get_user_model().objects.create_user(username, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="wallets", codename__in=permissions))
    client = Client()
    client.force_login(user)
    return client


def run_action(client, action: str, withdrawals, **fields):
    return client.post(QUEUE, {"action": action, "_selected_action": [str(w.pk) for w in withdrawals], **fields})


def history(withdrawal) -> list[str]:
    return [entry.get_change_message() for entry in LogEntry.objects.filter(
        content_type__model="withdrawal", object_id=str(withdrawal.pk)).order_by("pk")]


def statuses(*withdrawals) -> list[str]:
    return [Withdrawal.objects.get(pk=withdrawal.pk).status for withdrawal in withdrawals]


def test_the_queue_shows_what_waits_for_an_operator_first(trader):
    done, first, second, approved = ask(trader, "0.1"), ask(trader, "0.1"), ask(trader, "0.1"), ask(trader, "0.1")
    reject_withdrawal(done.pk, "op")
    approve_withdrawal(approved.pk, "op")

    response = operator("view_withdrawal").get(QUEUE)
    pending = operator("view_withdrawal", username="other").get(f"{QUEUE}?status__exact=pending_review")

    assert response.status_code == 200
    assert [w.pk for w in response.context["cl"].result_list] == [first.pk, second.pk, approved.pk, done.pk]
    assert [w.pk for w in pending.context["cl"].result_list] == [first.pk, second.pk]


def test_bulk_approve_approves_the_pending_ones_logs_each_and_leaves_the_rest(trader):
    first, second, cancelled = ask(trader, "0.1"), ask(trader, "0.2"), ask(trader, "0.3")
    cancel_withdrawal(trader, cancelled.pk)
    before = spot(trader)

    response = run_action(operator("view_withdrawal", "review_withdrawal"), "approve_selected",
                          [first, second, cancelled])

    assert response.status_code == 302
    assert statuses(first, second, cancelled) == ["approved", "approved", "cancelled"]
    assert Withdrawal.objects.get(pk=first.pk).reviewed_by == "olga"
    assert history(first) == history(second) == ["Approved."] and history(cancelled) == []
    assert spot(trader) == before  # approval moves no money
    assert audit() == []


def test_bulk_reject_releases_the_holds(trader):
    pending, approved = ask(trader, "0.1"), ask(trader, "0.2")
    approve_withdrawal(approved.pk, "op")

    run_action(operator("view_withdrawal", "review_withdrawal"), "reject_selected", [pending, approved])

    assert statuses(pending, approved) == ["rejected", "rejected"]
    assert history(pending) == history(approved) == ["Rejected."]
    assert spot(trader) == (Decimal(2), 0)
    assert audit() == []


def test_mark_sent_asks_for_the_transaction_id_then_settles(trader):
    fees = fee_account()
    withdrawal, pending = ask(trader, "0.5"), ask(trader, "0.1")
    approve_withdrawal(withdrawal.pk, "olga")
    client = operator("view_withdrawal", "send_withdrawal", username="sam")
    before = written()

    asked = run_action(client, "mark_sent_selected", [withdrawal])

    assert asked.status_code == 200 and 'name="tx_id"' in asked.content.decode()
    assert ADDRESS in asked.content.decode()
    assert written() == before

    refused = run_action(client, "mark_sent_selected", [withdrawal], apply="Mark sent", tx_id="has a space")

    assert refused.status_code == 200 and refused.context["form"].errors["tx_id"]
    assert written() == before

    done = run_action(client, "mark_sent_selected", [withdrawal, pending], apply="Mark sent", tx_id="0xfeed")

    assert done.status_code == 302
    sent = Withdrawal.objects.get(pk=withdrawal.pk)
    assert (sent.status, sent.tx_id, sent.sent_by, sent.reviewed_by) == ("sent", "0xfeed", "sam", "olga")
    assert statuses(pending) == ["pending_review"] and history(pending) == []
    assert history(withdrawal) == ["Marked sent in 0xfeed."]
    assert spot(trader) == (Decimal("1.399"), Decimal("0.1005"))  # 2 - 0.5005 sent - 0.1005 held
    assert balance_of(fees, "BTC").available == Decimal("0.0005")
    assert audit() == []


def test_an_operator_without_the_permission_cannot_move_a_withdrawal(trader):
    withdrawal = ask(trader)
    approved = ask(trader, "0.1")
    approve_withdrawal(approved.pk, "op")
    viewer, reviewer = operator("view_withdrawal"), operator("view_withdrawal", "review_withdrawal", username="rita")
    before = written()

    for client, action, target in ((viewer, "approve_selected", withdrawal), (viewer, "reject_selected", withdrawal),
                                   (viewer, "mark_sent_selected", approved),
                                   (reviewer, "mark_sent_selected", approved)):
        run_action(client, action, [target], apply="Mark sent", tx_id="0xfeed")

    assert written() == before
    assert viewer.get(QUEUE).context["action_form"] is None  # no action it may take
    assert [name for name, _ in reviewer.get(QUEUE).context["action_form"].fields["action"].choices if name] == [
        "approve_selected", "reject_selected"]
    assert client_cannot_change(viewer, withdrawal)


def client_cannot_change(client, withdrawal) -> bool:
    page = client.get(f"{QUEUE}{withdrawal.pk}/change/")
    return page.status_code == 200 and b'name="_save"' not in page.content


def test_operators_set_an_assets_wallet_settings_at_its_precision(markets):
    client = operator("add_assetwalletsettings", "change_assetwalletsettings", "view_assetwalletsettings")
    eth = Asset.objects.get(symbol="ETH")
    form = {"asset": eth.pk, "deposit_enabled": "on", "withdraw_enabled": "on", "withdraw_minimum": "0.01",
            "withdraw_fee": "0.002", "daily_withdrawal_limit": ""}

    # ETH has 8 places: 9 are refused by the settings, 19 by the amount field.
    refused = [client.post(ADD_SETTINGS, {**form, "withdraw_fee": fee})
               for fee in ("0.000000001", "0." + "0" * 18 + "1")]

    assert [response.status_code for response in refused] == [200, 200]
    assert all("decimal places" in str(response.context["adminform"].form.errors["withdraw_fee"])
               for response in refused)
    assert not AssetWalletSettings.objects.exists()

    made = client.post(ADD_SETTINGS, form)

    assert made.status_code == 302
    settings = AssetWalletSettings.of(eth)
    assert (settings.withdraw_fee, settings.withdraw_minimum, settings.daily_withdrawal_limit) == (
        Decimal("0.002"), Decimal("0.01"), None)


def test_the_address_book_and_tier_limits_pages_render(trader):
    client = operator("view_withdrawaladdress", "view_tierwithdrawallimit", "add_tierwithdrawallimit")

    book = client.get("/admin/wallets/withdrawaladdress/")

    assert book.status_code == 200 and ADDRESS in book.content.decode()
    # Holders keep their own book, with their password, on the account pages.
    assert b"/admin/wallets/withdrawaladdress/add/" not in book.content
    assert client.get("/admin/wallets/tierwithdrawallimit/add/").status_code == 200


def test_end_to_end_a_deposit_is_withdrawn_through_the_admin_to_the_smallest_unit(make_account, btc, no_waiting,
                                                                                make_key):
    account = make_account("zoe")
    credit_deposit(account, btc, Decimal("1.00000001"), "tx-in", "custody")
    add_address(account, btc, ADDRESS)
    bot = make_key(account, scope="trade_withdraw", ip_allowlist=["127.0.0.1"])
    client = operator("view_withdrawal", "review_withdrawal", "send_withdrawal")

    created = bot.post("/v1/withdrawals", {"asset": "BTC", "amount": "0.99950001", "address": ADDRESS}).json()
    assert spot(account) == (0, Decimal("1.00000001"))
    run_action(client, "approve_selected", Withdrawal.objects.filter(pk=created["id"]))
    run_action(client, "mark_sent_selected", Withdrawal.objects.filter(pk=created["id"]), apply="1", tx_id="tx-out")

    assert bot.get(f"/v1/withdrawals/{created['id']}").json()["status"] == "sent"
    assert spot(account) == (0, 0)
    assert balance_of(fee_account(), "BTC").available == Decimal("0.0005")
    assert audit() == []
