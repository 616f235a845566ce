"""Simulated traders for the sandbox: makers quoting ladders, takers, stops and cancels, over signed REST.

    python manage.py simulate_market --rate 5 --seed 1 --pairs BTC-USD,ETH-USD --base-url http://127.0.0.1:8000

Creates (once) the simulated traders' accounts, tops their balances up through the ledger, gives each a
fresh API key, then trades against the running server until SIGINT/SIGTERM, which cancels their open
orders and exits 0. Only in the sandbox (EXCHANGE_ENVIRONMENT=sandbox) unless --force.
"""

import logging
import signal
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connections, transaction

from accounts.keys import create_api_key, revoke_api_keys
from accounts.models import ApiKey, RateTier
from accounts.services import open_account
from sandbox.simulation import MAKERS, REFERENCE_MIDS, MarketSpec, Simulation, funding_targets
from sandbox.simulator import Simulator
from trading.ledger import adjust_balance
from trading.models import Asset, Balance, Market, Trade, Wallet

KEY_LABEL = "market simulation"
TIERS = {True: "market_maker", False: "retail"}  # is a maker -> its rate tier


class Command(BaseCommand):
    help = "Run the sandbox's simulated traders against the server, over signed REST, until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--rate", type=float, default=5.0,
                            help="orders and cancels per second, all traders together (default 5)")
        parser.add_argument("--seed", type=int, default=1,
                            help="the same seed from the same state decides the same orders (default 1)")
        parser.add_argument("--pairs", help="comma-separated markets (default: every online market)")
        parser.add_argument("--base-url", default=settings.SIMULATION_BASE_URL,
                            help=f"the server's REST address (default {settings.SIMULATION_BASE_URL})")
        parser.add_argument("--actions", type=int, help="stop cleanly after this many orders and cancels")
        parser.add_argument("--force", action="store_true", help="run outside the sandbox too")

    def handle(self, *args, rate, seed, pairs, base_url, actions, force, **options):
        if settings.EXCHANGE_ENVIRONMENT != "sandbox" and not force:
            raise CommandError("simulated traders run only in the sandbox (EXCHANGE_ENVIRONMENT=sandbox); "
                               "--force to run them anyway")
        if rate <= 0:
            raise CommandError("--rate must be above 0")
        if actions is not None and actions < 1:
            raise CommandError("--actions must be 1 or more (without it, the run goes on until stopped)")
        logging.getLogger("sandbox.simulator").setLevel(logging.INFO)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
        specs = market_specs(pairs.split(",") if pairs else None, self.stderr)
        if not specs:
            raise CommandError("no market to simulate")
        credentials = set_up_traders(specs)
        connections.close_all()  # the run itself only speaks HTTP
        simulator = Simulator(Simulation(seed, specs, rate), base_url, credentials,
                              public_weight_per_window=settings.PUBLIC_WEIGHT_PER_MINUTE,
                              window_seconds=settings.RATE_LIMIT_WINDOW_SECONDS, max_actions=actions)
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: simulator.stop())
        self.stdout.write(f"Simulating {', '.join(spec.pair for spec in specs)} against {base_url} "
                          f"at {rate:g} orders and cancels/s, seed {seed}")
        sent = simulator.run()
        self.stdout.write(f"Stopped after {sent} orders and cancels ({simulator.events} events); the simulated "
                          "traders' orders are " + ("cancelled" if simulator.orders_cancelled else
                                                    "not all cancelled (the next run cancels them first)"))


def market_specs(pairs: list[str] | None, warnings) -> list[MarketSpec]:
    """The markets asked for (every online one by default), each starting at its last trade's price, else at
    its reference price; one with neither is left out."""
    markets = Market.objects.with_assets().filter(status=Market.Status.ONLINE)
    if pairs is not None:
        wanted = [pair.strip().upper() for pair in pairs if pair.strip()]
        markets = markets.filter(pair__in=wanted)
        unknown = set(wanted) - {market.pair for market in markets}
        if unknown:
            raise CommandError(f"not an online market: {', '.join(sorted(unknown))}")
    specs = []
    for market in markets.order_by("pair"):
        last = Trade.objects.filter(market=market).order_by("-id").values_list("price", flat=True).first()
        mid = last or REFERENCE_MIDS.get(market.pair)
        if mid is None:
            warnings.write(f"{market.pair}: no trade and no reference price to start from; left out")
            continue
        specs.append(MarketSpec(market.pair, market.base.symbol, market.quote.symbol, market.tick_size,
                                market.lot_size, market.min_size, market.min_notional, mid))
    return specs


@transaction.atomic
def set_up_traders(specs: list[MarketSpec]) -> dict[str, tuple[str, str, int]]:
    """Each simulated trader's account (made once), balances topped up to its targets through the ledger, and a
    new trade key (the previous run's revoked): name -> (key, secret, weight per minute of its tier)."""
    tiers = {maker: RateTier.objects.get(name=TIERS[maker]) for maker in TIERS}
    assets = {asset.symbol: asset for asset in Asset.objects.all()}
    credentials = {}
    for name, targets in funding_targets(specs).items():
        user, _ = get_user_model().objects.get_or_create(username=name)
        account = open_account(user)
        tier = tiers[name in MAKERS]
        if account.rate_tier_id != tier.pk:
            account.rate_tier = tier
            account.save(update_fields=["rate_tier"])
        for symbol, target in targets.items():
            balance = Balance.objects.filter(account=account, asset=assets[symbol], wallet=Wallet.SPOT).first()
            held = balance.total if balance else Decimal(0)
            if held < target:
                adjust_balance(account_id=account.pk, asset_id=assets[symbol].pk, amount=target - held,
                               reference=f"sandbox:simulation:{name}", memo="simulated trader's testnet funds")
        revoke_api_keys(ApiKey.objects.filter(account=account, label=KEY_LABEL))
        key, secret = create_api_key(account, label=KEY_LABEL, scope=ApiKey.Scope.TRADE, ip_allowlist=[])
        credentials[name] = (key.public_id, secret, tier.weight_per_minute)
    return credentials
