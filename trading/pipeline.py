"""A drain with each batch in its own transaction, and under a backlog, batch N written and committed on
a second thread and connection while batch N+1 is matched. The first batch is read, matched and
written in the transaction that locks the book: without a backlog, a drain is that one transaction.

A write is one pipeline of statements: its thread waits on the database while the matcher's thread
matches, and the two cores work at once. Each write checks, under the pair's lock, that it follows
the last committed batch, and refuses after a write of the drain that failed (``write_in_chain``), so
nothing commits on top of a batch that did not.
"""

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.db import connections, transaction

from trading.batch_writer import BatchResult, MatchedBatch
from trading.models import Market

# Batches matched ahead of the committed ones while draining (each one's write waits for the one before).
PIPELINE_DEPTH = 2
# A drain's first batch is smaller: nothing is being written while it is matched, so a smaller one
# sets the writer to work sooner and the orders at the head of a burst get their answers sooner.
FIRST_BATCH_SIZE = 500


class StaleBook(Exception):
    """The database holds batches this matcher's book does not (or lacks one it does)."""


class MarketHalted(Exception):
    """The market was halted while its backlog was being written: the rest waits for the resume."""


@dataclass
class WriteChain:
    """One drain's writes, in order: each one is matched on top of the one before it."""

    broken: bool = False


class Pipeline:
    """Drains one matcher (``trading.matcher.PairMatcher``) with its writes on a thread of their own."""

    def __init__(self, matcher):
        self.matcher = matcher
        self.executor: ThreadPoolExecutor | None = None

    def drain(self, batch_size: int) -> list[BatchResult]:
        matcher = self.matcher
        try:
            with transaction.atomic():
                state = matcher.lock_book()
                if state is None:
                    return []
                commands = matcher.queued_commands(state.market_id, limit=FIRST_BATCH_SIZE)
                if not commands:
                    return []
                results = [matcher.write(matcher.match(commands), state)]
        except BaseException:
            matcher.book = None  # memory may be ahead of the database: rebuild before the next batch
            raise
        if len(commands) < FIRST_BATCH_SIZE:
            # No backlog: one transaction and one read of the queue. A command that commits from now
            # on (or committed behind one with a higher id) wakes the matcher again.
            return results
        writes, writer, chain = deque(), None, WriteChain()
        try:
            while True:
                if writes and (len(writes) >= PIPELINE_DEPTH or writes[0][0].done()):
                    results.append(writes.popleft()[0].result())
                    continue
                commands = matcher.queued_commands(matcher.market.pk, [i for _, ids in writes for i in ids], batch_size)
                if not commands:
                    if not writes:
                        break
                    # A command that committed after later ones were taken is found once the writes end.
                    results.append(writes.popleft()[0].result())
                    continue
                matched = matcher.match(commands)
                if writes or len(commands) == batch_size:
                    writer = writer or self.writer()
                    writes.append((writer.submit(self.write_in_chain, chain, matched), matched.command_ids))
                else:
                    results.append(self.write_in_chain(chain, matched))  # no backlog: nothing to overlap
        except MarketHalted:
            self.abandon(writes)
        except BaseException:
            self.abandon(writes)
            raise
        finally:
            if writer is not None:
                # The writer's connection is opened per backlog, not kept idle between them.
                writer.submit(connections.close_all).result()
        return results

    def write_in_chain(self, chain: WriteChain, matched: MatchedBatch) -> BatchResult:
        """Write and commit a batch in its own transaction, unless a write before it in this drain
        failed or was refused: the batch was matched on top of that one. (The batch numbers alone
        would let it commit after another matcher's batch of the same number.)"""
        if chain.broken:
            raise StaleBook(f"{self.matcher.pair}: a write before batch {matched.number} failed")
        try:
            with transaction.atomic():
                state = self.matcher.lock_state()
                if state.status == Market.Status.HALTED:
                    raise MarketHalted(self.matcher.pair)
                return self.matcher.write(matched, state)
        except BaseException:
            chain.broken = True
            raise

    def abandon(self, writes: deque) -> None:
        """After a failure here or a failed or refused write: wait for the writes still queued (those
        behind a failed write refuse: see write_in_chain); the book in memory may be ahead of the
        database and is rebuilt."""
        for future, _ in writes:
            future.exception()
        self.matcher.book = None

    def writer(self) -> ThreadPoolExecutor:
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"matcher-writer-{self.matcher.pair}")
        return self.executor
