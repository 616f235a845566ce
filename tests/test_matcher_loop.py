"""The Celery matcher as one long-lived loop per pair (``trading.dispatch.serve``), run here in a thread as
its worker runs it: woken through the pair's wake-up list in Redis, finding by its poll what a lost
wake-up left queued, retrying a failed drain without holding back a new wake-up; and two writers of one
pair never both committing a batch."""

import gc
import threading
import time
import weakref
from contextlib import contextmanager
from decimal import Decimal

import pytest
import redis.exceptions
from django.conf import settings as django_settings
from django.db import OperationalError, connections

from exchange.redis import get_redis
from trading import dispatch, matcher, pipeline, services
from trading.audit import audit
from trading.backends import CeleryMatchers
from trading.matcher import PairMatcher
from trading.models import MatcherCommand, Order, Trade
from trading.orders import OrderRequest
from trading.pipeline import StaleBook

from .processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
needs_redis = pytest.mark.skipif(not django_settings.REDIS_URL, reason="the loop waits on Redis")

PAIR = "BTC-USD"


def place(account, side: str = "buy", pair: str = PAIR) -> None:
    services.place_order(account, OrderRequest(pair=pair, side=side, type="limit", price=Decimal("3000"),
                                               size=Decimal("0.01")))


def statuses() -> set[str]:
    return set(Order.objects.values_list("status", flat=True))


@pytest.fixture
def celery_matchers(settings, monkeypatch):
    """Celery mode, no wake-up left in Redis by another test; ``drained`` is set after each drain the
    loop tried (whether it worked or failed)."""
    settings.MATCHER_BACKEND = "trading.backends.CeleryMatchers"
    while CeleryMatchers().wait_for_wake_up([PAIR], 0.01):
        pass
    drained = threading.Event()
    run_matcher = dispatch.run_matcher

    def recorded(pair):
        try:
            return run_matcher(pair)
        finally:
            drained.set()

    monkeypatch.setattr(dispatch, "run_matcher", recorded)
    return drained


@contextmanager
def serving(pairs=(PAIR,)):
    loops = dispatch.MatcherLoops(list(pairs))
    loops.start()
    try:
        yield
    finally:
        loops.stop()


@needs_redis
def test_a_restarted_loop_first_drains_what_was_queued_while_it_was_down(celery_matchers, alice, monkeypatch):
    monkeypatch.setattr(dispatch, "POLL_SECONDS", 3600.0)
    with monkeypatch.context() as down:  # no loop ran: no one woken (stopping the loop below wakes its waiter)
        down.setattr(CeleryMatchers, "queue_wake_up", lambda self, pair: None)
        place(alice)
    assert statuses() == {Order.Status.PENDING}

    with serving():
        wait_until(lambda: statuses() == {Order.Status.OPEN}, timeout=30)

    assert MatcherCommand.objects.count() == 0


@needs_redis
def test_a_commit_wakes_its_pairs_loop_among_the_workers_loops(celery_matchers, alice, monkeypatch):
    monkeypatch.setattr(dispatch, "POLL_SECONDS", 3600.0)  # only the wake-ups can bring the orders in
    with serving([PAIR, "ETH-USD", "ETH-BTC"]):
        assert celery_matchers.wait(30)
        place(alice)
        place(alice, pair="ETH-USD")
        wait_until(lambda: statuses() == {Order.Status.OPEN}, timeout=30)

    assert MatcherCommand.objects.count() == 0


@needs_redis
def test_a_lost_wake_up_is_found_by_the_poll(celery_matchers, alice, monkeypatch):
    monkeypatch.setattr(dispatch, "POLL_SECONDS", 0.2)
    monkeypatch.setattr(CeleryMatchers, "queue_wake_up", lambda self, pair: None)  # every wake-up is lost
    with serving():
        assert celery_matchers.wait(30)  # past its first drain, which found nothing
        place(alice)
        wait_until(lambda: statuses() == {Order.Status.OPEN}, timeout=30)

    assert MatcherCommand.objects.count() == 0


@needs_redis
def test_a_failed_drain_backs_off_but_a_new_wake_up_drains_at_once(celery_matchers, alice, monkeypatch):
    monkeypatch.setattr(dispatch, "RETRY_SECONDS", 3600.0)  # the back-off never ends within this test
    monkeypatch.setattr(dispatch, "POLL_SECONDS", 3600.0)
    drain, failures = PairMatcher.drain, iter(range(1))

    def database_restarting(self):
        if next(failures, None) is not None:
            raise OperationalError("the database system is starting up")
        return drain(self)

    monkeypatch.setattr(PairMatcher, "drain", database_restarting)
    with serving():
        assert celery_matchers.wait(30)  # its first drain failed; it backs off
        place(alice)
        wait_until(lambda: statuses() == {Order.Status.OPEN}, timeout=30)


def test_two_writers_of_one_pair_never_both_commit_a_batch(alice, bob, monkeypatch):
    """Two matchers of one pair (two workers overlapping in a deploy), each with its own book, draining the
    same queue at once in small batches: every command is matched once, the books balance."""
    monkeypatch.setattr(dispatch, "wake_matcher", lambda pair: None)  # the two below drain it
    for _ in range(20):
        place(alice, "sell")
        place(bob, "buy")
    monkeypatch.setattr(pipeline, "FIRST_BATCH_SIZE", 3)
    monkeypatch.setattr(matcher, "BATCH_SIZE", 3)

    def writer():
        own = PairMatcher(PAIR)
        try:
            while MatcherCommand.objects.exists():
                try:
                    own.drain()
                except StaleBook:
                    pass  # the other one committed in between, twice: this one rebuilds and goes on
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert statuses() == {Order.Status.FILLED}
    assert Trade.objects.count() == 20
    assert audit() == []


def test_the_poll_names_the_pairs_with_queued_commands_and_no_other(alice, markets, monkeypatch):
    monkeypatch.setattr(dispatch, "wake_matcher", lambda pair: None)  # the order stays queued
    place(alice)
    loops = dispatch.MatcherLoops([PAIR, "ETH-USD", "ETH-BTC"])

    assert loops.queued_pairs() == [PAIR]
    assert loops.queued_pairs() == [PAIR]  # the compiled statement, run again


@needs_redis
def test_an_idle_loop_closes_its_connection_and_still_drains_the_next_wake_up(celery_matchers, alice, monkeypatch):
    monkeypatch.setattr(dispatch, "IDLE_SECONDS", 0.2)
    closed = threading.Event()
    close_all = connections.close_all

    def recorded():
        closed.set()
        close_all()

    monkeypatch.setattr(connections, "close_all", recorded)
    with serving():
        assert celery_matchers.wait(30)  # past its first drain
        assert closed.wait(30)
        place(alice)
        wait_until(lambda: statuses() == {Order.Status.OPEN}, timeout=30)

    assert MatcherCommand.objects.count() == 0


class Cycle:
    """An object that refers to itself: only the cyclic collector frees it."""

    def __init__(self):
        self.itself = self


@needs_redis
def test_while_loops_run_the_heap_is_collected_whole_by_their_waiter_not_by_the_collector(celery_matchers, markets,
                                                                                           monkeypatch):
    monkeypatch.setattr(dispatch, "POLL_SECONDS", 0.2)
    monkeypatch.setattr(dispatch, "FULL_COLLECTION_SECONDS", 3600.0)
    thresholds = gc.get_threshold()
    freed = threading.Event()
    with serving():
        assert celery_matchers.wait(30)  # past its first drain, whose book load froze the heap of then
        gc.collect()  # the heap the collector's own rule (a full pass once it grows by a quarter) counts from
        cycle = Cycle()
        weakref.finalize(cycle, freed.set)
        gc.collect(1)  # it survives the young generations: now in the oldest
        del cycle
        # Survivors enough for that rule, made through young collections by the hundred.
        grown = [[] for _ in range(max(len(gc.get_objects()), 200_000))]
        assert not freed.is_set()
        del grown

        monkeypatch.setattr(dispatch, "FULL_COLLECTION_SECONDS", 0.0)
        assert freed.wait(30)  # the waiter's pass, at its next poll

    assert gc.get_threshold() == thresholds


@needs_redis
def test_a_lost_wake_up_is_found_by_the_poll_while_another_pair_of_the_worker_is_busy(celery_matchers, alice,
                                                                                      monkeypatch):
    monkeypatch.setattr(dispatch, "POLL_SECONDS", 0.3)
    queue_wake_up = CeleryMatchers.queue_wake_up
    # ETH-USD's wake-ups are lost (a web process killed after its commit); BTC-USD's arrive, every 0.1 s.
    monkeypatch.setattr(CeleryMatchers, "queue_wake_up",
                        lambda self, pair: None if pair == "ETH-USD" else queue_wake_up(self, pair))
    quiet = threading.Event()

    def busy_pair():
        while not quiet.wait(0.1):
            queue_wake_up(CeleryMatchers(), PAIR)

    with serving([PAIR, "ETH-USD"]):
        assert celery_matchers.wait(30)
        busy = threading.Thread(target=busy_pair)
        busy.start()
        try:
            place(alice, pair="ETH-USD")
            wait_until(lambda: statuses() == {Order.Status.OPEN}, timeout=30)
        finally:
            quiet.set()
            busy.join()

    assert MatcherCommand.objects.count() == 0


@needs_redis
def test_the_poll_does_not_cut_short_the_back_off_of_a_drain_that_keeps_failing(celery_matchers, alice, monkeypatch):
    monkeypatch.setattr(dispatch, "RETRY_SECONDS", 3600.0)  # the back-off never ends within this test
    monkeypatch.setattr(dispatch, "POLL_SECONDS", 0.1)
    monkeypatch.setattr(CeleryMatchers, "queue_wake_up", lambda self, pair: None)  # no commit wakes it
    drains = []

    def failing(self):
        drains.append(self.pair)
        raise ValueError("a command no drain can match")

    monkeypatch.setattr(PairMatcher, "drain", failing)
    place(alice)  # queued, and found by every poll
    with serving():
        assert celery_matchers.wait(30)  # its first drain failed: it backs off
        polled = threading.Event()
        queued_pairs = dispatch.MatcherLoops.queued_pairs

        def counted(loops):
            polled.set()
            return queued_pairs(loops)

        monkeypatch.setattr(dispatch.MatcherLoops, "queued_pairs", counted)
        for _ in range(5):  # five polls that found the command queued
            polled.clear()
            assert polled.wait(30)

    assert drains == [PAIR]
    assert MatcherCommand.objects.count() == 1


class Finalized:
    pass


def test_a_rebuild_frees_the_garbage_of_before_rather_than_freezing_it(alice, bob, monkeypatch):
    """A failed drain leaves cyclic garbage (its error's traceback holds the frames that hold its batch); the
    book's rebuild freezes what lives, which the collector then never walks again."""
    monkeypatch.setattr(dispatch, "wake_matcher", lambda pair: None)
    place(alice)
    matcher = PairMatcher(PAIR)
    matcher.drain()  # its book loaded
    place(bob, side="sell")
    freed = threading.Event()
    gc.disable()  # nothing collected behind the test's back: only the rebuild's own doing counts
    try:
        garbage = [Finalized()]  # what a failed drain leaves
        garbage.append(garbage)
        weakref.finalize(garbage[0], freed.set)
        del garbage
        matcher.book = None  # as after that failure: rebuilt before the next batch
        matcher.drain()
        gc.collect()  # the waiter's full pass
    finally:
        gc.enable()
    assert Order.objects.filter(side="sell").get().status == Order.Status.FILLED  # rebuilt, then matched
    assert freed.is_set()


def test_the_waiters_wait_on_a_hung_redis_ends_soon_after_the_wait_would_have(settings):
    """A Redis that takes connections and answers nothing (stopped, not down): the waiter must get back to its
    poll of the database, not sit out the longest wait a client allows (WAIT_SECONDS_MAX)."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    settings.REDIS_CLIENT = {**settings.REDIS_CLIENT, "url": f"redis://127.0.0.1:{server.getsockname()[1]}/0"}
    started = time.monotonic()
    try:
        with pytest.raises(redis.exceptions.TimeoutError):
            CeleryMatchers().wait_for_wake_up([PAIR], 0.2)
    finally:
        server.close()
    assert accepted  # it did connect, and heard nothing
    # Its socket timeout: the wait rounded up to a second, and the slack (not WAIT_SECONDS_MAX); a second of margin.
    assert time.monotonic() - started < 1 + CeleryMatchers.WAIT_SLACK_SECONDS + 1


@needs_redis
def test_a_pair_woken_between_every_two_waits_does_not_keep_another_pairs_wake_up_waiting():
    """One worker's waiter, its first pair busy (a wake-up comes before each wait): the other pair's
    wake-up is taken by the next wait all the same."""
    pairs = ["BTC-USD", "ETH-USD"]
    matchers = CeleryMatchers()
    for pair in pairs:
        get_redis().delete(matchers.wake_key(pair))
    matchers.queue_wake_up("ETH-USD")
    taken = []
    for _ in range(2):
        matchers.queue_wake_up("BTC-USD")
        taken.append(matchers.wait_for_wake_up(pairs, 0.1))

    assert "ETH-USD" in taken
