"""A connection's account events: a gap is reported lost only when its events do not arrive within the
grace period; a restarted numbering is reported at once (marketdata.account_events)."""

from marketdata.account_events import GRACE_SECONDS, AccountEvents


def test_events_in_order_report_nothing():
    events = AccountEvents()

    reports = [events.receive(number, now=0) for number in (5, 6, 7)]

    assert reports == [None, None, None] and events.overdue(now=10) == []


def test_a_gap_is_reported_once_after_the_grace_period():
    events = AccountEvents()
    for number in (1, 2, 5):
        events.receive(number, now=0)

    assert events.overdue(now=GRACE_SECONDS / 2) == []
    assert events.overdue(now=GRACE_SECONDS) == [{"expected": 3, "received": 5}]
    assert events.overdue(now=GRACE_SECONDS * 10) == []


def test_an_event_arriving_just_after_the_next_one_closes_its_gap_without_a_report():
    events = AccountEvents()
    for number in (1, 3, 2, 4):
        assert events.receive(number, now=0) is None

    assert events.overdue(now=GRACE_SECONDS * 2) == []


def test_a_gap_partly_filled_is_still_reported():
    events = AccountEvents()
    for number in (1, 4, 2):
        events.receive(number, now=0)

    assert events.overdue(now=GRACE_SECONDS) == [{"expected": 2, "received": 4}]


def test_an_event_arriving_after_its_report_is_taken_without_another():
    events = AccountEvents()
    for number in (1, 3):
        events.receive(number, now=0)
    events.overdue(now=GRACE_SECONDS)

    assert events.receive(2, now=GRACE_SECONDS * 2) is None
    assert events.receive(4, now=GRACE_SECONDS * 2) is None and events.overdue(now=GRACE_SECONDS * 5) == []


def test_a_restarted_numbering_is_reported_at_once_and_followed_from_there():
    events = AccountEvents()
    for number in (10, 11):
        events.receive(number, now=0)

    assert events.receive(1, now=0) == {"expected": 12, "received": 1}
    assert events.receive(2, now=0) is None and events.overdue(now=GRACE_SECONDS * 2) == []


def test_a_restarted_numbering_whose_first_events_arrive_out_of_order_is_reported_once():
    """The web process and the matcher publish for one account at once, just after Redis restarted."""
    events = AccountEvents()
    for number in (10, 11):
        events.receive(number, now=0)

    assert events.receive(2, now=0) == {"expected": 12, "received": 2}
    assert events.receive(1, now=0) is None and events.receive(3, now=0) is None
    assert events.overdue(now=GRACE_SECONDS * 2) == []


def test_the_first_events_after_a_reset_may_arrive_out_of_order_without_a_report():
    """Redis came back (the outage was reported and the following reset) or a subscription began: the
    matcher's event for an account can cross the web process's, numbered just before it."""
    events = AccountEvents()
    events.receive(7, now=0)
    events.reset()

    assert events.receive(2, now=0) is None and events.receive(1, now=0) is None
    assert events.receive(3, now=0) is None and events.overdue(now=GRACE_SECONDS * 2) == []
    # Once it follows in order, a lower number is a restarted numbering again.
    events.reset()
    assert events.receive(5, now=0) is None and events.receive(6, now=0) is None
    assert events.receive(4, now=0) == {"expected": 7, "received": 4}


def test_reset_forgets_everything():
    events = AccountEvents()
    for number in (1, 5):
        events.receive(number, now=0)
    events.reset()

    assert events.receive(9, now=0) is None and events.overdue(now=GRACE_SECONDS * 2) == []


def test_an_event_sent_twice_is_taken_without_a_report():
    events = AccountEvents()
    for number in (4, 5):
        events.receive(number, now=0)

    assert events.repeats(5) and not events.repeats(4) and not events.repeats(6)
    assert events.receive(5, now=0) is None
    assert events.receive(6, now=0) is None and events.overdue(now=GRACE_SECONDS * 2) == []
