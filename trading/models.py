from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from exchange.money import ASSET_PATTERN, DECIMAL_PLACES, MAX_DIGITS

# A foreign key that a composite index already leads with, or that is never looked up from the
# other side, has db_index=False: the matcher writes orders, trades, fills and ledger lines in bulk,
# and every index costs every row written. Trades and fills, which only the matcher writes, name
# their orders, accounts, markets and assets without a database constraint: checked at commit, they
# would lock the referenced row once per key per row, most of a batch's commit (docs/performance.md).
# The matcher takes every key from rows it read in the same transaction, nothing deletes those rows
# (PROTECT), and trading.audit checks that every key of a trade or fill names an existing row and
# that every order's fills add up to its filled size.


class AmountField(models.DecimalField):
    """Every amount, price and size: exact decimal, 36 digits with 18 after the point.

    Our database backends (exchange.db_backends) store it exactly: numeric on PostgreSQL, and on
    SQLite, which has no exact decimal type, fixed-width text whose order is numeric order for the
    non-negative values that are compared and sorted (a negative one sorts before them all).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_digits", MAX_DIGITS)
        kwargs.setdefault("decimal_places", DECIMAL_PLACES)
        super().__init__(*args, **kwargs)

    def get_internal_type(self) -> str:
        # Not "DecimalField": the backends' data_types, adaptation and converters for this type are
        # their own (SQLite's DecimalField reads values back through a float).
        return "AmountField"

    def get_db_prep_value(self, value, connection, prepared=False):
        # DecimalField's, with the backend's adaptation for amounts in place of the one for decimals.
        value = models.Field.get_db_prep_value(self, value, connection, prepared)
        return connection.ops.adapt_amountfield_value(self.to_python(value), self.max_digits, self.decimal_places)


class Asset(models.Model):
    symbol = models.CharField(max_length=12, unique=True)
    name = models.CharField(max_length=60)
    precision = models.PositiveSmallIntegerField(
        validators=[MaxValueValidator(DECIMAL_PLACES)],
        help_text=f"Decimal places of its amounts (deposits, withdrawals, interest, what people see); at most "
                  f"{DECIMAL_PLACES}, the places every amount is stored with.")
    circulating_supply = AmountField(null=True, blank=True, help_text="For the ticker's market cap.")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(symbol__regex=ASSET_PATTERN), name="asset_symbol_format"),
            models.CheckConstraint(condition=Q(precision__lte=DECIMAL_PLACES), name="asset_precision_stored"),
        ]

    def __str__(self) -> str:
        return self.symbol


class MarketQuerySet(models.QuerySet):
    def with_assets(self):
        """With the base and quote assets a market is checked against and rendered with."""
        return self.select_related("base", "quote")


class Market(models.Model):
    class Status(models.TextChoices):
        ONLINE = "online"
        CANCEL_ONLY = "cancel_only"
        HALTED = "halted"

    pair = models.CharField(max_length=25, unique=True, editable=False, help_text="BASE-QUOTE, from the assets.")
    base = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="base_markets")
    quote = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="quote_markets")
    tick_size = AmountField(help_text="Price grid, in quote.")
    lot_size = AmountField(help_text="Size grid, in base.")
    min_size = AmountField(help_text="Smallest order size, in base.")
    min_notional = AmountField(help_text="Smallest price × size, in quote.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ONLINE)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MarketQuerySet.as_manager()

    class Meta:
        ordering = ["pair"]
        constraints = [
            models.UniqueConstraint(fields=["base", "quote"], name="market_base_quote_unique"),
            models.CheckConstraint(condition=~Q(base=F("quote")), name="market_base_differs_from_quote"),
            models.CheckConstraint(
                condition=Q(tick_size__gt=0, lot_size__gt=0, min_size__gt=0, min_notional__gte=0),
                name="market_grid_positive",
            ),
        ]

    def save(self, *args, **kwargs):
        self.pair = f"{self.base.symbol}-{self.quote.symbol}"
        super().save(*args, **kwargs)

    @staticmethod
    def fee_asset_field(side: str) -> str:
        """A fee is taken from what the order receives: the base asset for a buy, the quote for a sell."""
        return "base" if side == Side.BUY else "quote"

    def fee_asset_id(self, side: str) -> int:
        return getattr(self, f"{self.fee_asset_field(side)}_id")

    def fee_asset(self, side: str) -> "Asset":
        return getattr(self, self.fee_asset_field(side))

    def __str__(self) -> str:
        return self.pair


class Wallet(models.TextChoices):
    SPOT = "spot"
    MARGIN = "margin"
    EARN = "earn"


class Balance(models.Model):
    """What an account holds of an asset in one wallet. Written only by trading.ledger."""

    account = models.ForeignKey("accounts.Account", on_delete=models.PROTECT, related_name="balances")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="balances")
    wallet = models.CharField(max_length=8, choices=Wallet.choices, default=Wallet.SPOT)
    available = AmountField(default=0)
    locked = AmountField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "asset", "wallet"], name="balance_unique_per_wallet"),
            models.CheckConstraint(condition=Q(available__gte=0), name="balance_available_not_negative"),
            models.CheckConstraint(condition=Q(locked__gte=0), name="balance_locked_not_negative"),
        ]
        permissions = [("adjust_balance", "Can credit or debit balances through the ledger")]

    @property
    def total(self):
        return self.available + self.locked

    def __str__(self) -> str:
        return f"{self.account} {self.asset} {self.wallet}"


class LedgerEntry(models.Model):
    """One line of a double-entry journal; the lines of a journal sum to zero per asset.

    Money entering or leaving the exchange (deposits, withdrawals, operator adjustments) balances
    against the outside world, recorded as a line with no account in the ``external`` bucket.
    """

    class Bucket(models.TextChoices):
        AVAILABLE = "available"
        LOCKED = "locked"
        EXTERNAL = "external"

    class Reason(models.TextChoices):
        DEPOSIT = "deposit"
        WITHDRAWAL = "withdrawal"
        ADJUSTMENT = "adjustment"
        ORDER_HOLD = "order_hold"
        ORDER_RELEASE = "order_release"
        SETTLEMENT = "settlement"  # before kinds were split: a batch's net trades, fees and releases together
        FAUCET = "faucet"  # the sandbox's testnet money: the faucet and a new account's starting balance
        TRANSFER = "transfer"  # between two of one account's wallets
        WITHDRAWAL_FEE = "withdrawal_fee"
        TRADE = "trade"  # a matcher batch's trades, net per balance
        FEE = "fee"  # a matcher batch's trading fees, net per balance
        INTEREST = "interest"  # earn products' interest, from the operator-funded interest account

    journal = models.UUIDField(db_index=True)
    account = models.ForeignKey(
        "accounts.Account", null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_entries",
        db_index=False,
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="ledger_entries", db_index=False)
    wallet = models.CharField(max_length=8, choices=Wallet.choices, default=Wallet.SPOT)
    bucket = models.CharField(max_length=10, choices=Bucket.choices)
    amount = AmountField(help_text="Signed: positive credits the bucket, negative debits it.")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    reference = models.CharField(max_length=120, help_text="What caused it: order:12, settlement:BTC-USD:7, admin:alice.")
    memo = models.CharField(max_length=200, blank=True, help_text="Why, in words (operator adjustments).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        # (account, id): an account's ledger newest first, with or without an asset filter
        # (wallets.statements), at the write cost of the one index it replaced, (account, asset, id).
        indexes = [models.Index(fields=["account", "id"]), models.Index(fields=["reference"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(bucket="external", account__isnull=True) | (~Q(bucket="external") & Q(account__isnull=False)),
                name="ledger_external_lines_have_no_account",
            ),
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_amount_not_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.reason} {self.amount} {self.asset} ({self.reference})"


class BookState(models.Model):
    """The matcher's committed position for a pair. Written only by the pair's matcher, once per batch."""

    market = models.OneToOneField(Market, primary_key=True, on_delete=models.CASCADE, related_name="book_state")
    sequence = models.BigIntegerField(default=0, help_text="+1 per published book delta; never reset.")
    batches = models.BigIntegerField(default=0, help_text="Batches committed; tells a matcher its memory is stale.")
    last_priority = models.BigIntegerField(default=0, help_text="Time priority given to the last order that rested.")
    last_batch_at = models.DateTimeField(null=True, blank=True, help_text="When the last batch committed.")


class BookLevel(models.Model):
    """One aggregated price level of a pair's live book, as the matcher last committed it."""

    class Side(models.TextChoices):
        BID = "bid"
        ASK = "ask"

    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="book_levels")
    side = models.CharField(max_length=3, choices=Side.choices)
    price = AmountField()
    size = AmountField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["market", "side", "price"], name="book_level_unique"),
            models.CheckConstraint(condition=Q(size__gt=0), name="book_level_size_positive"),
        ]


class Side(models.TextChoices):
    BUY = "buy"
    SELL = "sell"


class OrderQuerySet(models.QuerySet):
    def for_rendering(self):
        """With what OrderSerializer reads: the market and its assets (the places of its amounts)."""
        return self.select_related("market__base", "market__quote")

    def live(self, market: "Market | None" = None):
        """The orders not done yet (of one market), found through their LiveOrder rows."""
        orders = self.filter(live__isnull=False, status__in=Order.LIVE_STATUSES)
        return orders if market is None else orders.filter(live__market=market)


class Order(models.Model):
    class Type(models.TextChoices):
        LIMIT = "limit"
        MARKET = "market"
        STOP = "stop"

    class TimeInForce(models.TextChoices):
        GTC = "GTC"
        IOC = "IOC"
        FOK = "FOK"

    class SelfTradePrevention(models.TextChoices):
        CANCEL_OLDEST = "cancel_oldest"
        CANCEL_NEWEST = "cancel_newest"
        CANCEL_BOTH = "cancel_both"

    class Trigger(models.TextChoices):
        """Which way the last trade price crosses a stop's stop_price to trigger it (trading.engine.StopTrigger)."""

        ABOVE = "above"
        BELOW = "below"

    class Status(models.TextChoices):
        PENDING = "pending"
        UNTRIGGERED = "untriggered"
        OPEN = "open"
        PARTIALLY_FILLED = "partially_filled"
        FILLED = "filled"
        CANCELLED = "cancelled"
        REJECTED = "rejected"
        EXPIRED = "expired"

    LIVE_STATUSES = (Status.PENDING, Status.UNTRIGGERED, Status.OPEN, Status.PARTIALLY_FILLED)

    objects = OrderQuerySet.as_manager()

    account = models.ForeignKey("accounts.Account", on_delete=models.PROTECT, related_name="orders", db_index=False)
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="orders", db_index=False)
    client_order_id = models.CharField(max_length=64, null=True, blank=True)
    request_digest = models.CharField(max_length=64, help_text="SHA-256 of the request, to tell a retry from a reuse.")
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=6, choices=Type.choices)
    price = AmountField(null=True, blank=True)
    size = AmountField(null=True, blank=True)
    funds = AmountField(null=True, blank=True)
    stop_price = AmountField(null=True, blank=True)
    trigger = models.CharField(max_length=5, choices=Trigger.choices, null=True, blank=True,
                               help_text="Stops only: above or below stop_price (null for other orders).")
    protection_price = AmountField(
        null=True, blank=True, help_text="Worst price a market or stop-market buy given by size may pay (its hold)."
    )
    time_in_force = models.CharField(max_length=3, choices=TimeInForce.choices, default=TimeInForce.GTC)
    post_only = models.BooleanField(default=False)
    stp = models.CharField(max_length=13, choices=SelfTradePrevention.choices, default=SelfTradePrevention.CANCEL_OLDEST)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reject_reason = models.CharField(max_length=40, blank=True)
    cancel_reason = models.CharField(max_length=12, blank=True, help_text="user or self_trade, once cancelled.")
    filled_size = AmountField(default=0)
    executed_value = AmountField(default=0, help_text="Quote exchanged by the fills, before fees.")
    fee = AmountField(default=0, help_text="Fees charged, in the asset the order receives.")
    hold_asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+", db_index=False)
    hold_remaining = AmountField(help_text="What is still locked for this order.")
    book_priority = models.BigIntegerField(null=True, blank=True, help_text="Time priority on the book (matcher's).")
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # No index names a column the matcher changes (status, amounts, book priority, done_at): its UPDATE
        # of a batch's orders is then a HOT update, a new row version beside the old one with no index
        # entry, where the table's fillfactor (PostgreSQL, migration 0018) leaves room on the page. A
        # pair's live orders are found through LiveOrder instead of an index on the status.
        indexes = [models.Index(fields=["account", "-id"])]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "client_order_id"],
                condition=Q(client_order_id__isnull=False),
                name="order_client_order_id_unique_per_account",
            ),
            models.CheckConstraint(condition=Q(hold_remaining__gte=0, filled_size__gte=0), name="order_amounts_not_negative"),
        ]

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES

    @property
    def remaining_size(self):
        return None if self.size is None else self.size - self.filled_size

    @property
    def average_fill_price(self):
        return None if not self.filled_size else self.executed_value / self.filled_size

    @property
    def fee_asset_id(self) -> int:
        return self.market.fee_asset_id(self.side)

    def __str__(self) -> str:
        return f"order {self.pk} {self.side} {self.market}"


class LiveOrder(models.Model):
    """An order not done yet (no ``done_at``: pending, untriggered, open or partially filled), and its market.

    Added by a trigger on the order table (migration 0018), whoever inserts an order; removed by the matcher's
    batch that closes the order (sets its ``done_at``; ``trading.batch_writer``): the order table then needs
    no index on its status, which every batch changes (docs/performance.md). ``trading.audit`` checks that these are the live orders."""

    order = models.OneToOneField(Order, primary_key=True, on_delete=models.CASCADE, related_name="live",
                                 db_constraint=False)
    market = models.ForeignKey(Market, on_delete=models.CASCADE, related_name="+", db_constraint=False)


class MatcherCommand(models.Model):
    """The pair's queue of accepted work, consumed in id order by its single matcher.

    A command is deleted in the same transaction that commits its results, so a matcher killed at
    any instant either redoes a whole batch or none of it.
    """

    class Kind(models.TextChoices):
        NEW = "new"
        CANCEL = "cancel"

    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="+", db_index=False)
    kind = models.CharField(max_length=6, choices=Kind.choices)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="+", db_index=False)
    # A database default: the order-entry statements insert commands in raw SQL without naming it.
    queued_at = models.DateTimeField(db_default=Now(), help_text="When it was accepted (the matcher's lag).")
    # The request that queued it (exchange/request_ids.py), on the matcher's log lines for its order.
    request_id = models.CharField(max_length=128, null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["market", "id"])]


class TradeQuerySet(models.QuerySet):
    def newest_first(self, market: "Market"):
        """A pair's trades, the last first (the order of the (market, -id) index)."""
        return self.filter(market=market).order_by("-id")


class Trade(models.Model):
    """A match between a resting (maker) order and an incoming (taker) order, at the maker's price."""

    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="trades", db_index=False,
                               db_constraint=False)
    price = AmountField()
    size = AmountField()
    quote_amount = AmountField(help_text="price × size, in quote.")
    taker_side = models.CharField(max_length=4, choices=Side.choices)
    maker_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="+", db_index=False,
                                    db_constraint=False)
    taker_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="+", db_index=False,
                                    db_constraint=False)
    executed_at = models.DateTimeField()
    batch = models.BigIntegerField(help_text="The matcher batch whose settlement journal moved its funds.")

    objects = TradeQuerySet.as_manager()

    class Meta:
        # The 24 h ticker reads candles, not trades: no index by time (each one is written per trade).
        indexes = [models.Index(fields=["market", "-id"])]
        constraints = [models.CheckConstraint(condition=Q(price__gt=0, size__gt=0), name="trade_price_size_positive")]


class Candle(models.Model):
    """A pair's trades of one minute (UTC), kept by the matcher in the transaction of each batch that
    trades: the 24 h ticker aggregates at most 1,441 of these instead of every trade of the day."""

    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False)
    minute = models.DateTimeField(help_text="Start of the minute.")
    open = AmountField()
    high = AmountField()
    low = AmountField()
    close = AmountField()
    volume = AmountField(help_text="In base.")
    quote_volume = AmountField(help_text="In quote.")
    trades = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["market", "minute"], name="candle_unique_per_minute")]


class FillQuerySet(models.QuerySet):
    def for_rendering(self):
        """With what FillSerializer reads: the pair, the fee asset's symbol and the order's client_order_id (one
        column joined, not the order row)."""
        return self.select_related("market", "fee_asset").annotate(client_order_id=F("order__client_order_id"))


class Fill(models.Model):
    """One side of a trade, as its account sees it."""

    class Liquidity(models.TextChoices):
        MAKER = "maker"
        TAKER = "taker"

    trade = models.ForeignKey(Trade, on_delete=models.PROTECT, related_name="fills", db_index=False,
                              db_constraint=False)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="fills", db_constraint=False)
    account = models.ForeignKey("accounts.Account", on_delete=models.PROTECT, related_name="fills", db_index=False,
                                db_constraint=False)
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False)
    side = models.CharField(max_length=4, choices=Side.choices)
    liquidity = models.CharField(max_length=5, choices=Liquidity.choices)
    price = AmountField()
    size = AmountField()
    fee = AmountField()
    fee_asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+", db_index=False,
                                  db_constraint=False)
    executed_at = models.DateTimeField()

    objects = FillQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["account", "-id"])]


class DeadManSwitch(models.Model):
    """An account's dead-man's switch (``POST /v1/orders/cancel-all-after``), over all its orders or one
    pair's: armed until ``trigger_at``, when trading.deadman cancels those orders unless a refresh moved
    it first. One per account and pair (and one for all pairs); kept after firing, disarmed."""

    account = models.ForeignKey("accounts.Account", on_delete=models.PROTECT, related_name="+", db_index=False)
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="+", null=True, blank=True,
                               db_index=False, help_text="Only this pair's orders; empty: every pair's.")
    timeout_ms = models.PositiveIntegerField(help_text="As last set; 0 disarmed it.")
    trigger_at = models.DateTimeField(null=True, blank=True, help_text="When it fires; empty: disarmed.")
    updated_at = models.DateTimeField(auto_now=True)
    fired_at = models.DateTimeField(null=True, blank=True, help_text="When it last fired.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "market"], condition=Q(market__isnull=False),
                                    name="dead_man_switch_unique_per_account_and_pair"),
            models.UniqueConstraint(fields=["account"], condition=Q(market__isnull=True),
                                    name="dead_man_switch_unique_per_account"),
        ]
        indexes = [models.Index(fields=["trigger_at"], condition=Q(trigger_at__isnull=False),
                                name="dead_man_switch_armed")]  # the watcher's look for due switches

    def __str__(self) -> str:
        return f"dead-man's switch of account {self.account_id}" + (f" on {self.market}" if self.market_id else "")


class AuditRun(models.Model):
    """One run of the ledger audit (trading.audit.run_audit), kept so that an operator sees when the books were
    last proven to balance, and what was wrong when they did not."""

    class Trigger(models.TextChoices):
        COMMAND = "command"  # manage.py audit_ledger
        BEAT = "beat"  # the periodic Celery job
        ADMIN = "admin"  # the admin's "Run the audit now"

    KEPT_PROBLEMS = 100  # sentences kept per run; problem_count says how many there were

    trigger = models.CharField(max_length=8, choices=Trigger.choices)
    started_by = models.CharField(max_length=150, blank=True, help_text="The operator, for a run from the admin.")
    started_at = models.DateTimeField()
    duration = models.DurationField()
    clean = models.BooleanField(help_text="Every invariant held.")
    problem_count = models.PositiveIntegerField()
    problems = models.JSONField(default=list, help_text="The first problems found, the first broken record first.")
    counts = models.JSONField(default=dict, help_text="The rows of the snapshot it read.")

    class Meta:
        ordering = ["-id"]
        permissions = [("run_audit", "Can run the ledger audit")]

    def __str__(self) -> str:
        return f"audit {self.pk} at {self.started_at:%Y-%m-%d %H:%M:%S}: " + (
            "clean" if self.clean else f"{self.problem_count} problem(s)")


class SlowRequest(models.Model):
    """No table: the admin's page of the slowest recent requests (exchange/slow_requests.py keeps them in Redis or
    in memory), here for its place in the admin index and its permission, trading.view_slowrequest."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "slowest recent request"
        verbose_name_plural = "slowest recent requests"
