"""Trading services: each owns its transaction; the pair's matcher is woken only after commit."""

import functools
import time
from collections.abc import Iterable
from contextlib import contextmanager
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet

from exchange.errors import OUTAGE_ERRORS, ErrorCode, ExchangeError, ServiceUnavailable, log_outage, unavailable
from trading import dispatch, ledger, publishing
from trading.markets import access_market
from trading.models import Asset, Balance, Market, MatcherCommand, Order, Wallet
from trading.orders import OrderRequest, check_against_market, hold_for, protection_price


def access_order(account, order_id: int, *, lock: bool = False) -> Order:
    orders = Order.objects.select_related("market", "market__base", "market__quote")
    if lock:
        orders = orders.select_for_update(of=("self",))
    try:
        return orders.get(account=account, pk=order_id)
    except Order.DoesNotExist:
        raise ExchangeError(ErrorCode.ORDER_NOT_FOUND, f"No order {order_id} on this account.") from None


def access_order_by_client_id(account, client_order_id: str) -> Order:
    order = Order.objects.filter(account=account, client_order_id=client_order_id).only("pk").first()
    if order is None:
        raise ExchangeError(ErrorCode.ORDER_NOT_FOUND, f"No order with client_order_id {client_order_id!r}.")
    return access_order(account, order.pk)


def existing_for_retry(account, request: OrderRequest) -> Order | None:
    """The order an earlier identical request made; DUPLICATE_CLIENT_ORDER_ID if the id was used otherwise."""
    if request.client_order_id is None:
        return None
    order = Order.objects.filter(account=account, client_order_id=request.client_order_id).first()
    if order is not None and order.request_digest != request.digest():
        raise ExchangeError(
            ErrorCode.DUPLICATE_CLIENT_ORDER_ID,
            f"client_order_id {request.client_order_id!r} was already used for a different order.",
            {"order_id": order.pk},
        )
    return order and access_order(account, order.pk)


class Commit:
    """What a transaction wrote that a client must be able to find, and the pairs to wake for it."""

    def __init__(self):
        self.details: dict | None = None
        self.pairs: Iterable[str] = ()

    def wrote(self, pairs: Iterable[str], **details) -> None:
        """The work is queued: its pairs' matchers are woken after the commit (or, should the commit
        fail in an outage, at once: see committing)."""
        self.pairs, self.details = list(pairs), details
        for pair in self.pairs:
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
        raise unavailable(message, **commit.details) from error


def place_order(account, request: OrderRequest) -> tuple[Order, bool]:
    """Accept an order: check it, hold its funds, queue it for the pair's matcher, in one transaction.

    Returns (order, created). Repeating a request with the same client_order_id returns the first
    order with created=False, also when the two requests race (the unique index decides), and also
    when the repeat itself would now be refused (funds, market status): the lookup happens only then.
    """
    try:
        return do_place_order(account, request), True
    except ServiceUnavailable:
        raise  # the order may have been made; the lookup would meet the same outage
    except (ExchangeError, IntegrityError):
        existing = existing_for_retry(account, request)
        if existing is None:
            raise
        return existing, False


class MarketChanged(Exception):
    """The market row is no longer as the copy an order was checked against (status or grids)."""


def do_place_order(account, request: OrderRequest) -> Order:
    message = "The database failed while committing the order, which may have been placed: look it up by its id"
    with committing(message + (" or client_order_id." if request.client_order_id else ".")) as commit:
        try:
            order = accept(account, access_market(request.pair, recent=True), request)
        except (ExchangeError, MarketChanged):
            # This process's copy of the market may be out of date (halted, resumed, new grids since it
            # was read): judge the order again against the row, which stays as read until commit.
            order = accept(account, access_market(request.pair, lock=True), request)
        ledger.hold_funds(order.account_id, order.hold_asset_id, order.hold_remaining, reference=f"order:{order.pk}")
        # The matcher is woken first, and a failed publish only logged: the order is committed, so the
        # request must answer with it and the matcher must get it whatever the channel layer does.
        commit.wrote([order.market.pair], order_id=order.pk, client_order_id=order.client_order_id)
        transaction.on_commit(lambda: publishing.publish_account_changes(account.pk, orders=[order.pk]), robust=True)
    return order


def accept(account, market: Market, request: OrderRequest) -> Order:
    """Check the order against ``market`` and write it with its matcher command (no hold yet)."""
    check_against_market(market, request)
    protection = protection_price(market, request)
    hold_asset_id, hold_amount = hold_for(market, request, protection)
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


@functools.cache
def insert_order_sql(vendor: str) -> str:
    """The statement of insert_order, made once per database vendor (building it cost 0.2 ms)."""
    postgres = vendor == "postgresql"
    fields = order_fields()
    # PostgreSQL types the SELECT's parameters only by their casts (they would be text otherwise).
    placeholders = [f"CAST(%s AS {field.cast_db_type(connection)})" if postgres else "%s" for field in fields]
    sql = (
        f"INSERT INTO trading_order ({', '.join(connection.ops.quote_name(field.column) for field in fields)}) "
        f"SELECT {', '.join(placeholders)} FROM trading_market WHERE id = %s AND status = %s "
        f"AND {' AND '.join(f'{name} = %s' for name in MARKET_GRIDS)} RETURNING id"
    )
    if not postgres:
        return sql
    return (f"WITH placed AS ({sql}), queued AS (INSERT INTO trading_matchercommand (market_id, kind, order_id) "
            "SELECT %s, %s, id FROM placed) SELECT id FROM placed")


def insert_order(order: Order) -> None:
    """INSERT the order and its NEW matcher command if its market row is still online with the grids
    of ``order.market``; raise MarketChanged, writing nothing, if not.

    The market may be a copy this process read a while ago: a halt or a grid change made by any
    process is seen here, in the statement that writes the order, rather than by reading the market
    again for every order. On PostgreSQL the matcher command goes in the same statement.
    """
    market = order.market
    postgres = connection.vendor == "postgresql"
    params = [field.get_db_prep_save(field.pre_save(order, add=True), connection) for field in order_fields()]
    params += [market.pk, Market.Status.ONLINE]
    for name in MARKET_GRIDS:
        params.append(Market._meta.get_field(name).get_db_prep_save(getattr(market, name), connection))
    if postgres:
        params += [market.pk, MatcherCommand.Kind.NEW]
    with connection.cursor() as cursor:
        cursor.execute(insert_order_sql(connection.vendor), params)
        row = cursor.fetchone()
    if row is None:
        raise MarketChanged(market.pair)
    order.pk = row[0]
    order._state.adding, order._state.db = False, connection.alias
    if not postgres:
        MatcherCommand.objects.create(market=market, kind=MatcherCommand.Kind.NEW, order=order)


def read_back(order: Order) -> Order:
    """The order as the matcher has left it, with the market the caller already has in memory: one
    plain read of its row (the ORM's refresh costs twice as much, a select_related read 3x)."""
    (current,) = Order.objects.raw("SELECT * FROM trading_order WHERE id = %s", [order.pk])
    current.market = order.market
    return current


def placed_state(order: Order) -> Order:
    """A committed order as its matcher left it (waiting up to REPLY_WAIT_SECONDS for it), or as
    accepted, ``pending``, when an outage hides what happened next: it exists, so it is the answer."""
    try:
        dispatch.wait_processed(order.pk)
        return read_back(order)
    except OUTAGE_ERRORS as error:
        log_outage(f"the answer to order {order.pk}", error)
        for field in order_fields():  # as a read of the row gives them: the amounts' defaults are ints
            setattr(order, field.attname, field.to_python(getattr(order, field.attname)))
        return order


def refuse_rejected(order: Order) -> None:
    """A post-only order the matcher rejected is reported as SPEC's POST_ONLY_WOULD_TAKE error."""
    if order.status == Order.Status.REJECTED and order.reject_reason == ErrorCode.POST_ONLY_WOULD_TAKE:
        raise ExchangeError(
            ErrorCode.POST_ONLY_WOULD_TAKE,
            f"Order {order.pk} would have taken liquidity, so it was rejected (post_only).",
            {"order_id": order.pk, "status": order.status},
        )


def refuse_closed(order: Order) -> None:
    if order.status == Order.Status.CANCELLED:
        return
    if not order.is_live:
        raise ExchangeError(
            ErrorCode.ORDER_ALREADY_CLOSED,
            f"Order {order.pk} is already {order.status}.",
            {"order_id": order.pk, "status": order.status, "filled_size": str(order.filled_size)},
        )


def request_cancel(account, order_id: int) -> Order:
    """Queue a cancel for the pair's matcher; repeating it queues nothing more (idempotent)."""
    with committing(f"The database failed while committing the cancel of order {order_id}, which may have "
                    "been requested: look the order up, or repeat the cancel.") as commit:
        order = access_order(account, order_id, lock=True)
        refuse_closed(order)
        if order.is_live and not order.cancel_requested:
            if order.market.status == Market.Status.HALTED:
                raise ExchangeError(ErrorCode.MARKET_HALTED, f"{order.market.pair} is halted.", {"status": "halted"})
            order.cancel_requested = True
            order.save(update_fields=["cancel_requested", "updated_at"])
            MatcherCommand.objects.create(market=order.market, kind=MatcherCommand.Kind.CANCEL, order=order)
            commit.wrote([order.market.pair], order_id=order.pk)
    return order


def cancelled_state(account, order: Order) -> Order:
    """After request_cancel: the order once its matcher took the cancel (waiting up to
    REPLY_WAIT_SECONDS), or as committed, ``cancel_requested``, when an outage hides what happened next."""
    try:
        if order.is_live:
            dispatch.wait_processed(order.pk, until=lambda: not access_order(account, order.pk).is_live)
        return access_order(account, order.pk)
    except OUTAGE_ERRORS as error:
        log_outage(f"the answer to the cancel of order {order.pk}", error)
        return order


def live_orders(account, pair: str | None = None) -> QuerySet[Order]:
    orders = Order.objects.filter(account=account, status__in=Order.LIVE_STATUSES)
    if pair is not None:
        orders = orders.filter(market=access_market(pair))
    return orders


def request_cancel_all(account, pair: str | None = None) -> list[Order]:
    """Queue a cancel for every live order of the account (optionally of one pair) not already cancelling."""
    with committing("The database failed while committing the cancels, which may have been requested: "
                    "look the orders up, or repeat the request.") as commit:
        orders = list(
            live_orders(account, pair)
            .exclude(market__status=Market.Status.HALTED)
            .filter(cancel_requested=False)
            .select_related("market__base", "market__quote")
            .select_for_update(of=("self",))
            .order_by("pk")
        )
        for order in orders:
            order.cancel_requested = True
        Order.objects.bulk_update(orders, ["cancel_requested"])
        MatcherCommand.objects.bulk_create(
            MatcherCommand(market=order.market, kind=MatcherCommand.Kind.CANCEL, order=order) for order in orders
        )
        if orders:
            commit.wrote(sorted({order.market.pair for order in orders}), order_ids=[order.pk for order in orders])
    return orders


def cancelled_all_state(account, orders: list[Order]) -> list[Order]:
    """After request_cancel_all: the orders once each pair's matcher took its cancels (waiting up to
    REPLY_WAIT_SECONDS in all), or as committed, ``cancel_requested``, when an outage hides more."""
    # Each pair's matcher takes its cancels in order: its last one done means all of that pair's are.
    last_per_pair = {order.market_id: order.pk for order in orders}
    deadline = time.monotonic() + dispatch.REPLY_WAIT_SECONDS
    try:
        for order_id in last_per_pair.values():
            dispatch.wait_processed(order_id, max(deadline - time.monotonic(), 0),
                                    until=lambda order_id=order_id: not access_order(account, order_id).is_live)
        return list(Order.objects.filter(account=account, pk__in=[order.pk for order in orders])
                    .select_related("market__base", "market__quote").order_by("pk"))
    except OUTAGE_ERRORS as error:
        log_outage("the answer to a cancel-all", error)
        return orders


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
