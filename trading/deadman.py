"""The dead-man's switch (``POST /v1/orders/cancel-all-after``), as on Kraken and BitMEX: unless the
account refreshes it within its timeout, every live order of the account (or of one pair) is cancelled
through the matchers, as cancel-all does.

The trigger time is a row (DeadManSwitch), so it outlives any process. A watcher fires what is due:
``manage.py watch_dead_man_switches``, a program of its own in production (``bin/supervise``'s
``periodic`` role) and a child of ``bin/run-local`` beside the server in the embedded default, where
its cancels are matched in its own process, as ``manage.py wake_matchers`` does (the server's matcher
sees another writer's batch and reloads its book). Setting and firing lock the row: a refresh that
commits before the trigger time moves it, and the firing, which checks it again under the lock, finds
nothing due; a firing that commits first disarms it, and the refresh arms it afresh; a refresh (or a
disarm) that comes after the trigger time fires the switch first, whether a watcher got to it or not.
Two watchers racing fire a switch once.
"""

import logging
import threading
from datetime import datetime, timedelta

from django.db import close_old_connections, transaction
from django.utils import timezone

from trading import services
from trading.markets import access_market
from trading.models import DeadManSwitch, Order

logger = logging.getLogger(__name__)

MIN_TIMEOUT_MS = 1_000
MAX_TIMEOUT_MS = 600_000
POLL_SECONDS = 0.5  # how often the watcher looks for due switches: a switch fires within this of its time
FIRED_PER_LOOK = 100


def set_switch(account, timeout_ms: int, pair: str | None = None) -> tuple[DeadManSwitch, datetime]:
    """Arm (or refresh) the switch to fire ``timeout_ms`` from now, or disarm it with 0; returns it and
    the time it was set at. Disarming a switch never armed writes nothing. A switch whose time had come
    before this request fires first, whether the watcher got to it or not: a refresh or a disarm that
    comes too late saves no order."""
    market = access_market(pair) if pair is not None else None
    with services.committing(services.CANCELS_MAY_BE_REQUESTED) as commit:
        now = timezone.now()  # after any firing this waited for: the new timeout counts from here
        switch = DeadManSwitch.objects.select_for_update().filter(account=account, market=market).first()
        trigger_at = now + timedelta(milliseconds=timeout_ms) if timeout_ms else None
        if switch is None:
            if not timeout_ms:
                return DeadManSwitch(account=account, market=market, timeout_ms=0), now
            # Created, or updated if a request racing this one created it first.
            switch, _ = DeadManSwitch.objects.update_or_create(
                account=account, market=market, defaults={"timeout_ms": timeout_ms, "trigger_at": trigger_at})
            return switch, now
        if switch.trigger_at is not None and switch.trigger_at <= now:
            fire_locked(commit, switch, now)
        switch.timeout_ms, switch.trigger_at = timeout_ms, trigger_at
        switch.save(update_fields=["timeout_ms", "trigger_at", "updated_at"])
        return switch, now


def fire_due(now: datetime | None = None) -> int:
    """Fire the switches due at ``now`` (default: the current time), FIRED_PER_LOOK at most; returns how
    many fired."""
    now = now or timezone.now()
    due = DeadManSwitch.objects.filter(trigger_at__lte=now).order_by("trigger_at").values_list("pk", flat=True)
    return sum(fire(switch_id, now) is not None for switch_id in due[:FIRED_PER_LOOK])


def fire_all_due() -> int:
    """Fire every switch due now, FIRED_PER_LOOK at a time, until none due then is left (or another watcher
    took the rest); returns how many fired."""
    now, total = timezone.now(), 0
    while fired := fire_due(now):
        total += fired
    return total


def fire(switch_id: int, now: datetime) -> list[Order] | None:
    """Queue a cancel for each live order the switch covers and disarm it, in one transaction; None when it
    is no longer due (refreshed, disarmed or fired since it was read). Orders of a halted market are
    queued too: their cancels wait for it to resume, before anything accepted later."""
    with services.committing(services.CANCELS_MAY_BE_REQUESTED) as commit:
        switch = DeadManSwitch.objects.select_for_update().filter(pk=switch_id, trigger_at__lte=now).first()
        if switch is None:
            return None
        return fire_locked(commit, switch, now)


def fire_locked(commit: services.Commit, switch: DeadManSwitch, now: datetime) -> list[Order]:
    """In ``commit``'s transaction, the switch's row locked and due: queue the cancels and disarm it."""
    orders = Order.objects.filter(account_id=switch.account_id, status__in=Order.LIVE_STATUSES)
    if switch.market_id is not None:
        orders = orders.filter(market_id=switch.market_id)
    cancelled = services.queue_cancel_all(commit, orders)
    switch.trigger_at, switch.fired_at = None, now
    switch.save(update_fields=["trigger_at", "fired_at", "updated_at"])
    transaction.on_commit(lambda: logger.info("%s fired: cancels queued for %d orders", switch, len(cancelled)))
    return cancelled


def watch(stop: threading.Event) -> None:
    """Fire due switches every POLL_SECONDS until ``stop`` is set. A failure (the database restarting) is
    logged and the next look tries again: what is due stays due."""
    while not stop.is_set():
        close_old_connections()  # a connection the database dropped is opened afresh
        try:
            fire_due()
        except Exception:
            logger.exception("could not fire the dead-man's switches due; trying again")
        stop.wait(POLL_SECONDS)
