"""What trading announces for others to act on (marketdata publishes, dispatch replies): they connect
here, so that trading never imports them."""

from django.dispatch import Signal

# A matcher batch committed: ``result`` (a trading.batch_writer.BatchResult). Sent after the commit,
# on the committing thread; a receiver must not raise.
batch_committed = Signal()
# A matcher's queue is empty: ``market``.
drain_finished = Signal()
# Orders of one account changed outside the matcher (accepted): ``account_id``, ``order_ids``.
orders_changed = Signal()
# One account's balances changed outside orders (a deposit, a transfer): ``account_id``. Sent after
# the commit.
balances_changed = Signal()
