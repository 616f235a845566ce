"""What trading announces for others to act on (marketdata publishes, dispatch replies): they connect
here, so that trading never imports them."""

from django.db import transaction
from django.dispatch import Signal

# A matcher batch committed: ``result`` (a trading.batch_writer.BatchResult). Sent after the commit,
# on the committing thread; a receiver must not raise.
batch_committed = Signal()
# A matcher's queue is empty: ``market``.
drain_finished = Signal()
# A matcher built a pair's book from the database: ``pair`` and the book's committed ``sequence``, from
# which the next delta follows (after a restore, book sequences are given out again).
book_loaded = Signal()
# Orders of one account changed outside the matcher (accepted): ``account_id``, ``order_ids``.
orders_changed = Signal()
# One account's balances changed outside orders (a deposit, a transfer): ``account_id``. Sent after
# the commit (announce_balances).
balances_changed = Signal()


def announce_balances(account_id: int) -> None:
    """After the commit, the account's private `balances` channel is told (marketdata publishes
    balances_changed); a channel layer that is down only loses the push, never the committed change."""
    transaction.on_commit(lambda: balances_changed.send(announce_balances, account_id=account_id), robust=True)
