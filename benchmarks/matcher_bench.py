"""The persisted matcher on PostgreSQL: accepted orders -> committed trades, balances and ledger.

Run from the repository root (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379):

    .venv/bin/python benchmarks/matcher_bench.py              # 20,000 commands (~10 % cancels), ~2.5 min
    .venv/bin/python benchmarks/matcher_bench.py -n 5000      # quicker

What it does, all in one run so that the ratios mean something on a noisy machine:

1. The stack of the end-to-end tests (tests/stack.py) without its processes: a fresh database
   ``bench_matcher_...`` (migrate, demo markets) and 20 funded accounts, and the stack's settings in this
   process: MATCHER_MODE=celery and REDIS_URL on Redis db 3 (or BENCH_REDIS_DB) with no worker running,
   so wake-ups are queued and never consumed: nothing matches during acceptance.
2. Acceptance: the first ``--through-services`` commands (default 2,000) go one by one through
   ``trading.services.place_order`` (and ``request_cancel`` for ~10 %): the first 300 under cProfile,
   the next 300 under a phase timer, the rest timed clean (acceptance commands/s). The other commands
   up to N are queued in bulk with the same effects (orders, hold journals through
   ``trading.ledger.apply_journals``, cancel flags, matcher commands), only to stay within the time
   budget: at ~100 commands/s, 20,000 through the services would take over 3 minutes by itself.
3. That database is the template of one clone per measurement, so each starts from the same queue:
   - batched: ``trading.dispatch.matcher_for("BTC-USD").drain()`` (BATCH_SIZE as shipped; each batch
     written on the matcher's writer thread while the next is matched; like every measurement here, with
     the cyclic collector as a matcher worker runs it: no automatic full passes), then
     ``trading.audit.audit()`` on the result (not timed);
   - baseline (a): one transaction per command (``trading.matcher.BATCH_SIZE = 1``) over a prefix
     of the same queue, compared with the batched rate over the same prefix; then the phases of
     one-command batches;
   - the phases of full batches run one at a time (``run_batch``: matching and writing in turn; each
     ORM call by model, the engine, publishing, commit; real time, no profiler), then cProfile over
     the next batches.
4. Baseline (b): raw psycopg COPY of 1,000-row batches (one commit each) into a scratch table
   created LIKE trading_ledgerentry (same columns, defaults, indexes and checks; no foreign keys).
5. Baseline (c): the matcher's engine alone (trading.engine_impl: compiled or pure; no database) on the
   same commands.

Prints figures only; asserts nothing about speed. Databases are dropped WITH (FORCE) at the end,
and the Redis db is flushed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from datetime import date
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (CpuSampler, PhaseTimer, Stopwatch, bench_stack, machine, print_cpu_report,  # noqa: E402
                     print_phases, table)

PAIR = "BTC-USD"
MID_TICKS = 6_000_000  # 60,000.00 USD at tick 0.01


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--commands", type=int, default=20_000, help="commands to accept (default 20,000)")
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--cancel-share", type=float, default=0.10)
    parser.add_argument("--spread-ticks", type=int, default=3_000,
                        help="limit prices are mid ± this many ticks (0.01 USD), uniformly: many cross")
    parser.add_argument("--through-services", type=int, default=2_000,
                        help="commands accepted one by one through place_order/request_cancel (timed); the rest of "
                             "the N are queued in bulk with the same effects (0: all N through the services, "
                             "which takes ~N/110 s here)")
    parser.add_argument("--single-prefix", type=int, default=500,
                        help="commands run one transaction each for baseline (a)")
    parser.add_argument("--single-seconds", type=float, default=12.0, help="time cap for baseline (a)")
    parser.add_argument("--profile-batches", type=int, default=3)
    parser.add_argument("--phase-accept", type=int, default=300,
                        help="commands accepted under the phase timer (excluded from the acceptance rate)")
    parser.add_argument("--small-batches", type=int, default=60, help="one-command batches whose phases are timed")
    parser.add_argument("--profile-accept", type=int, default=300,
                        help="the first commands accepted run under cProfile (excluded from the acceptance rate)")
    parser.add_argument("--copy-batches", type=int, default=200, help="1,000-row COPY batches for baseline (b)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="commands per matcher batch for the drains (default: trading.matcher.BATCH_SIZE)")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args()


def set_batch_size(size: int) -> int:
    """Commands per batch for this run (0: as shipped)."""
    import trading.matcher

    if size:
        trading.matcher.BATCH_SIZE = size
    return trading.matcher.BATCH_SIZE


def configure(env: dict[str, str]) -> None:
    """Settings are read at import: the environment (the stack's) must be right before django.setup()."""
    os.environ.update(env)
    import django

    django.setup()


def use_database(name: str) -> None:
    """Point Django's default connection at another database (closing the current connection)."""
    from django.db import connections

    connections.close_all()
    connections["default"].settings_dict["NAME"] = name


def make_stream(args) -> list[tuple]:
    """('new', account_index, side, price, size) or ('cancel', account_index, index of an earlier new)."""
    rng = random.Random(args.seed)
    stream, live_by_account = [], [[] for _ in range(args.accounts)]
    for _ in range(args.commands):
        account = rng.randrange(args.accounts)
        if rng.random() < args.cancel_share and live_by_account[account]:
            victims = live_by_account[account]
            stream.append(("cancel", account, victims.pop(rng.randrange(len(victims)))))
            continue
        side = rng.choice(("buy", "sell"))
        price = Decimal(MID_TICKS + rng.randint(-args.spread_ticks, args.spread_ticks)).scaleb(-2)
        size = Decimal(rng.randint(100_000, 5_000_000)).scaleb(-8)  # 0.001 - 0.05 BTC
        live_by_account[account].append(len(stream))
        stream.append(("new", account, side, price, size))
    return stream


def prepare_template(args) -> list:
    """The funded accounts, on the stack's database (migrated, with the demo markets)."""
    from django.contrib.auth import get_user_model

    from accounts.services import open_account
    from trading.ledger import adjust_balance
    from trading.models import Asset

    assets = dict(Asset.objects.values_list("symbol", "pk"))
    accounts = []
    for i in range(args.accounts):
        user = get_user_model().objects.create(username=f"bench{i}")
        account = open_account(user)
        for symbol, amount in (("USD", Decimal("100000000")), ("BTC", Decimal("100000"))):
            adjust_balance(account_id=account.pk, asset_id=assets[symbol], amount=amount,
                           reference=f"bench:{i}", memo="matcher_bench funding")
        accounts.append(account)
    return accounts


def accept(stream: list[tuple], accounts: list, profile_first: int = 0, phase_next: int = 0) -> dict:
    """Accept the stream one command (one transaction) at a time, through the services.

    The first ``profile_first`` commands run under cProfile, the next ``phase_next`` under PhaseTimer;
    the rest are the timed acceptance figure. Returns the order id of each "new" (stream index -> id)."""
    from trading import backends, dispatch
    from trading.orders import OrderRequest
    from trading.services import place_order, request_cancel

    order_ids: dict[int, int] = {}
    counts_by_kind = Counter()

    def one(index, command):
        if command[0] == "new":
            _, account, side, price, size = command
            order, _ = place_order(accounts[account], OrderRequest(pair=PAIR, side=side, type="limit",
                                                                   price=price, size=size))
            order_ids[index] = order.pk
        else:
            request_cancel(accounts[command[1]], order_ids[command[2]])
        counts_by_kind[command[0]] += 1

    profiler = cProfile.Profile()
    with Stopwatch() as profiled:
        profiler.enable()
        for index in range(profile_first):
            one(index, stream[index])
        profiler.disable()
    timer = PhaseTimer([(backends.Bus, "send", "bus send: the account's changes (on commit)"),
                        (dispatch, "wake_matcher", "wake_matcher (on commit: Redis flag, Celery task)")])
    with timer, Stopwatch() as phased:
        for index in range(profile_first, profile_first + phase_next):
            one(index, stream[index])
    with Stopwatch() as watch:
        for index in range(profile_first + phase_next, len(stream)):
            one(index, stream[index])
    out = io.StringIO()
    if profile_first:
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    return {"seconds": watch.seconds, "news": counts_by_kind["new"], "cancels": counts_by_kind["cancel"],
            "timed_commands": len(stream) - profile_first - phase_next, "order_ids": order_ids,
            "profile": out.getvalue(), "profiled_commands": profile_first, "profiled_seconds": profiled.seconds,
            "phases": {"seconds": phased.seconds, "phases": timer.phases, "sql": timer.sql,
                       "title": f"Phases of acceptance (place_order / request_cancel): {phase_next:,} commands, "
                                f"{phased.seconds:.2f} s, {phase_next / max(phased.seconds, 1e-9):,.0f} commands/s"}}


def bulk_queue(stream: list[tuple], start: int, accounts: list, order_ids: dict[int, int]) -> float:
    """Queue stream[start:] with the effects place_order / request_cancel would have had, in bulk.

    Orders (checked against the market, holds from trading.orders.hold_for), their hold journals
    through trading.ledger.apply_journals, cancel flags, and the matcher commands in stream order.
    Only to reach N commands within the time budget; the acceptance figure comes from the part
    accepted one by one through the services. The audit after the drain checks the result.
    """
    from django.db import transaction

    from trading.ledger import Bucket, Journal, Posting, Reason, apply_journals
    from trading.models import Market, MatcherCommand, Order
    from trading.orders import OrderRequest, check_against_market, hold_for

    market = Market.objects.select_related("base", "quote").get(pair=PAIR)
    with Stopwatch() as watch, transaction.atomic():
        news = {}
        for index in range(start, len(stream)):
            command = stream[index]
            if command[0] != "new":
                continue
            _, account, side, price, size = command
            request = OrderRequest(pair=PAIR, side=side, type="limit", price=price, size=size)
            check_against_market(market, request)
            asset_id, amount = hold_for(market, request, None)
            news[index] = Order(account=accounts[account], market=market, request_digest=request.digest(), side=side,
                                type="limit", price=price, size=size, hold_asset_id=asset_id, hold_remaining=amount)
        Order.objects.bulk_create(news.values(), batch_size=2000)
        order_ids.update({index: order.pk for index, order in news.items()})
        journals = [
            Journal(reason=Reason.ORDER_HOLD, reference=f"order:{order.pk}", postings=[
                Posting(order.account_id, order.hold_asset_id, -order.hold_remaining, Bucket.AVAILABLE),
                Posting(order.account_id, order.hold_asset_id, order.hold_remaining, Bucket.LOCKED),
            ])
            for order in news.values()
        ]
        for chunk in range(0, len(journals), 2000):
            apply_journals(journals[chunk:chunk + 2000])
        cancelled = [order_ids[stream[i][2]] for i in range(start, len(stream)) if stream[i][0] == "cancel"]
        Order.objects.filter(pk__in=cancelled).update(cancel_requested=True)
        MatcherCommand.objects.bulk_create(
            [MatcherCommand(market=market, kind=MatcherCommand.Kind.NEW, order_id=order_ids[i]) if stream[i][0] == "new"
             else MatcherCommand(market=market, kind=MatcherCommand.Kind.CANCEL, order_id=order_ids[stream[i][2]])
             for i in range(start, len(stream))],
            batch_size=2000,
        )
    return watch.seconds


def flush_redis(stack) -> None:
    """Empty the stack's Redis db for the next clone, after the publisher thread has sent what it holds: a delta
    of the last clone sent after the flush would sit above the next clone's sequences."""
    from trading.backends import bus

    bus().wait_published()
    stack.flush_redis()


def fresh_matcher():
    from trading import dispatch

    dispatch.reset()
    return dispatch.matcher_for(PAIR)


def counts() -> dict:
    from trading.models import Fill, LedgerEntry, MatcherCommand, Order, Trade

    return {"trades": Trade.objects.count(), "fills": Fill.objects.count(), "ledger": LedgerEntry.objects.count(),
            "queued": MatcherCommand.objects.count(),
            "pending": Order.objects.filter(status=Order.Status.PENDING).count()}


def order_updates() -> tuple[int, int]:
    """Updates of order rows so far in this database, and how many of them were HOT updates (no index entry):
    the statistics of the backends that have exited (closing the connections ends them)."""
    from django.db import connection, connections

    connections.close_all()
    time.sleep(0.5)
    with connection.cursor() as cursor:
        cursor.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'trading_order'")
        return cursor.fetchone()


def run_batched() -> dict:
    """Drain the queue as the worker does. Each batch's time is from the previous batch's commit (or
    the start) to its own: on PostgreSQL the batches are written on the matcher's writer thread
    while the next one is matched, so a batch's own duration is not what limits the drain."""
    from trading.signals import batch_committed

    matcher = fresh_matcher()
    commits: list[tuple[float, int]] = []

    def committed(sender, result, **kwargs):  # runs on commit, in commit order
        commits.append((time.perf_counter(), result.commands))

    batch_committed.connect(committed)
    before = counts()
    try:
        with Stopwatch() as watch:
            started, cpu = time.perf_counter(), time.process_time()
            results = matcher.drain()
            cpu = time.process_time() - cpu  # this process's threads: matching, writing, publishing
    finally:
        batch_committed.disconnect(committed)
    after = counts()
    stamps = [started] + [stamp for stamp, _ in commits]
    batch_times = [(stamps[i + 1] - stamps[i], processed) for i, (_, processed) in enumerate(commits)]
    return {"seconds": watch.seconds, "cpu_seconds": cpu, "batches": len(results), "batch_times": batch_times,
            "orders_changed": sum(len(r.orders) for r in results),
            "commands": sum(r.commands for r in results),
            **{key: after[key] - before[key] for key in ("trades", "fills", "ledger")},
            "left_queued": after["queued"], "left_pending": after["pending"]}


def run_sequential_cpu() -> dict:
    """The whole queue drained one batch at a time on one connection (``run_batch``, no writer thread), with
    the CPU time of this process and of the PostgreSQL backend serving it (from /proc): per unit of work,
    which the machine's other load inflates far less than the wall time of the pipelined drain."""
    from django.db import connection

    from trading.backends import bus

    matcher = fresh_matcher()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        stat = Path(f"/proc/{cursor.fetchone()[0]}/stat")

    def backend_cpu() -> float:
        utime, stime = stat.read_text().rsplit(")", 1)[1].split()[11:13]  # fields 14 and 15
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    server, client, commands = backend_cpu(), time.process_time(), 0
    with Stopwatch() as watch:
        while (result := matcher.run_batch()) is not None:
            commands += result.commands
    bus().wait_published()  # before the next clone's Redis flush
    return {"commands": commands, "seconds": watch.seconds, "client": time.process_time() - client,
            "server": backend_cpu() - server}


def run_explained() -> dict:
    """The whole queue drained as ``run_sequential_cpu`` does, each of the batches' write statements run under
    EXPLAIN (ANALYZE, WAL): per kind of statement, its server time (with its triggers) and the WAL records
    and bytes of its plan (not counting its triggers'). WAL is the same on a loaded machine as on a quiet one."""
    from trading.backends import bus, store

    run, matcher = store(), fresh_matcher()
    kinds = defaultdict(lambda: [0, 0.0, 0, 0])  # statement kind: statements, ms, WAL records, WAL bytes

    def explained(statements) -> None:
        with run.cursor() as cursor:
            for statement in statements:
                cursor.execute("EXPLAIN (ANALYZE, WAL, FORMAT JSON) " + statement.sql, statement.params)
                plan = cursor.fetchone()[0][0]
                verb = re.match(r'\s*(?:WITH .*? AS \(\s*)?(UPDATE|INSERT INTO|DELETE FROM)\s+"?(\w+)', statement.sql)
                kind = kinds[f"{verb[1].split()[0]} {verb[2]}" if verb else statement.sql[:30]]
                kind[0] += 1
                kind[1] += plan["Execution Time"]
                kind[2] += plan["Plan"].get("WAL Records", 0)
                kind[3] += plan["Plan"].get("WAL Bytes", 0)

    run.execute, batches = explained, 0
    try:
        while matcher.run_batch() is not None:
            batches += 1
    finally:
        del run.execute
    bus().wait_published()
    return {"batches": batches, "kinds": dict(kinds)}


def run_single(limit: int, cap_seconds: float) -> dict:
    import trading.matcher

    matcher = fresh_matcher()
    saved, trading.matcher.BATCH_SIZE = trading.matcher.BATCH_SIZE, 1
    done = 0
    try:
        with Stopwatch() as watch:
            deadline = time.perf_counter() + cap_seconds
            while done < limit and time.perf_counter() < deadline:
                if matcher.run_batch() is None:
                    break
                done += 1
    finally:
        trading.matcher.BATCH_SIZE = saved
    return {"seconds": watch.seconds, "commands": done, "capped": done < limit}


def run_batches(matcher, batches: int) -> tuple[int, int]:
    """Up to ``batches`` batches, fewer if the queue empties: (commands processed, batches run)."""
    processed = done = 0
    while done < batches:
        result = matcher.run_batch()
        if result is None:
            break
        processed += result.commands
        done += 1
    return processed, done


def run_phases(batches: int, batch_size: int | None = None) -> dict:
    """Phases of run_batch (see PhaseTimer), after a first batch that loads the book."""
    import trading.matcher
    from trading import backends, batch_writer, engine_impl, ledger
    from trading.settlement import Settlement

    saved_batch_size = trading.matcher.BATCH_SIZE
    trading.matcher.BATCH_SIZE = batch_size or saved_batch_size
    matcher = fresh_matcher()
    matcher.run_batch()  # loads the book: not part of the steady state, and not wrapped
    store = type(backends.store())
    # A compiled engine's class cannot be patched: its time then counts in the rest (ENGINE_IMPL=pure to see it).
    engine_phase = ([(engine_impl.engine.OrderBook, "apply", "engine OrderBook.apply")]
                    if engine_impl.engine is engine_impl.pure else [])
    timer = PhaseTimer([(trading.matcher.PairMatcher, "queued_commands", "read the queued commands and their orders"),
                        *engine_phase,
                        (Settlement, "apply", "events to order states, trades and postings (Settlement.apply)"),
                        (store, "reserve_ids", "reserve trade and fill ids"),
                        (Settlement, "trade_rows", "trade and fill rows (with the ids)"),
                        (batch_writer, "book_changes", "book levels and delta"),
                        (ledger, "journal_statements", "settlement journal statements"),
                        (store, "update_statement", "order state and book state statements"),
                        (store, "execute", "write: the batch's statements in one pipeline (store.execute)"),
                        (type(backends.bus()), "publish_in_order",
                         "hand over to the publisher (after commit: replies, deltas, trades)")])
    try:
        with timer, Stopwatch() as watch:
            processed, done = run_batches(matcher, batches)
    finally:
        trading.matcher.BATCH_SIZE = saved_batch_size
    return {"seconds": watch.seconds, "batches": done, "commands": processed, "phases": timer.phases,
            "sql": timer.sql, "title": f"Phases of run_batch with BATCH_SIZE = {batch_size or saved_batch_size}: "
            f"{processed:,} commands in {done} batches (after a first, loading one), {watch.seconds:.2f} s, "
            f"{processed / watch.seconds:,.0f} commands/s, {watch.seconds / max(done, 1) * 1000:.1f} ms per batch"}


def run_profile(batches: int) -> dict:
    from django.db import connection

    matcher = fresh_matcher()
    sql = {"seconds": 0.0, "queries": 0}

    def timing_wrapper(execute, sql_text, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql_text, params, many, context)
        finally:
            sql["seconds"] += time.perf_counter() - start
            sql["queries"] += 1

    profiler = cProfile.Profile()
    with connection.execute_wrapper(timing_wrapper):
        with Stopwatch() as watch:
            profiler.enable()
            processed, done = run_batches(matcher, batches)
            profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(15)
    cumulative = out.getvalue()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return {"seconds": watch.seconds, "batches": done, "commands": processed, "sql": sql,
            "cumulative": cumulative, "tottime": out.getvalue(), "breakdown": breakdown(stats)}


BREAKDOWN_CALLERS = {"run_batch", "match", "write", "trade_rows", "book_changes", "queued_commands", "execute",
                     "publish_batch"}


def breakdown(stats: pstats.Stats) -> list[tuple[str, str, float]]:
    """(caller, callee, inclusive seconds) for what the matcher's own functions call: a per-phase view."""
    rows = []
    for (file, line, name), (_, _, _, _, callers) in stats.stats.items():
        for (caller_file, _, caller_name), caller_stats in callers.items():
            if caller_name in BREAKDOWN_CALLERS and "/trading/" in caller_file:
                where = file.split("/site-packages/")[-1].split("/work/main/")[-1]
                rows.append((caller_name, f"{name} ({where}:{line})", caller_stats[3]))
    return sorted(rows, key=lambda row: -row[2])


def run_copy(dsn: str, batches: int) -> dict:
    """Raw psycopg COPY of 1,000-row batches, one commit each, into a table shaped like the ledger."""
    import uuid as uuid_module
    from datetime import datetime, timezone

    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE bench_ledger_copy (LIKE trading_ledgerentry INCLUDING ALL)")
        conn.commit()
        accounts = [row[0] for row in conn.execute("SELECT id FROM accounts_account")]
        assets = [row[0] for row in conn.execute("SELECT id FROM trading_asset")]
        rng = random.Random(1)
        now = datetime.now(timezone.utc)
        columns = "journal, account_id, asset_id, wallet, bucket, amount, reason, reference, memo, created_at"
        prepared = []
        for b in range(batches):
            rows = []
            for i in range(1000):
                amount = Decimal(rng.randint(1, 10**12)).scaleb(-8) * rng.choice((1, -1))
                rows.append((uuid_module.uuid4(), rng.choice(accounts), rng.choice(assets), "spot",
                             rng.choice(("available", "locked")), amount, "trade", f"trade:{b * 1000 + i}", "",
                             now))
            prepared.append(rows)
        with Stopwatch() as watch:
            for rows in prepared:
                with conn.cursor() as cursor:
                    with cursor.copy(f"COPY bench_ledger_copy ({columns}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                conn.commit()
        conn.execute("DROP TABLE bench_ledger_copy")
        conn.commit()
    return {"seconds": watch.seconds, "rows": batches * 1000}


def time_ticker(repeat: int = 5) -> tuple[float, int]:
    """marketdata.services.ticker (published after every batch that trades or moves the top of the book):
    median ms with all the drain's trades inside its 24 h window."""
    import statistics

    from marketdata import services as marketdata_services
    from trading.models import Market, Trade

    market = Market.objects.select_related("base", "quote").get(pair=PAIR)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        marketdata_services.ticker(market)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000, Trade.objects.filter(market=market).count()


def run_engine_only() -> dict:
    """The matcher's engine alone on the same commands, in the same order (no database, no Decimal rows)."""
    from trading.engine_impl import engine
    from trading.settlement import ORDER_FIELDS, WorkingOrder
    from trading.models import BookState, Market, MatcherCommand

    matcher = fresh_matcher()
    market = Market.objects.get(pair=PAIR)
    matcher.load(BookState.objects.get_or_create(market=market)[0])
    commands = []
    queue = MatcherCommand.objects.filter(market=market).order_by("pk")
    for kind, *order_row in queue.values_list("kind", *(f"order__{name}" for name in ORDER_FIELDS)):
        if kind == MatcherCommand.Kind.NEW:
            commands.append(matcher.engine_command(WorkingOrder(*order_row)))
        else:
            commands.append(engine.CancelOrder(order_row[0]))
    book = engine.OrderBook(PAIR)
    events = 0
    with Stopwatch() as watch:
        for command in commands:
            events += len(book.apply(command))
    return {"seconds": watch.seconds, "commands": len(commands), "events": events, "engine": engine.__name__}


def main() -> None:
    args = parse_args()
    print(f"matcher_bench {date.today()}  {machine()}")
    print(f"{args.commands:,} commands on {PAIR}, {args.accounts} accounts, prices mid ± {args.spread_ticks} ticks, "
          f"~{args.cancel_share:.0%} cancels")
    started = time.perf_counter()
    stack = bench_stack("bench_matcher")
    own_pid = os.getpid()
    sampler = CpuSampler(lambda pid, comm, cmdline: (
        "this process" if pid == own_pid else
        "postgres serving this benchmark" if "postgres" in comm and stack.database in cmdline else
        "postgres: other backends and server processes" if "postgres" in comm else
        "redis-server" if "redis-server" in cmdline or "redis-server" in comm else
        "other processes (not this benchmark)"))
    sampler.start()
    with ExitStack() as databases:
        with Stopwatch() as setup:
            databases.enter_context(stack)
            configure(stack.env)
            accounts = prepare_template(args)
        batch_size = set_batch_size(args.batch_size)
        stream = make_stream(args)
        through = len(stream) if args.through_services <= 0 else min(args.through_services, len(stream))
        profile_first = min(args.profile_accept, through // 4)
        acceptance = accept(stream[:through], accounts, profile_first, min(args.phase_accept, through // 4))
        bulk_seconds = bulk_queue(stream, through, accounts, acceptance["order_ids"]) if through < len(stream) else 0.0
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # planner statistics, as autovacuum keeps them on a live database
        queued = counts()["queued"]
        from trading.dispatch import without_automatic_full_collections

        without_automatic_full_collections()  # the drains below run with the collector as a matcher worker's
        print(f"setup (migrate, markets, accounts) {setup.seconds:.1f} s; accepted {acceptance['news']:,} orders + "
              f"{acceptance['cancels']:,} cancels ({acceptance['profiled_commands']:,} under cProfile in "
              f"{acceptance['profiled_seconds']:.1f} s, then {acceptance['phases']['title'].split(': ', 1)[1]} under "
              f"the phase timer, the other {acceptance['timed_commands']:,} timed: "
              f"{acceptance['seconds']:.1f} s) through the services; {len(stream) - through:,} more commands queued in "
              f"bulk in {bulk_seconds:.1f} s; {queued:,} commands queued in all")

        clones = {}
        for name in ("batched", "single", "profile", "sequential", "explained"):
            use_database(stack.database)  # which closes every connection: nothing may be connected to a template
            clones[name] = databases.enter_context(stack.clone(name))

        # Each clone restarts the book sequence: clear the replay stream and wake flags first.
        flush_redis(stack)
        use_database(clones["batched"].database)
        engine_only = run_engine_only()
        updates_before = order_updates()
        batched = run_batched()
        updated, hot = (after - before for after, before in zip(order_updates(), updates_before))
        from trading.audit import audit

        with Stopwatch() as audit_watch:
            problems = audit()
        ticker_ms = time_ticker()
        copy = run_copy(clones["batched"].env["DATABASE_URL"], args.copy_batches)

        flush_redis(stack)
        use_database(clones["single"].database)
        single = run_single(args.single_prefix, args.single_seconds)
        small_phases = run_phases(args.small_batches, batch_size=1)

        flush_redis(stack)
        use_database(clones["profile"].database)
        phases = run_phases(args.profile_batches)
        profile = run_profile(args.profile_batches)

        flush_redis(stack)
        use_database(clones["sequential"].database)
        sequential = run_sequential_cpu()

        flush_redis(stack)
        use_database(clones["explained"].database)
        explained = run_explained()
        use_database(stack.database)

        cpu = sampler.stop()

        # batched rate over the same prefix the single-transaction baseline ran
        prefix_time = prefix_done = 0
        for seconds, processed in batched["batch_times"]:
            if prefix_done >= single["commands"]:
                break
            prefix_time += seconds
            prefix_done += processed

        def rate(n, s):
            return f"{n / s:,.0f}" if s else "-"

        print()
        print(f"Batched drain: {batched['commands']:,} commands in {batched['batches']} batches, "
              f"{batched['trades']:,} trades, {batched['fills']:,} fills, {batched['ledger']:,} ledger rows, "
              f"{batched['seconds']:.2f} s ({batched['cpu_seconds']:.2f} s of this process's CPU, "
              f"{batched['cpu_seconds'] / max(batched['commands'], 1) * 1e6:.0f} us a command); left queued {batched['left_queued']}, pending {batched['left_pending']}; "
              f"audit: {'OK' if not problems else problems[:3]} ({audit_watch.seconds:.1f} s, not timed)")
        per_batch = sorted(s for s, _ in batched["batch_times"])
        if per_batch:
            print(f"  per {batch_size}-command batch: median {per_batch[len(per_batch) // 2] * 1000:.0f} ms, "
                  f"max {per_batch[-1] * 1000:.0f} ms; order rows updated per batch: "
                  f"{batched['orders_changed'] / batched['batches']:,.0f} on average; order row updates "
                  f"{updated:,}, of which HOT (no index entry) {hot:,} ({hot / max(updated, 1):.0%})")
            in_order = [f"{seconds * 1000:.0f}" for seconds, _ in batched["batch_times"]]
            print(f"  batch times in order (ms): {' '.join(in_order)}")
        rows = [
            ["acceptance: place_order / request_cancel, one transaction each",
             f"{acceptance['timed_commands']:,} commands",
             f"{acceptance['seconds']:.2f}", rate(acceptance["timed_commands"], acceptance["seconds"]), "commands/s"],
            [f"drain, batches of {batch_size}, whole queue", f"{batched['commands']:,} commands",
             f"{batched['seconds']:.2f}", rate(batched["commands"], batched["seconds"]), "commands/s"],
            [f"drain, batches of {batch_size}, first {prefix_done:,} commands", f"{prefix_done:,} commands",
             f"{prefix_time:.2f}", rate(prefix_done, prefix_time), "commands/s"],
            [f"baseline (a): BATCH_SIZE = 1, first {single['commands']:,} commands"
             + (" (time cap)" if single["capped"] else ""), f"{single['commands']:,} commands",
             f"{single['seconds']:.2f}", rate(single["commands"], single["seconds"]), "commands/s"],
            ["drain ledger rows written (batched)", f"{batched['ledger']:,} rows", f"{batched['seconds']:.2f}",
             rate(batched["ledger"], batched["seconds"]), "rows/s"],
            ["baseline (b): raw COPY, 1,000-row batches, commit each", f"{copy['rows']:,} rows",
             f"{copy['seconds']:.2f}", rate(copy["rows"], copy["seconds"]), "rows/s"],
            [f"baseline (c): engine ({engine_only['engine']}), same commands, no database", f"{engine_only['commands']:,} commands",
             f"{engine_only['seconds']:.3f}", rate(engine_only["commands"], engine_only["seconds"]), "commands/s"],
        ]
        print(table(["measurement", "work", "seconds", "rate", "unit"], rows))
        print(f"  batched vs one-transaction-per-command (same prefix): "
              f"{(prefix_done / prefix_time) / (single['commands'] / single['seconds']):.1f}x"
              if prefix_time and single["seconds"] else "")
        print(f"  marketdata.services.ticker() (sent after each batch that trades or moves the top of the book) with "
              f"{ticker_ms[1]:,} trades in its 24 h window: {ticker_ms[0]:.1f} ms")
        print(f"  the whole queue again, one batch at a time on one connection: {sequential['commands']:,} commands in "
              f"{sequential['seconds']:.2f} s; CPU per command {sequential['client'] / sequential['commands'] * 1e6:.0f} us "
              f"in this process, {sequential['server'] / sequential['commands'] * 1e6:.0f} us in its PostgreSQL backend")
        print(f"  the same, each write statement under EXPLAIN (ANALYZE, WAL), per {batch_size}-command batch "
              f"({explained['batches']} batches; WAL of the statement's plan, not of its triggers):")
        print(table(["statement", "ms", "WAL records", "WAL kB"],
                    [[kind, f"{ms / explained['batches']:.1f}", f"{records / explained['batches']:,.0f}",
                      f"{wal / explained['batches'] / 1024:,.0f}"]
                     for kind, (_, ms, records, wal) in sorted(explained["kinds"].items(), key=lambda item: -item[1][1])]))
        print(f"  drain / COPY baseline: {batched['commands'] / batched['seconds'] / (copy['rows'] / copy['seconds']):.3f}")
        print(f"  aim >= 20,000 orders/s per pair: drain reaches "
              f"{batched['commands'] / batched['seconds'] / 20_000:.0%} of it")

        print()
        print_phases(acceptance["phases"])
        print()
        print_phases(phases)
        print()
        print_phases(small_phases)


        sql = profile["sql"]
        print()
        print(f"Profile: {profile['commands']:,} commands in {profile['batches']} batches, {profile['seconds']:.2f} s under "
              f"cProfile; {sql['queries']} SQL statements ({sql['queries'] / max(profile['batches'], 1):.0f} per batch), "
              f"{sql['seconds']:.2f} s inside cursor.execute ({sql['seconds'] / profile['seconds']:.0%} of the wall time)")
        print("Where the matcher's own functions spend it (inclusive seconds under cProfile, share of the profiled wall):")
        print(table(["caller", "callee", "seconds", "share"],
                    [[c, callee, f"{sec:.2f}", f"{sec / profile['seconds']:.0%}"]
                     for c, callee, sec in profile["breakdown"] if sec >= 0.02 * profile["seconds"]]))
        print("Top 15 by cumulative time:")
        print(profile["cumulative"].split("\n", 1)[1] if "\n" in profile["cumulative"] else profile["cumulative"])
        print("Top 12 by own (tot) time:")
        print(profile["tottime"].split("\n", 1)[1] if "\n" in profile["tottime"] else profile["tottime"])

        print(f"Acceptance profile: first {acceptance['profiled_commands']:,} commands, "
              f"{acceptance['profiled_seconds']:.2f} s under cProfile. Top 25 by cumulative time:")
        print(acceptance["profile"].split("\n", 1)[1] if "\n" in acceptance["profile"] else acceptance["profile"])
        flush_redis(stack)
    shutil.rmtree(stack.tmp, ignore_errors=True)
    print_cpu_report(cpu, sampler, started)


if __name__ == "__main__":
    main()
