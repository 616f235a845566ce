"""A connection's account events: a gap is reported lost only when its events do not arrive within the
grace period after the connection handled the event that showed the gap; a restarted numbering is
reported at once (marketdata.account_events)."""

from marketdata.account_events import GRACE_SECONDS, AccountEvents


def take(events: AccountEvents, number: int, handled_at: float = 0) -> dict | None:
    """The event received, then handled by the connection at ``handled_at``."""
    report = events.receive(number)
    events.handled(handled_at)
    return report


def test_events_in_order_report_nothing():
    events = AccountEvents()

    reports = [take(events, number) for number in (5, 6, 7)]

    assert reports == [None, None, None] and events.overdue(now=10) == []


def test_a_gap_is_reported_once_after_the_grace_period():
    events = AccountEvents()
    for number in (1, 2, 5):
        take(events, number)

    assert events.overdue(now=GRACE_SECONDS / 2) == []
    assert events.overdue(now=GRACE_SECONDS) == [{"expected": 3, "received": 5}]
    assert events.overdue(now=GRACE_SECONDS * 10) == []


def test_an_event_arriving_just_after_the_next_one_closes_its_gap_without_a_report():
    events = AccountEvents()
    for number in (1, 3, 2, 4):
        assert take(events, number) is None

    assert events.overdue(now=GRACE_SECONDS * 2) == []


def test_a_gap_partly_filled_is_still_reported():
    events = AccountEvents()
    for number in (1, 4, 2):
        take(events, number)

    assert events.overdue(now=GRACE_SECONDS) == [{"expected": 2, "received": 4}]


def test_an_event_arriving_after_its_report_is_taken_without_another():
    events = AccountEvents()
    for number in (1, 3):
        take(events, number)
    events.overdue(now=GRACE_SECONDS)

    assert take(events, 2) is None
    assert take(events, 4) is None and events.overdue(now=GRACE_SECONDS * 5) == []


def test_a_restarted_numbering_is_reported_at_once_and_followed_from_there():
    events = AccountEvents()
    for number in (10, 11):
        take(events, number)

    assert take(events, 1) == {"expected": 12, "received": 1}
    assert take(events, 2) is None and events.overdue(now=GRACE_SECONDS * 2) == []


def test_a_restarted_numbering_whose_first_events_arrive_out_of_order_is_reported_once():
    """The web process and the matcher publish for one account at once, just after Redis restarted."""
    events = AccountEvents()
    for number in (10, 11):
        take(events, number)

    assert take(events, 2) == {"expected": 12, "received": 2}
    assert take(events, 1) is None and take(events, 3) is None
    assert events.overdue(now=GRACE_SECONDS * 2) == []


def test_the_first_events_after_a_reset_may_arrive_out_of_order_without_a_report():
    """Redis came back (the outage was reported and the following reset) or a subscription began: the
    matcher's event for an account can cross the web process's, numbered just before it."""
    events = AccountEvents()
    take(events, 7)
    events.reset()

    assert take(events, 2) is None and take(events, 1) is None
    assert take(events, 3) is None and events.overdue(now=GRACE_SECONDS * 2) == []
    # Once it follows in order, a lower number is a restarted numbering again.
    events.reset()
    assert take(events, 5) is None and take(events, 6) is None
    assert take(events, 4) == {"expected": 7, "received": 4}


def test_reset_forgets_everything():
    events = AccountEvents()
    for number in (1, 5):
        take(events, number)
    events.reset()

    assert take(events, 9) is None and events.overdue(now=GRACE_SECONDS * 2) == []


def test_an_event_sent_twice_is_taken_without_a_report():
    events = AccountEvents()
    for number in (4, 5):
        take(events, number)

    assert events.repeats(5) and not events.repeats(4) and not events.repeats(6)
    assert take(events, 5) is None
    assert take(events, 6) is None and events.overdue(now=GRACE_SECONDS * 2) == []


def test_an_event_taken_late_and_sent_again_is_a_repeat_not_a_restarted_numbering():
    """7 (another publisher's) overtakes 6, whose send is then retried after a lost reply; likewise 2,
    crossing the first event followed."""
    events = AccountEvents()
    assert [take(events, number) for number in (5, 7, 6)] == [None, None, None]

    assert events.repeats(6) and take(events, 6) is None
    assert take(events, 8) is None and events.overdue(now=GRACE_SECONDS * 3) == []
    events.reset()
    assert take(events, 3) is None and take(events, 2) is None
    assert events.repeats(2) and take(events, 2) is None and take(events, 4) is None
    assert take(events, 1) == {"expected": 5, "received": 1}  # never taken: the numbering restarted


def test_the_grace_of_a_gap_starts_once_the_event_that_showed_it_is_handled():
    """Handling an event can take a while (its orders read from the database on a busy machine), with the
    missing one waiting behind it: that time is no part of the grace."""
    events = AccountEvents()
    take(events, 1)
    assert events.receive(3) is None

    assert events.overdue(now=GRACE_SECONDS * 5) == []  # still handling event 3
    events.handled(GRACE_SECONDS * 5)
    assert events.overdue(now=GRACE_SECONDS * 5.5) == []
    assert take(events, 2, handled_at=GRACE_SECONDS * 5.5) is None and events.overdue(now=GRACE_SECONDS * 10) == []


def test_a_gap_not_closed_within_the_grace_after_its_handling_is_reported():
    events = AccountEvents()
    take(events, 1)
    take(events, 3, handled_at=GRACE_SECONDS * 5)
    take(events, 4, handled_at=GRACE_SECONDS * 5.5)  # a later event's handling does not hold the report back

    assert events.overdue(now=GRACE_SECONDS * 5.5) == []
    assert events.overdue(now=GRACE_SECONDS * 6) == [{"expected": 2, "received": 3}]
