from decimal import Decimal

from django.db import models
from django.db.models import F, Q

from exchange.money import DECIMAL_PLACES, MAX_DIGITS


class AmountField(models.DecimalField):
    """Every amount, price and size: exact decimal, 36 digits with 18 after the point.

    PostgreSQL stores it as numeric. SQLite has no exact decimal type (its numeric affinity turns
    "0.1" into a float, exact to 15 digits only), so there the value is stored as fixed-width text,
    ``000000000000063000.500000000000000000``: exact, and for the non-negative values that are
    compared and sorted (prices, sizes, balances), text order is numeric order. A negative value
    (a ledger debit) sorts before every non-negative one, which is what ``>= 0`` checks need.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_digits", MAX_DIGITS)
        kwargs.setdefault("decimal_places", DECIMAL_PLACES)
        super().__init__(*args, **kwargs)

    def get_internal_type(self) -> str:
        # Not "DecimalField": that would make SQLite's backend read values back through a float.
        return "AmountField"

    def db_type(self, connection) -> str:
        if connection.vendor == "sqlite":
            return "text"
        return f"numeric({self.max_digits}, {self.decimal_places})"

    def get_db_prep_value(self, value, connection, prepared=False):
        if connection.vendor != "sqlite" or value is None or hasattr(value, "resolve_expression"):
            return super().get_db_prep_value(value, connection, prepared)
        value = self.to_python(value)
        width = self.max_digits + 1  # digits and the point
        return format(value.quantize(Decimal(1).scaleb(-self.decimal_places)), f"0{width}.{self.decimal_places}f")

    def from_db_value(self, value, expression, connection):
        if value is None or isinstance(value, Decimal):
            return value
        # Text from SQLite is exact; a float only comes from SQLite's SUM() over text (statistics).
        return Decimal(value) if isinstance(value, str) else Decimal(repr(value))


class Asset(models.Model):
    symbol = models.CharField(max_length=12, unique=True)
    name = models.CharField(max_length=60)
    precision = models.PositiveSmallIntegerField(help_text="Decimal places shown to people.")
    circulating_supply = AmountField(null=True, blank=True, help_text="For the ticker's market cap.")

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(symbol__regex=r"^[A-Z0-9]{2,12}$"), name="asset_symbol_format")]

    def __str__(self) -> str:
        return self.symbol


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

    def __str__(self) -> str:
        return self.pair


class Wallet(models.TextChoices):
    SPOT = "spot"
    MARGIN = "margin"
    EARN = "earn"


class Balance(models.Model):
    """What an account holds of an asset in one wallet. Written only by trading.ledger.apply_journals."""

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
        TRADE = "trade"
        FEE = "fee"

    journal = models.UUIDField(db_index=True)
    account = models.ForeignKey(
        "accounts.Account", null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_entries"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="ledger_entries")
    wallet = models.CharField(max_length=8, choices=Wallet.choices, default=Wallet.SPOT)
    bucket = models.CharField(max_length=10, choices=Bucket.choices)
    amount = AmountField(help_text="Signed: positive credits the bucket, negative debits it.")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    reference = models.CharField(max_length=120, help_text="What caused it: order:12, trade:7, admin:alice.")
    memo = models.CharField(max_length=200, blank=True, help_text="Why, in words (operator adjustments).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["account", "asset", "id"]), models.Index(fields=["reference"])]
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
    """The pair's book sequence: +1 per published delta, never reset. Written by the matcher."""

    market = models.OneToOneField(Market, primary_key=True, on_delete=models.CASCADE, related_name="book_state")
    sequence = models.BigIntegerField(default=0)


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


class Trade(models.Model):
    """A match between a resting (maker) order and an incoming (taker) order, at the maker's price."""

    class Side(models.TextChoices):
        BUY = "buy"
        SELL = "sell"

    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="trades")
    price = AmountField()
    size = AmountField()
    taker_side = models.CharField(max_length=4, choices=Side.choices)
    executed_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["market", "-id"]), models.Index(fields=["market", "executed_at"])]
        constraints = [models.CheckConstraint(condition=Q(price__gt=0, size__gt=0), name="trade_price_size_positive")]
