"""validate_internal_state: quiet on a sound book, loud on each kind of corruption.

The corruptions go through the book's own structures, as a bug in the engine
would, since no command can produce them.
"""

import pytest

from .helpers import book_with, cancel, limit, stop


def sound_book(engine):
    """Two bid and two ask levels, a lazily cancelled order and a waiting stop."""
    return book_with(
        limit(1, 'sell', 101, 2), limit(2, 'sell', 101, 3), limit(7, 'sell', 101, 1),
        limit(3, 'sell', 102, 1), limit(4, 'buy', 99, 5), limit(5, 'buy', 98, 1),
        stop(6, 'buy', 105, size=1), cancel(2), engine=engine)


def drift_level_size(book):
    book._ask_levels[-101].total += 1


def unindex_resting_order(book):
    del book._orders[4]


def unsort_bid_levels(book):
    book._bid_keys.reverse()


def drop_a_level_from_the_keys(book):
    book._ask_keys.remove(-102)


def rest_a_crossing_bid(book):
    book._rest(True, [8, 80, 1, 102])


def lose_a_stop_from_its_heap(book):
    book._above_stops.clear()


def miscount_cancelled_entries(book):
    book._ask_levels[-101].dead = 0


@pytest.mark.parametrize('corrupt, broken', [
    (drift_level_size, "ask level 101: size 4 is not the sum of its orders' remaining 3"),
    (unindex_resting_order, 'resting order 4 is not indexed'),
    (unsort_bid_levels, 'bid level keys are not strictly ascending'),
    (drop_a_level_from_the_keys, 'ask level keys are not exactly the levels holding size'),
    (rest_a_crossing_bid, 'book is crossed: bid 102 >= ask 101'),
    (lose_a_stop_from_its_heap, 'waiting stop 6 is missing from its trigger heap'),
    (miscount_cancelled_entries, 'ask level 101: 0 counted cancelled, 1 queued'),
])
def test_a_corrupted_book_fails_validation_naming_the_broken_invariant(engine, corrupt, broken):
    # given a book that validates
    book = sound_book(engine)
    book.validate_internal_state()
    # when a bug breaks one of its invariants
    corrupt(book)
    # then validation names it
    with pytest.raises(AssertionError, match=broken):
        book.validate_internal_state()


def test_an_orphaned_index_entry_fails_validation(engine):
    # given a book whose index still holds an order no level queues
    book = sound_book(engine)
    level = book._ask_levels[-102]
    level.orders.clear()
    level.total = 0
    book._ask_keys.remove(-102)
    # then validation reports the orphan
    with pytest.raises(AssertionError, match=r'indexed orders not on the book: \[3\]'):
        book.validate_internal_state()
