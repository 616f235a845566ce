"""The simulated market's decisions (sandbox/simulation.py, pure) and the command's set-up of its traders.
The run on the real stack is tests/test_simulation_e2e.py."""

import itertools
import random
import statistics
import threading
import time
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from hkt_client import errors

from accounts.models import Account, ApiKey
from sandbox.management.commands.simulate_market import market_specs, set_up_traders
from sandbox.simulation import (
    INVENTORY_BOUND_UNITS, MAKERS, TAKE_SIZE, TAKERS, Cancel, Event, MarketSpec, OwnOrder, Place, Simulation, View,
    funding_targets, heavy_tail_units,
)
from sandbox.simulator import Budget, Simulator, Stopped
from trading.models import Balance

D = Decimal
BTC_USD = MarketSpec("BTC-USD", "BTC", "USD", D("0.01"), D("0.00000001"), D("0.00001"), D("1.00"), D("63000"))
ETH_BTC = MarketSpec("ETH-BTC", "ETH", "BTC", D("0.00001"), D("0.0001"), D("0.001"), D("0.0001"), D("0.05"))
MAKER, TAKER = next(iter(MAKERS)), TAKERS[0]


def simulation(seed: int = 7, rate: float = 5.0) -> Simulation:
    return Simulation(seed, [BTC_USD, ETH_BTC], rate)


def flat(sim: Simulation, trader: str, spec: MarketSpec = BTC_USD, units: int = 0, **view) -> View:
    """A view where the trader holds its starting base plus ``units`` of inventory."""
    return View(base_total=sim.targets[trader][spec.base] + units * spec.unit, **{"bids": (), "asks": (), **view})


def placed(actions, side: str) -> list[Place]:
    return [a for a in actions if isinstance(a, Place) and a.side == side]


def test_a_makers_ladder_is_symmetric_around_the_mid_and_never_crosses_itself():
    sim = simulation()
    mid = sim.mid("BTC-USD")

    actions = sim.decide(Event(0, "BTC-USD", MAKER, "quote"), flat(sim, MAKER))

    bids, asks = placed(actions, "buy"), placed(actions, "sell")
    assert len(bids) == len(asks) == MAKERS[MAKER].levels
    assert [mid - b.price for b in bids] == [a.price - mid for a in asks]  # level by level, innermost first
    assert max(b.price for b in bids) < mid < min(a.price for a in asks)
    assert all(a.type == "limit" and a.post_only and a.price % BTC_USD.tick == 0 for a in actions)
    assert all(a.size % BTC_USD.lot == 0 and a.size * a.price >= BTC_USD.min_notional for a in actions)


def quoted(sim: Simulation, event: Event) -> tuple[list, tuple[OwnOrder, ...], dict]:
    """A maker's first ladder, as its live orders and the book they make."""
    actions = sim.decide(event, flat(sim, event.trader))
    live = tuple(OwnOrder(i, a.side, "limit", a.price, a.size) for i, a in enumerate(actions, start=1))
    book = {"bids": tuple((o.price, o.remaining) for o in live if o.side == "buy"),
            "asks": tuple((o.price, o.remaining) for o in live if o.side == "sell")}
    return actions, live, book


def test_a_maker_keeps_the_quotes_still_wanted_and_cancels_the_others():
    sim = simulation()
    _, live, book = quoted(sim, Event(0, "BTC-USD", MAKER, "quote"))
    stale = OwnOrder(99, "buy", "limit", D("50000.00"), D("0.1"))

    again = sim.decide(Event(1, "BTC-USD", MAKER, "quote"), flat(sim, MAKER, orders=(*live, stale), **book))

    assert again == [Cancel(MAKER, "BTC-USD", 99)]


def test_a_moving_ladder_is_placed_before_the_old_one_is_cancelled_except_quotes_in_its_way():
    sim = simulation()
    _, live, book = quoted(sim, Event(0, "BTC-USD", MAKER, "quote"))
    sim.walks["BTC-USD"].mid += D("60.00")  # a jump up: the new bids reach the old inner asks

    moved = sim.decide(Event(1, "BTC-USD", MAKER, "repair"), flat(sim, MAKER, orders=live, **book))

    kinds = [type(action).__name__ for action in moved]
    first_place, last_place = kinds.index("Place"), len(kinds) - 1 - kinds[::-1].index("Place")
    in_the_way = {a.order_id for a in moved[:first_place]}
    best_new_bid = max(a.price for a in placed(moved, "buy"))
    assert in_the_way == {o.order_id for o in live if o.side == "sell" and o.price <= best_new_bid} != set()
    assert set(kinds[first_place:last_place + 1]) == {"Place"}
    assert {a.order_id for a in moved[last_place + 1:]} == {o.order_id for o in live} - in_the_way


def test_quotes_never_cross_the_book_whatever_it_and_the_inventory_are():
    sim, rng = simulation(), random.Random(1)
    for step in range(300):
        event = sim.next_event()
        spec = sim.specs[event.pair]
        mid = sim.mid(event.pair)
        others_bid = mid - spec.tick * rng.randint(-30, 60)  # sometimes above the mid: the book moved away
        others_ask = others_bid + spec.tick * rng.randint(1, 40)
        maker = list(MAKERS)[step % 2]
        view = flat(sim, maker, spec, units=rng.randint(-3000, 3000),
                    bids=((others_bid, D(1)),), asks=((others_ask, D(1)),))

        actions = sim.decide(Event(event.at, event.pair, maker, "quote"), view)

        bids, asks = [a.price for a in placed(actions, "buy")], [a.price for a in placed(actions, "sell")]
        assert bids and asks  # both sides, whatever the inventory: the book never goes empty
        assert max(bids) < min(asks)
        assert max(bids) < others_ask and min(asks) > others_bid


def test_a_maker_past_its_inventory_bound_leans_and_keeps_one_smallest_quote_on_the_side_that_adds():
    sim = simulation()
    neutral = sim.decide(Event(0, "BTC-USD", MAKER, "quote"), flat(sim, MAKER))
    bound = INVENTORY_BOUND_UNITS["maker"]

    long = simulation().decide(Event(0, "BTC-USD", MAKER, "quote"), flat(sim, MAKER, units=bound + 1))
    short = simulation().decide(Event(0, "BTC-USD", MAKER, "quote"), flat(sim, MAKER, units=-bound - 1))

    [far_bid] = placed(long, "buy")
    assert far_bid.size == BTC_USD.smallest_size(far_bid.price)
    assert len(placed(long, "sell")) == MAKERS[MAKER].levels
    assert placed(long, "sell")[0].price < placed(neutral, "sell")[0].price  # cheaper asks, to sell the inventory
    assert len(placed(short, "sell")) == 1 and len(placed(short, "buy")) == MAKERS[MAKER].levels
    assert placed(short, "buy")[0].price > placed(neutral, "buy")[0].price


def test_a_taker_past_its_bound_only_reduces_and_never_takes_past_it():
    book = {"bids": ((D("62990.00"), D(5)),), "asks": ((D("63010.00"), D(5)),)}
    bound = INVENTORY_BOUND_UNITS["taker"]
    for seed in range(50):
        sim = simulation(seed)
        long = sim.decide(Event(0, "BTC-USD", TAKER, "take"), flat(sim, TAKER, units=bound, **book))
        short = sim.decide(Event(0, "BTC-USD", TAKER, "take"), flat(sim, TAKER, units=-bound, **book))
        near = sim.decide(Event(0, "BTC-USD", TAKER, "take"), flat(sim, TAKER, units=bound - 3, **book))
        assert all(a.side == "sell" for a in long) and all(a.side == "buy" for a in short)
        assert all(a.size <= 3 * BTC_USD.unit for a in near if a.side == "buy")


def test_a_taker_past_its_bound_rests_and_places_stops_only_on_the_side_that_reduces_it():
    book = {"bids": ((D("62990.00"), D(1)),), "asks": ((D("63010.00"), D(1)),)}
    bound = INVENTORY_BOUND_UNITS["taker"]
    sides = {"long": set(), "short": set()}
    for seed in range(20):
        sim = simulation(seed)
        for kind in ("rest", "stop"):
            for name, units in (("long", bound + 50), ("short", -bound)):
                actions = sim.decide(Event(0, "BTC-USD", TAKER, kind), flat(sim, TAKER, units=units, **book))
                sides[name] |= {action.side for action in actions}

    assert sides == {"long": {"sell"}, "short": {"buy"}}


def test_taker_sizes_are_heavy_tailed_and_capped():
    rng = random.Random(3)
    sizes = [float(heavy_tail_units(rng, **TAKE_SIZE)) for _ in range(20_000)]

    median = statistics.median(sizes)
    assert min(sizes) >= TAKE_SIZE["scale"] and max(sizes) == TAKE_SIZE["cap"]
    assert median < 2 * TAKE_SIZE["scale"]
    assert sorted(sizes)[int(0.99 * len(sizes))] > 20 * median  # a fat tail: the top 1 % dwarfs the typical order
    assert sum(size > 10 * median for size in sizes) > 0.01 * len(sizes)


def test_an_empty_side_is_fixed_first_by_the_makers_in_turn():
    sim = simulation()
    event = Event(0, "BTC-USD", TAKER, "take")
    two_sided = View(bids=((D("62990.00"), D(1)),), asks=((D("63010.00"), D(1)),))

    assert sim.first_things_first(event, two_sided) == event
    repairs = [sim.first_things_first(event, View(bids=two_sided.bids, asks=())) for _ in range(2)]
    assert [(r.trader, r.kind) for r in repairs] == [(maker, "repair") for maker in MAKERS]


def test_the_mid_walks_on_the_tick_grid_jumps_now_and_then_and_stays_near_its_start():
    sim = simulation()
    walk = sim.walks["BTC-USD"]
    mids = [walk.step() for _ in range(20_000)]
    moves = [abs(b / a - 1) for a, b in itertools.pairwise(mids)]

    assert all(mid % BTC_USD.tick == 0 for mid in mids)
    assert len(set(mids)) > 1000
    assert 0 < sum(move > D("0.002") for move in moves) < 200  # jumps: rare, never absent
    assert all(D("0.5") < mid / BTC_USD.mid < D("2") for mid in mids)


def run(sim: Simulation, events: int) -> list:
    """The events and actions a simulation decides, fed views that depend only on its own actions so far."""
    live: dict[tuple[str, str], list[OwnOrder]] = {}
    decided, next_id = [], 1
    for _ in range(events):
        event = sim.next_event()
        spec, mid = sim.specs[event.pair], sim.mid(event.pair)
        book = View(bids=((mid - 10 * spec.tick, D(1)),), asks=((mid + 10 * spec.tick, D(1)),))
        event = sim.first_things_first(event, book)
        orders = live.setdefault((event.trader, event.pair), [])
        actions = sim.decide(event, View(book.bids, book.asks, tuple(orders), sim.targets[event.trader][spec.base]))
        for action in actions:
            if isinstance(action, Place) and action.type == "limit" and action.post_only:
                orders.append(OwnOrder(next_id, action.side, "limit", action.price, action.size))
                next_id += 1
            if isinstance(action, Cancel):
                orders[:] = [o for o in orders if o.order_id != action.order_id]
        decided.append((event, actions))
    return decided


def test_the_same_seed_decides_the_same_orders_at_any_rate_and_another_seed_others():
    first, again = run(simulation(11), 400), run(simulation(11), 400)
    slower = run(simulation(11, rate=0.5), 400)

    assert first == again
    assert [actions for _, actions in slower] == [actions for _, actions in first]
    assert [event.at for event, _ in slower] == pytest.approx([event.at * 10 for event, _ in first])
    assert [actions for _, actions in run(simulation(12), 400)] != [actions for _, actions in first]
    kinds = {(a.type, isinstance(a, Cancel)) for _, actions in first for a in actions if isinstance(a, Place)}
    assert {("limit", False), ("market", False), ("stop", False)} <= kinds


def test_funding_covers_every_pair_in_whole_units():
    targets = funding_targets([BTC_USD, ETH_BTC])

    assert set(targets) == set(MAKERS) | set(TAKERS)
    assert set(targets[MAKER]) == {"BTC", "USD", "ETH"}
    assert all(amount == amount.to_integral_value() and amount > 0 for wallet in targets.values()
               for amount in wallet.values())
    # BTC is the base of one pair and the quote of the other: both count.
    assert targets[MAKER]["BTC"] > funding_targets([BTC_USD])[MAKER]["BTC"]


def test_the_command_refuses_to_run_outside_the_sandbox(settings):
    settings.EXCHANGE_ENVIRONMENT = "production"

    with pytest.raises(CommandError, match="only in the sandbox"):
        call_command("simulate_market", "--actions", "1")


@pytest.mark.parametrize("args, message", [(["--rate", "0"], "--rate must be above 0"),
                                           (["--actions", "-5"], "--actions must be 1 or more"),
                                           (["--actions", "0"], "--actions must be 1 or more")])
def test_the_command_refuses_a_rate_or_a_number_of_actions_that_runs_nothing(markets, settings, args, message):
    settings.EXCHANGE_ENVIRONMENT = "sandbox"

    with pytest.raises(CommandError, match=message):
        call_command("simulate_market", *args)
    assert not Account.objects.filter(user__username__startswith="sim-").exists()  # refused before the set-up


def test_setting_the_traders_up_twice_tops_balances_up_and_replaces_their_keys(markets):
    specs = market_specs(["BTC-USD"], None)
    first = set_up_traders(specs)
    second = set_up_traders(specs)

    maker = Account.objects.get(user__username=MAKER)
    assert maker.rate_tier.name == "market_maker"
    assert Account.objects.get(user__username=TAKER).rate_tier.name == "retail"
    balance = Balance.objects.get(account=maker, asset__symbol="USD")
    assert balance.available == funding_targets(specs)[MAKER]["USD"]  # credited once, not twice
    assert first[MAKER][0] != second[MAKER][0]
    keys = ApiKey.objects.filter(account=maker)
    assert [k.public_id for k in keys if not k.is_revoked] == [second[MAKER][0]]
    assert second[MAKER][2] == 6000 and second[TAKER][2] == 1200


def test_a_budget_holds_requests_back_to_its_share_of_the_tier_and_gives_way_to_a_stop():
    stopping = threading.Event()
    budget = Budget(weight_per_window=10, window_seconds=0.5, stopping=stopping)  # 8 of 10 per half second
    started = time.monotonic()
    for _ in range(8):
        budget.spend(1)
    assert time.monotonic() - started < 0.2
    budget.spend(1)
    assert time.monotonic() - started >= 0.45  # waited for the first request to leave the window

    stopping.set()
    with pytest.raises(Stopped):
        for _ in range(10):
            budget.spend(1)


def test_a_refusal_for_the_rate_waits_its_retry_after_then_sends_again():
    simulator = Simulator(simulation(), "http://127.0.0.1:1", {}, public_weight_per_window=1200, window_seconds=60)
    answers = [errors.RateLimited("RATE_LIMITED", "slow down", {}, 429, {"retry-after": "0.3"}), {"ok": True}]

    def request():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    started = time.monotonic()
    assert simulator.call(request) == {"ok": True}
    assert time.monotonic() - started >= 0.3


def test_an_order_left_pending_by_a_halted_market_does_not_stop_the_simulator(monkeypatch, caplog):
    """The market halted after the order was accepted, before its matcher took it: the order stays
    pending until the resume, and the simulator goes on with its other markets meanwhile."""
    from sandbox import simulator as module

    class HaltedUnderTheOrder:  # the exchange's answers, as the client gives them
        def place_order(self, **fields):
            return {"order_id": 1, "status": "pending"}

        def get_order(self, order_id):
            return {"order_id": order_id, "status": "pending"}

    monkeypatch.setattr(module, "ANSWER_TIMEOUT_SECONDS", 0.2)
    simulator = Simulator(simulation(), "http://127.0.0.1:1", {}, public_weight_per_window=10**6, window_seconds=60)
    simulator.traders = {TAKER: module.Trader(TAKER, HaltedUnderTheOrder(), module.Budget(10**6, 60, threading.Event()))}

    simulator.send(Place(TAKER, "BTC-USD", "buy", "limit", D("0.001"), price=D("60000")))

    assert "order 1 still pending after 0.2s: going on" in caplog.text



@pytest.mark.parametrize("second_signal, cancelled", [(False, True), (True, False)])
def test_the_run_says_whether_its_clean_stop_cancelled_the_traders_orders(monkeypatch, second_signal, cancelled):
    from sandbox import simulator as module

    class Exchange:
        def cancel_all(self):
            if second_signal:  # a signal while the clean stop's cancel-all waits out a refusal for the rate
                simulator.stop()
                raise errors.RateLimited("RATE_LIMITED", "slow down", {}, 429, {"retry-after": "5"})
            return {"orders": []}

    simulator = Simulator(simulation(), "http://127.0.0.1:1", {}, public_weight_per_window=10**6, window_seconds=60,
                          max_actions=0)
    simulator.traders = {TAKER: module.Trader(TAKER, Exchange(), Budget(10**6, 60, simulator.stopping))}
    monkeypatch.setattr(simulator, "wait_for_server", lambda: None)

    assert simulator.run() == 0
    assert simulator.orders_cancelled is cancelled
