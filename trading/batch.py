"""Orders placed and cancelled in batches (POST /v1/orders/batch, POST /v1/orders/cancel).

Each item has the outcome its single request would have had (the order, created or found again by
its client_order_id, or the error), in the order given. The batch is one transaction, each item in a
savepoint of its own so that a refused item writes nothing, and its commands reach each pair's
matcher together: one wake-up per pair after the commit. The balances the orders may hold are locked
first, in primary-key order, as every writer of balances does (trading.ledger), so that two batches
of one account, or a batch and a matcher's settlement, never deadlock.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from exchange.errors import ExchangeError, OrderNotFound
from exchange.ratelimit import MAX_REQUEST_WEIGHT
from trading import ledger, services
from trading.backends import store
from trading.markets import access_market
from trading.models import Balance, Order, Side, Wallet
from trading.orders import OrderRequest

MAX_ITEMS = MAX_REQUEST_WEIGHT  # one weight an item: the heaviest request a tier's budget must fit


@dataclass
class Outcome:
    """An item's result: its order (``created`` False for one its client_order_id made before), or its error."""

    order: Order | None = None
    created: bool = False
    error: ExchangeError | None = None


def place_orders_and_wait(account, items: Sequence[OrderRequest | ExchangeError]) -> list[Outcome]:
    """place_orders, then each new order as its matcher left it (waiting up to REPLY_WAIT_SECONDS in all),
    or as accepted, ``pending``; a post-only order the matcher rejected is POST_ONLY_WOULD_TAKE."""
    outcomes = place_orders(account, items)
    made = {outcome.order.pk: outcome.order for outcome in outcomes if outcome.created}
    services.take_states(list(made.values()), "the answer to a batch")
    for outcome in outcomes:  # an item repeating the client_order_id of an earlier one: that order, as left
        if outcome.order is not None and outcome.order.pk in made:
            outcome.order = made[outcome.order.pk]
    judge(outcomes, services.refuse_rejected)
    return outcomes


def judge(outcomes: list[Outcome], refuse) -> None:
    """An item whose order, as its matcher left it, its own request would refuse (``refuse`` raises) gets
    that error."""
    for outcome in outcomes:
        if outcome.order is not None:
            try:
                refuse(outcome.order)
            except ExchangeError as error:
                outcome.error = error


def place_orders(account, items: Sequence[OrderRequest | ExchangeError]) -> list[Outcome]:
    """Accept each order as place_order does, in one transaction (run again if a deadlock aborted it); an
    item that is an error already (its parse refused it) stays that error."""
    return services.retrying_deadlocks(lambda: accept_orders(account, items))


def accept_orders(account, items: Sequence[OrderRequest | ExchangeError]) -> list[Outcome]:
    requests = [item for item in items if isinstance(item, OrderRequest)]
    made_ids = ", ".join(request.client_order_id for request in requests if request.client_order_id)
    message = ("The database failed while committing the batch, whose orders may have been placed: look them "
               "up" + (f" by client_order_id ({made_ids})." if made_ids else "."))
    with services.committing(message) as commit:
        lock_holds(account, requests)
        outcomes = [Outcome(error=item) if isinstance(item, ExchangeError) else place_one(account, item)
                    for item in items]
        made = [outcome.order for outcome in outcomes if outcome.created]
        if made:
            commit.wrote(sorted({order.market.pair for order in made}), order_ids=[order.pk for order in made],
                         client_order_ids=[order.client_order_id for order in made if order.client_order_id])
            services.announce_orders(account, made)
    return outcomes


def lock_holds(account, requests: list[OrderRequest]) -> None:
    """Lock the account's spot balances the orders hold from (those that exist), in primary-key order."""
    keys = set()
    for request in requests:
        try:
            market = access_market(request.pair, recent=True)
        except ExchangeError:
            continue  # an unknown pair: the order is refused, holding nothing
        keys.add((account.pk, market.quote_id if request.side == Side.BUY else market.base_id, Wallet.SPOT))
    if keys:
        store().lock_rows(Balance, ledger.BALANCE_KEY_FIELDS, sorted(keys))


def place_one(account, request: OrderRequest) -> Outcome:
    try:
        with transaction.atomic():  # a savepoint: a refused order leaves nothing behind
            return Outcome(order=services.write_order(account, request), created=True)
    except (ExchangeError, IntegrityError) as error:
        try:
            existing = services.existing_for_retry(account, request)
        except ExchangeError as duplicate:  # the client_order_id made another order
            return Outcome(error=duplicate)
        if existing is not None:
            return Outcome(order=existing)
        if isinstance(error, IntegrityError):
            raise
        return Outcome(error=error)


def cancel_orders_and_wait(account, order_ids: Sequence[int] = (), client_order_ids: Sequence[str] = ()
                           ) -> list[Outcome]:
    """Cancel each order, given by id or by client_order_id, as the single cancel does: the order once its
    matcher took the cancel (waiting up to REPLY_WAIT_SECONDS in all), or as committed,
    ``cancel_requested``; ORDER_NOT_FOUND, ORDER_ALREADY_CLOSED (also when it filled while the cancel
    waited) or MARKET_HALTED."""
    outcomes = request_cancels(account, order_ids, client_order_ids)
    waiting = {outcome.order.pk: outcome.order for outcome in outcomes if outcome.order and outcome.order.is_live}
    services.take_states(list(waiting.values()), "the answer to a batch cancel", done=services.cancel_done)
    judge(outcomes, services.refuse_closed)
    return outcomes


def request_cancels(account, order_ids: Sequence[int], client_order_ids: Sequence[str]) -> list[Outcome]:
    """Queue the cancels in one transaction, the orders' rows locked in primary-key order."""
    by_client_id = dict(Order.objects.filter(account=account, client_order_id__in=client_order_ids)
                        .values_list("client_order_id", "pk"))
    wanted = [*order_ids, *(by_client_id.get(client_id) for client_id in client_order_ids)]
    with services.committing(services.CANCELS_MAY_BE_REQUESTED) as commit:
        orders = Order.objects.filter(account=account, pk__in=[pk for pk in wanted if pk is not None])
        locked = {order.pk: order for order in orders.for_rendering().select_for_update(of=("self",)).order_by("pk")}
        outcomes, queued = [], []
        for index, pk in enumerate(wanted):
            order = locked.get(pk)
            if order is None:
                outcomes.append(Outcome(error=OrderNotFound(pk) if index < len(order_ids) else
                                        OrderNotFound(client_order_id=client_order_ids[index - len(order_ids)])))
                continue
            try:
                if services.queue_cancel(order):
                    queued.append(order)
            except ExchangeError as error:
                outcomes.append(Outcome(error=error))
            else:
                outcomes.append(Outcome(order=order))
        if queued:
            commit.wrote(sorted({order.market.pair for order in queued}), order_ids=[order.pk for order in queued])
    return outcomes
