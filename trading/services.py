"""Trading services: each owns its transaction; the pair's matcher is woken only after commit."""

import functools
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from decimal import Decimal
from typing import TypeVar

from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import QuerySet

from exchange.errors import (OUTAGE_ERRORS, DuplicateClientOrderId, ErrorCode, ExchangeError, MarketHalted,
                             OrderAlreadyClosed, OrderNotFound, PostOnlyWouldTake, ServiceUnavailable, log_outage)
from exchange.money import AMOUNT_LIMIT, format_amount
from exchange.request_ids import current_request_id
from trading import dispatch, ledger
from trading.backends import store
from trading.markets import access_market
from trading.models import Asset, Balance, Market, MatcherCommand, Order, Wallet
from trading.orders import OrderRequest, check_against_market, hold_for, protection_price, stop_trigger
from trading.settlement import WRITTEN_ORDER_FIELDS
from trading.signals import orders_changed


def access_order(account, order_id: int, *, lock: bool = False) -> Order:
    orders = Order.objects.for_rendering()
    if lock:
        orders = orders.select_for_update(of=("self",))
    try:
        return orders.get(account=account, pk=order_id)
    except Order.DoesNotExist:
        raise OrderNotFound(order_id) from None


def access_order_by_client_id(account, client_order_id: str) -> Order:
    order = Order.objects.filter(account=account, client_order_id=client_order_id).only("pk").first()
    if order is None:
        raise OrderNotFound(client_order_id=client_order_id)
    return access_order(account, order.pk)


def existing_for_retry(account, request: OrderRequest) -> Order | None:
    """The order an earlier identical request made; DUPLICATE_CLIENT_ORDER_ID if the id was used otherwise."""
    if request.client_order_id is None:
        return None
    order = Order.objects.filter(account=account, client_order_id=request.client_order_id).first()
    if order is not None and order.request_digest != request.digest():
        raise DuplicateClientOrderId(request.client_order_id, order.pk)
    return order and access_order(account, order.pk)


class Commit:
    """What a transaction wrote that a client must be able to find, and the pairs to wake for it."""

    def __init__(self):
        self.details: dict | None = None
        self.pairs: Iterable[str] = ()

    def wrote(self, pairs: Iterable[str], *, wake: bool = True, **details) -> None:
        """The work is queued: its pairs' matchers are woken after the commit, or by the caller when not
        ``wake`` (or, should the commit fail in an outage, at once: see committing)."""
        self.pairs, self.details = list(pairs), details
        for pair in self.pairs if wake else ():
            transaction.on_commit(lambda pair=pair: dispatch.wake_matcher(pair))


@contextmanager
def committing(message: str):
    """A transaction that queues work for the matcher. Its body ends with ``commit.wrote(...)``; if
    the commit then fails in an outage, the work may be committed all the same (the connection can
    drop after the server committed it), so the answer is a 503 naming it (``message`` and the
    details), and the pairs are woken as the on_commit hooks the failure dropped would have."""
    commit = Commit()
    try:
        with transaction.atomic():
            yield commit
    except OUTAGE_ERRORS as error:
        if commit.details is None:
            raise
        log_outage("a commit", error)
        for pair in commit.pairs:
            dispatch.wake_matcher(pair)
        raise ServiceUnavailable(message, **commit.details) from error


logger = logging.getLogger(__name__)
T = TypeVar("T")

# PostgreSQL ends a deadlock by aborting one of its transactions (SQLSTATE 40P01), which wrote nothing; run
# again it goes through. A single create takes its order's unique index entry, then its balance row; a
# batch locks the balances first (trading.batch), so the two racing can meet so.
DEADLOCK_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
DEADLOCK_ATTEMPTS = 3


def retrying_deadlocks(run: Callable[[], T]) -> T:
    """``run()`` (which owns its transaction) again when the database aborted it to end a deadlock; not
    when it runs inside a caller's transaction, which the abort ended too."""
    attempt = 1
    while True:
        try:
            return run()
        except OperationalError as error:
            victim = getattr(error.__cause__, "sqlstate", None) in DEADLOCK_SQLSTATES
            if not victim or attempt == DEADLOCK_ATTEMPTS or connection.in_atomic_block:
                raise
            attempt += 1
            logger.warning("a deadlock aborted the transaction; running it again (attempt %d)", attempt)


def place_order(account, request: OrderRequest, *, wake: bool = True) -> tuple[Order, bool]:
    """Accept an order: check it, hold its funds, queue it for the pair's matcher, in one transaction,
    and wake the matcher after the commit (unless not ``wake``: then a created order's caller does).

    Returns (order, created). Repeating a request with the same client_order_id returns the first
    order with created=False, also when the two requests race (the unique index decides), and also
    when the repeat itself would now be refused (funds, market status): the lookup happens only then.
    """
    try:
        return retrying_deadlocks(lambda: do_place_order(account, request, wake)), True
    except ServiceUnavailable:
        raise  # the order may have been made; the lookup would meet the same outage
    except (ExchangeError, IntegrityError):
        existing = existing_for_retry(account, request)
        if existing is None:
            raise
        return existing, False


class MarketChanged(Exception):
    """The market row is no longer as the copy an order was checked against (status or grids)."""


class HoldShort(Exception):
    """The order was written but its hold was not made: (account id, asset id, amount)."""


def do_place_order(account, request: OrderRequest, wake: bool = True) -> Order:
    message = "The database failed while committing the order, which may have been placed: look it up by its id"
    with committing(message + (" or client_order_id." if request.client_order_id else ".")) as commit:
        order = write_order(account, request)
        commit.wrote([order.market.pair], wake=wake, order_id=order.pk, client_order_id=order.client_order_id)
        announce_orders(account, [order])
    return order


def write_order(account, request: OrderRequest) -> Order:
    """Check the order, write it with its matcher command and hold its funds, in the caller's transaction
    (which a refusal must roll back: the order is written when its hold is found short)."""
    try:
        try:
            order = accept(account, access_market(request.pair, recent=True), request)
        except (ExchangeError, MarketChanged):
            # This process's copy of the market may be out of date (halted, resumed, new grids since it
            # was read): judge the order again against the row, which stays as read until commit.
            order = accept(account, access_market(request.pair, lock=True), request)
    except HoldShort as short:
        ledger.refuse_hold(*short.args)
    return order


def announce_orders(account, orders: list[Order]) -> None:
    """After the commit, and after the matcher's wake-up (Commit.wrote, called first): a failed publish is
    only logged, since the orders are committed and the request must answer with them whatever the
    channel layer does."""
    order_ids = [order.pk for order in orders]
    transaction.on_commit(lambda: orders_changed.send(Order, account_id=account.pk, order_ids=order_ids), robust=True)


def accept(account, market: Market, request: OrderRequest) -> Order:
    """Check the order against ``market`` and write it with its matcher command (no hold yet)."""
    check_against_market(market, request)
    protection = protection_price(market, request)
    hold_asset_id, hold_amount = hold_for(market, request, protection)
    if hold_amount >= AMOUNT_LIMIT:  # price x size past what any balance (or the column) can hold: short
        raise HoldShort(account.pk, hold_asset_id, hold_amount)
    order = Order(
        account=account,
        market=market,
        client_order_id=request.client_order_id,
        request_digest=request.digest(),
        side=request.side,
        type=request.type,
        price=request.price,
        size=request.size,
        funds=request.funds,
        stop_price=request.stop_price,
        trigger=stop_trigger(request),
        protection_price=protection,
        time_in_force=request.time_in_force,
        post_only=request.post_only,
        stp=request.stp,
        hold_asset_id=hold_asset_id,
        hold_remaining=hold_amount,
    )
    insert_order(order)
    return order


MARKET_GRIDS = ("tick_size", "lot_size", "min_size", "min_notional")


def order_fields() -> list:
    return [field for field in Order._meta.concrete_fields if not field.primary_key]


def insert_order(order: Order) -> None:
    """INSERT the order and its NEW matcher command, and hold its funds, if its market row is still
    online with the grids of ``order.market``; raise MarketChanged, writing nothing, if not, and
    HoldShort when the available balance is short.

    The market may be a copy this process read a while ago: a halt or a grid change made by any
    process is seen here, in the statement that writes the order, rather than by reading the market
    again for every order.
    """
    market, fields = order.market, order_fields()
    params = [field.get_db_prep_save(field.pre_save(order, add=True), connection) for field in fields]
    params.append(market.pk)
    for name in MARKET_GRIDS:
        params.append(Market._meta.get_field(name).get_db_prep_save(getattr(market, name), connection))
    hold = (order.account_id, order.hold_asset_id, order.hold_remaining)
    order_id, held = store().insert_order(insert_order_sql(), fields, params, market.pk,
                                          functools.partial(ledger.hold_statement, *hold))
    if order_id is None:
        raise MarketChanged(market.pair)
    if not held:
        raise HoldShort(*hold)
    order.pk = order_id
    order._state.adding, order._state.db = False, connection.alias


@functools.cache
def insert_order_sql() -> str:
    """insert_order's statement, its SELECT's placeholders left to the store to fill. The status is
    written in (a constant): each parameter less counts (PostgresStore.insert_order)."""
    columns = ", ".join(connection.ops.quote_name(field.column) for field in order_fields())
    return (f"INSERT INTO trading_order ({columns}) SELECT {{placeholders}} FROM trading_market "
            f"WHERE id = %s AND status = '{Market.Status.ONLINE}' AND "
            f"{' AND '.join(f'{name} = %s' for name in MARKET_GRIDS)}")


WRITTEN_FIELDS = [Order._meta.get_field(name) for name in WRITTEN_ORDER_FIELDS]


def take_state(order: Order, state) -> Order:
    """The order with the state its matcher handed over (dispatch.wait_for_state); when its command
    changed nothing ([]: a cancel of an order that a batch before it closed), as its row is now; when
    none came (an outage, no answer in time), as committed: its fields as a read of the row gives them."""
    if state == []:
        order.refresh_from_db(fields=[field.attname for field in WRITTEN_FIELDS])
    elif state:
        for field, value in zip(WRITTEN_FIELDS, state):
            setattr(order, field.attname, field.to_python(value))
    else:
        for field in order_fields():  # the amounts' defaults are ints
            setattr(order, field.attname, field.to_python(getattr(order, field.attname)))
    return order


def still_live(state) -> bool:
    return state[0] in Order.LIVE_STATUSES


def waited_state(order_id: int, what: str, timeout: float = dispatch.REPLY_WAIT_SECONDS, done=None,
                 wake: str | None = None):
    """dispatch.wait_for_state (with ``wake``, a pair: dispatch.wake_and_wait_for_state, its matcher
    woken first), or None when an outage hides the answer: the work is committed, so the order as
    committed is the answer."""
    try:
        if wake is not None:
            return dispatch.wake_and_wait_for_state(wake, order_id, timeout)
        return dispatch.wait_for_state(order_id, timeout, done)
    except OUTAGE_ERRORS as error:
        log_outage(what, error)
        return None


def place_order_and_wait(account, request: OrderRequest) -> tuple[Order, bool]:
    """place_order, then the new order as its matcher left it (waiting up to REPLY_WAIT_SECONDS), or as
    accepted, ``pending``; a post-only order the matcher rejected is SPEC's POST_ONLY_WOULD_TAKE."""
    order, created = place_order(account, request, wake=False)
    if created:  # its matcher woken and waited for in one round trip
        take_state(order, waited_state(order.pk, f"the answer to order {order.pk}", wake=order.market.pair))
    refuse_rejected(order)
    return order, created


def refuse_rejected(order: Order) -> None:
    """A post-only order the matcher rejected is reported as SPEC's POST_ONLY_WOULD_TAKE error."""
    if order.status == Order.Status.REJECTED and order.reject_reason == ErrorCode.POST_ONLY_WOULD_TAKE:
        raise PostOnlyWouldTake(order.pk, order.status)


def refuse_closed(order: Order) -> None:
    if order.status == Order.Status.CANCELLED:
        return
    if not order.is_live:
        raise OrderAlreadyClosed(order.pk, order.status, format_amount(order.filled_size, order.market.lot_size))


def request_cancel(account, order_id: int) -> Order:
    """Queue a cancel for the pair's matcher; repeating it queues nothing more (idempotent)."""
    with committing(f"The database failed while committing the cancel of order {order_id}, which may have "
                    "been requested: look the order up, or repeat the cancel.") as commit:
        order = access_order(account, order_id, lock=True)
        if queue_cancel(order):
            commit.wrote([order.market.pair], order_id=order.pk)
    return order


def queue_cancel(order: Order) -> bool:
    """In the caller's transaction, the order's row locked: queue its cancel for the matcher, unless one is
    queued already (False). ORDER_ALREADY_CLOSED or MARKET_HALTED, writing nothing, when it cannot be."""
    refuse_closed(order)
    if not order.is_live or order.cancel_requested:
        return False
    if order.market.status == Market.Status.HALTED:
        raise MarketHalted(order.market.pair, Market.Status.HALTED)
    order.cancel_requested = True
    order.save(update_fields=["cancel_requested", "updated_at"])
    MatcherCommand.objects.create(market=order.market, kind=MatcherCommand.Kind.CANCEL, order=order,
                                  request_id=current_request_id())
    return True


def cancel_and_wait(account, order_id: int) -> Order:
    """request_cancel, then the order once its matcher took the cancel (waiting up to
    REPLY_WAIT_SECONDS), or as committed, ``cancel_requested``; ORDER_ALREADY_CLOSED if it filled or
    expired while the cancel was queued."""
    order = request_cancel(account, order_id)
    if order.is_live:
        state = waited_state(order.pk, f"the answer to the cancel of order {order.pk}", done=cancel_done)
        if state is not None:
            take_state(order, state)
    refuse_closed(order)
    return order


def cancel_done(state) -> bool:
    """A wait for a cancel ends with a state in which the order is no longer live."""
    return not still_live(state)


CANCELS_MAY_BE_REQUESTED = ("The database failed while committing the cancels, which may have been requested: "
                            "look the orders up, or repeat the request.")


def request_cancel_all(account, pair: str | None = None) -> list[Order]:
    """Queue a cancel for every live order of the account (optionally of one pair) not already cancelling.
    A halted market takes no cancel, as for one order: its orders are left, and a ``pair`` that names one is
    MARKET_HALTED, writing nothing."""
    orders = Order.objects.filter(account=account, status__in=Order.LIVE_STATUSES)
    if pair is None:
        orders = orders.exclude(market__status=Market.Status.HALTED)
    else:
        market = access_market(pair)
        if market.status == Market.Status.HALTED:
            raise MarketHalted(market.pair, market.status)
        orders = orders.filter(market=market)
    with committing(CANCELS_MAY_BE_REQUESTED) as commit:
        orders = queue_cancel_all(commit, orders)
    return orders


def queue_cancel_all(commit: Commit, orders: QuerySet[Order]) -> list[Order]:
    """In ``commit``'s transaction: lock those of ``orders`` not already cancelling (in primary-key order) and
    queue a cancel for each."""
    orders = list(orders.filter(cancel_requested=False).for_rendering().select_for_update(of=("self",)).order_by("pk"))
    for order in orders:
        order.cancel_requested = True
    Order.objects.bulk_update(orders, ["cancel_requested"])
    MatcherCommand.objects.bulk_create(
        MatcherCommand(market=order.market, kind=MatcherCommand.Kind.CANCEL, order=order,
                       request_id=current_request_id())
        for order in orders
    )
    if orders:
        commit.wrote(sorted({order.market.pair for order in orders}), order_ids=[order.pk for order in orders])
    return orders


def cancel_all_and_wait(account, pair: str | None = None) -> list[Order]:
    """request_cancel_all, then the orders once each pair's matcher took its cancels (waiting up to
    REPLY_WAIT_SECONDS in all), or as committed, ``cancel_requested``."""
    orders = request_cancel_all(account, pair)
    take_states(orders, "the answer to a cancel-all", done=cancel_done)
    return orders


def take_states(orders: list[Order], what: str, done=None) -> None:
    """Each order with the state its matcher handed over for this request's command (waiting up to
    REPLY_WAIT_SECONDS in all), or as committed when none came: see take_state."""
    # Each pair's matcher takes its commands in order: its last one answered means all of that pair's are.
    last_per_pair = {order.market_id: order.pk for order in orders}
    deadline = time.monotonic() + dispatch.REPLY_WAIT_SECONDS
    states = {}
    for order_id in last_per_pair.values():
        state = waited_state(order_id, what, max(deadline - time.monotonic(), 0), done=done)
        if state is not None:
            states[order_id] = state
    try:
        states.update(dispatch.latest_states([order.pk for order in orders if order.pk not in states]))
    except OUTAGE_ERRORS as error:
        log_outage(what, error)
    for order in orders:
        take_state(order, states.get(order.pk))


@transaction.atomic
def set_market_status(market_id: int, status: str) -> Market:
    """Halt a market, let it only cancel, or bring it back online."""
    market = Market.objects.select_for_update().get(pk=market_id)
    if status not in Market.Status.values:
        raise ValueError(f"unknown market status {status!r}")
    market.status = status
    market.save(update_fields=["status"])
    if status != Market.Status.HALTED:
        transaction.on_commit(lambda: dispatch.wake_matcher(market.pair))  # matches what queued while halted
    return market


def account_balances(account) -> list[tuple[Asset, dict[str, tuple[Decimal, Decimal]]]]:
    """Every asset with the account's (available, locked) per wallet, zeros where it holds none."""
    held = {(b.asset_id, b.wallet): (b.available, b.locked) for b in Balance.objects.filter(account=account)}
    zero = (Decimal(0), Decimal(0))
    return [
        (asset, {wallet: held.get((asset.pk, wallet), zero) for wallet in Wallet.values})
        for asset in Asset.objects.order_by("symbol")
    ]
