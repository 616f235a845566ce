import copy
import functools
import re
from decimal import Decimal

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from exchange.fields import (PAIR_PATTERN, DecimalString, Identifier, IdentifierPattern, IntegerString,
                             JsonInteger, MillisecondsField, PairName, StrictBoolean, one_or_more_of)
from exchange.money import format_amount
from exchange.openapi import ErrorDetailSerializer
from exchange.queries import PageQuery, TimeWindowQuery
from trading import batch, deadman
from trading.models import Fill, Order, Side
from trading.orders import OrderRequest

AMOUNT_FIELDS = ("price", "size", "funds", "stop_price")
CLIENT_ORDER_ID = r"^[A-Za-z0-9_-]{1,64}$"
AVERAGE_PRICE_QUANTUM = Decimal(1).scaleb(-18)


class FieldsBuiltOnce:
    """A serializer builds its fields anew for every instance: from the model (ModelSerializer), then
    a deep copy of each, re-running every field's constructor: about a tenth of the web side of a
    create (its validation and its response). Build them once per class, then hand out shallow
    copies: each instance binds its own copy (name, parent, source), and the state the copies share
    (choices, validators, defaults) is only read. A nested serializer keeps per-instance state of its
    own (its bound fields, data, errors), so it cannot be shared this way."""

    _built_fields = None

    def get_fields(self):
        cls = type(self)
        if cls.__dict__.get("_built_fields") is None:
            built = super().get_fields()
            nested = [name for name, field in built.items() if isinstance(field, serializers.BaseSerializer)]
            if nested:
                raise TypeError(f"{cls.__name__}: nested serializers ({', '.join(nested)}) cannot be shared")
            cls._built_fields = built
        return {name: copy.copy(field) for name, field in cls._built_fields.items()}


class RefusesUnknownFields:
    """A body's fields that the serializer does not declare are refused, not ignored: a typo such as
    "prize" must not silently place a different order. The OpenAPI document says so of its body
    (``additionalProperties: false``, exchange/schema.py)."""

    refuses_unknown_fields = True

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class OrderCreateSerializer(RefusesUnknownFields, FieldsBuiltOnce, serializers.Serializer):
    pair = PairName()
    side = serializers.ChoiceField(choices=Side.choices)
    type = serializers.ChoiceField(choices=Order.Type.choices)
    price = DecimalString(required=False, help_text="Limit price; for a stop, the limit it enters with.")
    size = DecimalString(required=False, help_text="In base. A market buy may give funds instead.")
    funds = DecimalString(required=False, help_text="Market (or stop-market) buy only: quote to spend.")
    stop_price = DecimalString(required=False, help_text="Stop orders: the last-trade price that triggers it.")
    trigger = serializers.ChoiceField(
        choices=Order.Trigger.choices, required=False,
        help_text="Stop orders: trigger when a trade prints at or `above` stop_price, or at or `below` it. Default: "
                  "above for a buy (stop-loss of a short, breakout), below for a sell (stop-loss); a take-profit "
                  "sell is `above`.",
    )
    time_in_force = serializers.ChoiceField(
        choices=Order.TimeInForce.choices, required=False,
        help_text="GTC (default for limit and stop-limit), IOC (default for market and stop-market) or FOK.",
    )
    post_only = StrictBoolean(default=False, help_text="Reject (POST_ONLY_WOULD_TAKE) instead of taking.")
    stp = serializers.ChoiceField(
        choices=Order.SelfTradePrevention.choices, default=Order.SelfTradePrevention.CANCEL_OLDEST,
        help_text="Self-trade prevention when this order meets one of your own resting orders.",
    )
    client_order_id = IdentifierPattern(
        CLIENT_ORDER_ID, required=False, help_text="Your id, unique per account: retries are safe."
    )

    def validate(self, data):
        return order_request(data)


def order_request(data: dict) -> OrderRequest:
    """The order a create's fields ask for, each field already parsed: the rules between fields."""
    errors = {}
    for name in AMOUNT_FIELDS:
        if name in data and data[name] <= 0:
            errors[name] = ["Must be greater than zero."]
    kind, side = data["type"], data["side"]
    given = {name for name in AMOUNT_FIELDS if name in data}

    def require(*names):
        for name in names:
            if name not in given:
                errors.setdefault(name, []).append(f"Required for a {kind} order.")

    def forbid(*names, why):
        for name in names:
            if name in given:
                errors.setdefault(name, []).append(why)

    if kind == Order.Type.LIMIT:
        require("price", "size")
        forbid("funds", "stop_price", why="Not allowed on a limit order.")
    elif kind == Order.Type.MARKET:
        forbid("price", "stop_price", why="Not allowed on a market order.")
    else:
        require("stop_price")
    if kind != Order.Type.STOP and "trigger" in data:
        errors["trigger"] = ["Only stop orders have a trigger."]
    if kind != Order.Type.LIMIT and not (kind == Order.Type.STOP and "price" in given):
        if ("size" in given) == ("funds" in given):
            errors.setdefault("size", []).append("Give exactly one of size and funds.")
    if kind == Order.Type.STOP and "price" in given:
        forbid("funds", why="A stop-limit order is given by size.")
        require("size")
    if side == Side.SELL:
        forbid("funds", why="Only buys may give funds.")

    is_market_like = kind == Order.Type.MARKET or (kind == Order.Type.STOP and "price" not in given)
    tif = data.get("time_in_force") or (Order.TimeInForce.IOC if is_market_like else Order.TimeInForce.GTC)
    if is_market_like and tif == Order.TimeInForce.GTC:
        errors["time_in_force"] = ["A market order cannot rest: use IOC or FOK."]
    if tif == Order.TimeInForce.FOK and "funds" in given:
        errors["time_in_force"] = ["FOK needs a size."]
    if data["post_only"] and (is_market_like or tif != Order.TimeInForce.GTC):
        errors["post_only"] = ["Only a GTC limit or stop-limit order can be post-only."]
    if errors:
        raise serializers.ValidationError(errors)
    return OrderRequest(**{**data, "time_in_force": tif})


def parse_order(data) -> OrderRequest:
    """A create's body as OrderCreateSerializer parses it: plain checks where every field passes them (the
    common case, at a fraction of the serializer's cost); anything else goes to the serializer, which
    words every refusal."""
    fields = plain_order_fields(data)
    if fields is not None:
        try:
            return order_request(fields)
        except serializers.ValidationError:
            pass
    form = OrderCreateSerializer(data=data)
    form.is_valid(raise_exception=True)
    return form.validated_data


def plain_order_fields(data) -> dict | None:
    """The fields as OrderCreateSerializer's fields parse them, or None unless each one plainly passes:
    each check takes only what its field takes and gives the same value."""
    if type(data) is not dict or not all(name in data for name in ("pair", "side", "type")):
        return None
    fields = {"post_only": False, "stp": Order.SelfTradePrevention.CANCEL_OLDEST}  # the serializer's defaults
    for name, value in data.items():
        check = PLAIN_CHECKS.get(name)
        if check is None:
            return None
        try:
            fields[name] = check(value)
        except (TypeError, serializers.ValidationError):
            return None
    return fields


def plain_text(pattern: str):
    """A string matching ``pattern`` whole (what PairName and IdentifierPattern take, and then some)."""
    match = re.compile(pattern.removeprefix("^").removesuffix("$")).fullmatch

    def check(value):
        if type(value) is not str or not match(value):
            raise TypeError
        return value
    return check


def plain_choice(values: list[str]):
    choices = frozenset(values)

    def check(value):
        if type(value) is not str or value not in choices:
            raise TypeError
        return value
    return check


PLAIN_CHECKS = {
    "pair": plain_text(PAIR_PATTERN),
    "side": plain_choice(Side.values),
    "type": plain_choice(Order.Type.values),
    **dict.fromkeys(AMOUNT_FIELDS, DecimalString().to_internal_value),
    "trigger": plain_choice(Order.Trigger.values),
    "time_in_force": plain_choice(Order.TimeInForce.values),
    "post_only": StrictBoolean().to_internal_value,
    "stp": plain_choice(Order.SelfTradePrevention.values),
    "client_order_id": plain_text(CLIENT_ORDER_ID),
}


# The order body by `type` and by the way it gives its amounts, as OrderCreateSerializer.validate judges it:
# each way is a schema of its own, with the fields it takes, those it needs, and the values it refuses.
COMMON_FIELDS = ["pair", "side", "type", "stp", "client_order_id"]
POST_ONLY_NEEDS_GTC = {"not": {"required": ["post_only", "time_in_force"], "properties": {
    "post_only": {"enum": [True]}, "time_in_force": {"enum": ["IOC", "FOK"]}}}}
MARKET_LIKE = {"time_in_force": ["GTC"], "post_only": [True]}  # it cannot rest
BY_FUNDS = {**MARKET_LIKE, "side": ["sell"], "time_in_force": ["GTC", "FOK"]}  # a buy; FOK needs a size
ORDER_WAYS = {
    Order.Type.LIMIT: [("Limit", ["price", "size"], [], {}, POST_ONLY_NEEDS_GTC)],
    Order.Type.MARKET: [
        ("MarketBySize", ["size"], [], MARKET_LIKE, {}),
        ("MarketByFunds", ["funds"], [], BY_FUNDS, {}),
    ],
    Order.Type.STOP: [
        ("StopLimit", ["stop_price", "price", "size"], ["trigger"], {}, POST_ONLY_NEEDS_GTC),
        ("StopMarketBySize", ["stop_price", "size"], ["trigger"], MARKET_LIKE, {}),
        ("StopMarketByFunds", ["stop_price", "funds"], ["trigger"], BY_FUNDS, {}),
    ],
}


class OrderRequestSchema(OpenApiSerializerExtension):
    """The order body in the OpenAPI document: a `oneOf` by `type` (its discriminator), each type a `oneOf` of
    its ways, each way an object of exactly the fields it takes: what the document accepts is what
    OrderCreateSerializer accepts, the market's grids and minimums aside."""

    target_class = OrderCreateSerializer

    def get_name(self, auto_schema, direction):
        return "Order"  # the document adds "Request"

    def map_serializer(self, auto_schema, direction):
        fields = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)["properties"]

        def component(name: str, schema: dict, suffix: str = "OrderRequest") -> str:
            resolved = ResolvedComponent(name=f"{name}{suffix}", type=ResolvedComponent.SCHEMA, schema=schema,
                                         object=f"{name}{suffix}")
            auto_schema.registry.register_on_missing(resolved)
            return resolved.ref["$ref"]

        def refusing(field: str, values: list) -> dict:
            """The field's own schema, these values excepted (its enum by name: ENUM_NAME_OVERRIDES)."""
            own = fields[field]
            if field == "post_only":
                return {**own, "not": {"enum": values}}
            name = {"side": "Side", "time_in_force": "TimeInForce"}[field]
            return {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "not": {"enum": values},
                    "description": own.get("description", "")}

        by_type = {}
        for kind, ways in ORDER_WAYS.items():
            refs = []
            type_ref = component(kind.capitalize(), {"type": "string", "enum": [kind]}, "OrderType")
            for name, needed, optional, refused, constraints in ways:
                names = [*COMMON_FIELDS, *needed, *optional, "time_in_force", "post_only"]
                properties = {field: fields[field] for field in names}
                properties["type"] = {"$ref": type_ref}
                properties.update({field: refusing(field, values) for field, values in refused.items()})
                refs.append(component(name, {
                    "type": "object",
                    "description": f"A {kind} order{' given by ' + needed[-1] if len(ways) > 1 else ''}.",
                    "properties": properties, "required": ["pair", "side", "type", *needed],
                    "additionalProperties": False, **constraints,
                }))
            by_type[kind] = refs[0] if len(refs) == 1 else component(
                kind.capitalize(), {"oneOf": [{"$ref": ref} for ref in refs], "description": f"A {kind} order."})
        return {"oneOf": [{"$ref": ref} for ref in by_type.values()],
                "discriminator": {"propertyName": "type", "mapping": by_type}}


class OrderSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    order_id = serializers.IntegerField(source="pk")
    pair = serializers.CharField(source="market.pair")
    price = serializers.SerializerMethodField()
    size = serializers.SerializerMethodField()
    funds = serializers.SerializerMethodField()
    stop_price = serializers.SerializerMethodField()
    filled_size = serializers.SerializerMethodField()
    remaining_size = serializers.SerializerMethodField()
    executed_value = serializers.SerializerMethodField(help_text="Quote exchanged so far, before fees.")
    average_fill_price = serializers.SerializerMethodField()
    fee = serializers.SerializerMethodField(help_text="Fees so far, in fee_asset (the asset the order receives).")
    fee_asset = serializers.SerializerMethodField()
    # Null or a direction, never blank (the model's choices would let the document say "").
    trigger = serializers.ChoiceField(choices=Order.Trigger.choices, allow_null=True,
                                      help_text="Stops only: above or below stop_price (null for other orders).")
    created_at = MillisecondsField()
    updated_at = MillisecondsField()
    done_at = MillisecondsField(allow_null=True)

    class Meta:
        model = Order
        fields = [
            "order_id", "client_order_id", "pair", "side", "type", "status", "reject_reason", "cancel_reason", "price",
            "size", "funds", "stop_price", "trigger", "time_in_force", "post_only", "stp", "filled_size",
            "remaining_size", "executed_value", "average_fill_price", "fee", "fee_asset", "cancel_requested",
            "created_at", "updated_at", "done_at",
        ]

    @staticmethod
    def _format(value, step) -> str | None:
        return None if value is None else format_amount(value, step)

    @classmethod
    def render(cls, order: Order) -> dict:
        """``cls(order).data`` from one instance bound once per process: rendering leaves nothing on its
        serializer (no context, no per-order state), while a new instance copies and binds every field."""
        return rendering(cls).to_representation(order)

    @extend_schema_field(DecimalString(allow_null=True))
    def get_price(self, order) -> str | None:
        return self._format(order.price, order.market.tick_size)

    @extend_schema_field(DecimalString(allow_null=True))
    def get_stop_price(self, order) -> str | None:
        return self._format(order.stop_price, order.market.tick_size)

    @extend_schema_field(DecimalString(allow_null=True))
    def get_size(self, order) -> str | None:
        return self._format(order.size, order.market.lot_size)

    @extend_schema_field(DecimalString(allow_null=True))
    def get_funds(self, order) -> str | None:
        return self._format(order.funds, quote_step(order))

    @extend_schema_field(DecimalString)
    def get_filled_size(self, order) -> str:
        return self._format(order.filled_size, order.market.lot_size)

    @extend_schema_field(DecimalString(allow_null=True))
    def get_remaining_size(self, order) -> str | None:
        return self._format(order.remaining_size, order.market.lot_size)

    @extend_schema_field(DecimalString)
    def get_executed_value(self, order) -> str:
        return self._format(order.executed_value, quote_step(order))

    @extend_schema_field(DecimalString(allow_null=True))
    def get_average_fill_price(self, order) -> str | None:
        average = order.average_fill_price
        if average is None:
            return None
        return self._format(average.quantize(AVERAGE_PRICE_QUANTUM), order.market.tick_size)

    @extend_schema_field(DecimalString)
    def get_fee(self, order) -> str:
        return self._format(order.fee, fee_step(order))

    def get_fee_asset(self, order) -> str:
        return order.market.fee_asset(order.side).symbol


@functools.cache
def rendering(serializer_class) -> serializers.Serializer:
    return serializer_class()


def quote_step(order) -> Decimal:
    return Decimal(1).scaleb(-order.market.quote.precision)


def fee_step(order) -> Decimal:
    return Decimal(1).scaleb(-order.market.fee_asset(order.side).precision)


class CancelAllSerializer(RefusesUnknownFields, serializers.Serializer):
    """A misspelt field refused: ignored, it would widen the cancel to every pair."""

    pair = PairName(required=False, help_text="Only this pair's orders.")


class CancelAllResultSerializer(serializers.Serializer):
    orders = OrderSerializer(many=True, help_text="The orders a cancel was queued for, in their current state.")


class OrderListQuerySerializer(PageQuery, TimeWindowQuery):
    pair = PairName(required=False)
    status = Identifier(
        required=False, schema_pattern=one_or_more_of(["live", *Order.Status.values]),
        help_text="One status, several separated by commas, or `live` (pending, untriggered, open, partially_filled).",
    )

    def validate_status(self, value: str) -> list[str]:
        statuses = []
        for name in value.split(","):
            if name == "live":
                statuses.extend(Order.LIVE_STATUSES)
            elif name in Order.Status.values:
                statuses.append(name)
            else:
                raise serializers.ValidationError(f"Unknown status {name!r}.")
        return statuses


class FillSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    fill_id = serializers.IntegerField(source="pk")
    trade_id = serializers.IntegerField()
    order_id = serializers.IntegerField()
    client_order_id = serializers.CharField(allow_null=True, help_text="The order's client_order_id, if it has one.")
    pair = serializers.CharField(source="market.pair")
    price = serializers.SerializerMethodField()
    size = serializers.SerializerMethodField()
    fee = serializers.SerializerMethodField()
    fee_asset = serializers.CharField(source="fee_asset.symbol")
    time = MillisecondsField(source="executed_at")

    class Meta:
        model = Fill
        fields = ["fill_id", "trade_id", "order_id", "client_order_id", "pair", "side", "liquidity", "price", "size",
                  "fee", "fee_asset", "time"]

    @extend_schema_field(DecimalString)
    def get_price(self, fill) -> str:
        return format_amount(fill.price, fill.market.tick_size)

    @extend_schema_field(DecimalString)
    def get_size(self, fill) -> str:
        return format_amount(fill.size, fill.market.lot_size)

    @extend_schema_field(DecimalString)
    def get_fee(self, fill) -> str:
        return format_amount(fill.fee, Decimal(1).scaleb(-fill.fee_asset.precision))


class FillListQuerySerializer(PageQuery, TimeWindowQuery):
    pair = PairName(required=False)
    order_id = IntegerString(required=False, min_value=1)


def format_rate(rate: Decimal) -> str:
    """A fee rate with the places it needs: "0.001" is 0.1 %."""
    return format(rate.normalize(), "f")


class FeeRate(DecimalString):
    def to_representation(self, value: Decimal) -> str:
        return format_rate(value)


class PairFeesSerializer(serializers.Serializer):
    pair = serializers.CharField()
    maker_fee = FeeRate(help_text="Rate on trades where your order rested (0.001 = 0.1 %).")
    taker_fee = FeeRate(help_text="Rate on trades where your order took liquidity.")

    def to_representation(self, item):
        pair, maker, taker = item
        return super().to_representation({"pair": pair, "maker_fee": maker, "taker_fee": taker})


class AccountFeesSerializer(serializers.Serializer):
    tier = serializers.CharField(help_text="Your fee tier.")
    fees = PairFeesSerializer(many=True, help_text="Every market, by pair.")


class WalletBalanceSerializer(serializers.Serializer):
    available = DecimalString()
    locked = DecimalString()
    total = DecimalString()


class AssetBalanceSerializer(serializers.Serializer):
    """One asset's balances in each wallet, with the asset's places or more (fee dust, never rounded)."""

    asset = serializers.CharField()
    spot = WalletBalanceSerializer()
    margin = WalletBalanceSerializer()
    earn = WalletBalanceSerializer()

    def to_representation(self, item):  # (asset, {wallet: (available, locked)})
        asset, wallets = item
        step = Decimal(1).scaleb(-asset.precision)
        return {
            "asset": asset.symbol,
            **{
                wallet: {"available": format_amount(available, step), "locked": format_amount(locked, step),
                         "total": format_amount(available + locked, step)}
                for wallet, (available, locked) in wallets.items()
            },
        }


class BalancesSerializer(serializers.Serializer):
    balances = AssetBalanceSerializer(many=True)


# The orders of a batch as sent: each is parsed on its own (OrderCreateSerializer), so that a bad one gets its
# own error and the others go ahead. So the request takes any item, and the document says so.
@extend_schema_field({"type": "array", "items": {
    "description": "An order as `POST /v1/orders` takes it (the `OrderRequest` schema); an item that is not one gets "
                   "its own `INVALID_REQUEST` in `results`."}})
class BatchOrders(serializers.ListField):
    pass


class OrderBatchSerializer(RefusesUnknownFields, serializers.Serializer):
    """Up to 20 orders of this account, each with a result of its own."""

    orders = BatchOrders(min_length=1, max_length=batch.MAX_ITEMS,
                         help_text=f"1 to {batch.MAX_ITEMS} orders, each as `POST /v1/orders` takes it.")


class OrderCancelBatchSerializer(RefusesUnknownFields, serializers.Serializer):
    """Up to 20 orders to cancel, by `order_ids` or by `client_order_ids` (one of the two)."""

    body_constraints = {"oneOf": [{"required": ["order_ids"]}, {"required": ["client_order_ids"]}]}

    order_ids = serializers.ListField(child=JsonInteger(min_value=1), min_length=1, max_length=batch.MAX_ITEMS,
                                      required=False, help_text=f"1 to {batch.MAX_ITEMS} order ids.")
    client_order_ids = serializers.ListField(
        child=IdentifierPattern(CLIENT_ORDER_ID), min_length=1, max_length=batch.MAX_ITEMS, required=False,
        help_text=f"Or 1 to {batch.MAX_ITEMS} client_order_ids.",
    )

    def validate(self, data):
        if ("order_ids" in data) == ("client_order_ids" in data):
            raise serializers.ValidationError({"order_ids": ["Give either order_ids or client_order_ids."]})
        return data


class BatchResultSerializer(serializers.Serializer):
    # One item's outcome: `order` when `status` is 2xx, else `error` (its schema: trading/api/batch.py).

    status = serializers.IntegerField(help_text="The HTTP status this item would have had as a request of its own.")
    order = OrderSerializer(required=False, help_text="The order (2xx).")
    error = ErrorDetailSerializer(required=False, help_text="Why this item was refused (4xx), as an error body's.")


class BatchResultsSerializer(serializers.Serializer):
    results = BatchResultSerializer(many=True, help_text="One per item, in the order given.")


@extend_schema_field({"type": "integer", "minimum": 0, "maximum": deadman.MAX_TIMEOUT_MS,
                      "not": {"minimum": 1, "maximum": deadman.MIN_TIMEOUT_MS - 1}})
class SwitchTimeout(JsonInteger):
    """0, or from MIN_TIMEOUT_MS up (validate_timeout_ms): the document says so with its bounds."""


class CancelAllAfterSerializer(RefusesUnknownFields, serializers.Serializer):
    """Arm, refresh or disarm the dead-man's switch."""

    timeout_ms = SwitchTimeout(
        min_value=0, max_value=deadman.MAX_TIMEOUT_MS,
        help_text=f"Cancel everything unless set again within this many ms: 0 disarms, else "
                  f"{deadman.MIN_TIMEOUT_MS:,} to {deadman.MAX_TIMEOUT_MS:,}.",
    )
    pair = PairName(required=False, help_text="Only this pair's orders (a switch of its own).")

    def validate_timeout_ms(self, value: int) -> int:
        if 0 < value < deadman.MIN_TIMEOUT_MS:
            raise serializers.ValidationError(f"0 (disarm) or at least {deadman.MIN_TIMEOUT_MS:,}.")
        return value


class DeadManSwitchSerializer(serializers.Serializer):
    """The dead-man's switch as set."""

    pair = serializers.CharField(allow_null=True, help_text="The pair it covers; null: every pair.")
    timeout_ms = serializers.IntegerField(help_text="As set; 0: disarmed.")
    current_time = serializers.IntegerField(help_text="Server time when it was set (ms since the epoch).")
    trigger_time = serializers.IntegerField(allow_null=True, help_text="When it fires unless set again (ms since "
                                            "the epoch); null: disarmed.")
