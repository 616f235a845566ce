"""After a commit that changed an account's balances outside its orders, the account's private
`balances` channel is told (trading.signals.balances_changed; marketdata publishes it)."""

from django.db import transaction

from trading.signals import balances_changed


def announce_balances(account_id: int) -> None:
    """On commit; a channel layer that is down only loses the push, never the committed change."""
    transaction.on_commit(lambda: balances_changed.send(announce_balances, account_id=account_id), robust=True)
