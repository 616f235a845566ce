"""Continuity of one connection's account events, numbered where they are published (marketdata.publishing).

The channel layer drops what a full channel cannot take without telling anyone, so a drop shows only
as a gap in the numbers. But two processes may publish for one account at the same instant (the web
accepting an order, the matcher filling it), so an event can also arrive just after the next one: a
gap is reported lost only when its events have not arrived within ``GRACE_SECONDS`` of the connection
having handled the event that showed it (a connection slow to handle that one, reading its orders from
the database on a busy machine, may well have the missing event waiting behind it). A number lower
than expected that was never missing means the numbering restarted (the counter was lost with
Redis): events may have been lost with it, and that is reported at once.
"""

from dataclasses import dataclass, field

GRACE_SECONDS = 1.0
LATE_EVENTS = 100  # how far back an event may still arrive late and be taken without a report


@dataclass
class Gap:
    expected: int
    received: int
    missing: set[int]
    handled_at: float | None = None  # when the event that showed the gap was handled: its grace starts then

    def report(self) -> dict:
        return {"expected": self.expected, "received": self.received}


@dataclass
class AccountEvents:
    last: int | None = None  # the number of the last event received in order
    gaps: list[Gap] = field(default_factory=list)  # noticed, not yet reported
    reported: set[int] = field(default_factory=set)  # reported lost, and may still arrive late
    # numbered before the first event followed, until the next in order: may arrive late, without a report
    crossing: set[int] = field(default_factory=set)
    # taken out of order (late, or crossing the first): sent again, each is a repeat as the last one is
    taken_late: set[int] = field(default_factory=set)

    def handled(self, now: float) -> None:
        """The connection has handled the event it received last: the grace of a gap it showed starts now."""
        for gap in self.gaps:
            if gap.handled_at is None:
                gap.handled_at = now

    def repeats(self, number: int) -> bool:
        """Whether ``number`` was taken already, the last event or one taken out of order: a send retried
        after a lost reply (trading.backends.Bus.send_in_order), whose changes the connection has already
        sent on."""
        return number == self.last or number in self.taken_late

    def receive(self, number: int) -> dict | None:
        """Take the event numbered ``number``; the report of a restarted numbering, else None."""
        if self.last is None:
            # Following starts here (a subscription, or the reset after a reported outage): an earlier event
            # arriving just after this one (another publisher's, crossing it) is no loss to this connection.
            self.last = number
            self.crossing = set(range(max(number - LATE_EVENTS, 1), number))
            return None
        expected = self.last + 1
        if number == expected:
            self.last = number
            if self.crossing:  # followed in order since: a lower number now means a restarted numbering
                self.crossing = set()
            return None
        if self.repeats(number):  # sent twice: a send retried after a lost reply (marketdata.publishing)
            return None
        if number in self.crossing:
            self.crossing.discard(number)
            self.take_late(number)
            return None
        if self.arrived_late(number):
            self.take_late(number)
            return None
        if number > expected:
            self.gaps.append(Gap(expected, number, set(range(max(expected, number - LATE_EVENTS), number))))
            self.last = number
            return None
        # A restarted numbering, followed afresh from here (its earlier events may still cross this one).
        self.reset()
        self.receive(number)
        return {"expected": expected, "received": number}

    def arrived_late(self, number: int) -> bool:
        for gap in self.gaps:
            if number in gap.missing:
                gap.missing.discard(number)
                if not gap.missing:
                    self.gaps.remove(gap)
                return True
        if number in self.reported:
            self.reported.discard(number)
            return True
        return False

    def take_late(self, number: int) -> None:
        self.taken_late.add(number)
        if len(self.taken_late) > LATE_EVENTS:  # those too far back to arrive again are forgotten
            self.taken_late = {taken for taken in self.taken_late if taken > self.last - LATE_EVENTS}

    def overdue(self, now: float) -> list[dict]:
        """The reports of the gaps whose events did not arrive within the grace period."""
        due = [gap for gap in self.gaps if gap.handled_at is not None and now - gap.handled_at >= GRACE_SECONDS]
        for gap in due:
            self.gaps.remove(gap)
            self.reported.update(gap.missing)
        if due and self.last is not None:
            self.reported = {number for number in self.reported if number > self.last - LATE_EVENTS}
        return [gap.report() for gap in due]

    def reset(self) -> None:
        self.last = None
        self.gaps.clear()
        self.reported.clear()
        self.crossing = set()
        self.taken_late = set()
