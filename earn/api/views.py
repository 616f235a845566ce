"""Earn products and subscriptions: parse, call earn.subscriptions, render."""

from decimal import Decimal

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.permissions import CanTrade
from exchange.errors import ErrorCode
from exchange.fields import (LARGEST_INTEGER, DecimalString, IdentifierPattern, JsonInteger, MillisecondsField,
                             to_milliseconds)
from exchange.openapi import error_responses
from trading.api.views import AccountViewMixin, HasTradingAccount, IdCursorPagination
from wallets.api.made_once import made_once_responses, make_once
from wallets.api.queries import LOOKUPS, WalletListQuerySerializer

from earn.interest import DAYS_PER_YEAR
from earn.models import EarnProduct, Subscription
from earn.subscriptions import ONE_DAY, SubscriptionRequest, redeem, shown_amount, start_of, subscribe

INTEREST_NOTE = (f"Interest is paid daily, for each whole UTC day held (from the day after subscribing to the day "
                 f"before redeeming): amount × annual_rate / {DAYS_PER_YEAR}, rounded down to the asset's precision, "
                 "to the earn wallet's available balance.")
SUBSCRIPTION_ID = OpenApiParameter("id", {"type": "integer", "minimum": 1, "maximum": LARGEST_INTEGER},
                                   OpenApiParameter.PATH, description="The subscription_id.")


def rate(value: Decimal) -> str:
    return format(value.normalize(), "f")


class EarnProductSerializer(serializers.ModelSerializer):
    asset = serializers.CharField(source="asset.symbol")
    annual_rate = serializers.SerializerMethodField(help_text="A year's interest as a fraction: 0.05 = 5 %.")
    lock_days = serializers.IntegerField(help_text="0: flexible, redeemable at any time; else locked for this many "
                                                   "days after subscribing.")
    min_amount = serializers.SerializerMethodField(help_text="The smallest subscription.")
    remaining_capacity = serializers.SerializerMethodField(help_text="What may still be subscribed, all accounts "
                                                                     "together.")

    class Meta:
        model = EarnProduct
        fields = ["id", "asset", "annual_rate", "lock_days", "min_amount", "remaining_capacity"]

    @extend_schema_field(DecimalString)
    def get_annual_rate(self, product) -> str:
        return rate(product.annual_rate)

    @extend_schema_field(DecimalString)
    def get_min_amount(self, product) -> str:
        return shown_amount(product.asset, product.min_amount)

    @extend_schema_field(DecimalString)
    def get_remaining_capacity(self, product) -> str:
        return shown_amount(product.asset, product.remaining_capacity)


class SubscriptionCreateSerializer(serializers.Serializer):
    product_id = JsonInteger(min_value=1, help_text="The product's id (`GET /v1/earn/products`).")
    amount = DecimalString(help_text="At least the product's `min_amount`, at most the asset's precision in places.")
    client_subscription_id = IdentifierPattern(
        r"^[A-Za-z0-9_-]{1,64}$", required=False, help_text="Your id, unique per account: retries are safe."
    )

    def validate(self, data) -> SubscriptionRequest:
        return SubscriptionRequest(product_id=data["product_id"], amount=data["amount"],
                                   client_subscription_id=data.get("client_subscription_id"))


class SubscriptionSerializer(serializers.ModelSerializer):
    """A subscription to an earn product, with the interest it has earned."""

    subscription_id = serializers.IntegerField(source="pk")
    product_id = serializers.IntegerField()
    asset = serializers.CharField(source="asset.symbol")
    amount = serializers.SerializerMethodField(help_text="The principal.")
    annual_rate = serializers.SerializerMethodField(help_text="The product's rate when subscribed, kept for good.")
    lock_days = serializers.IntegerField(help_text="The product's term when subscribed, kept for good (0: flexible).")
    status = serializers.ChoiceField(choices=Subscription.Status.choices)
    interest = serializers.SerializerMethodField(help_text="The interest paid so far.")
    accrued_until = serializers.SerializerMethodField(
        help_text="Interest is settled for the time before this (ms since the epoch, a UTC midnight).")
    time = MillisecondsField(source="created_at", help_text="When it was subscribed.")
    unlocks_at = MillisecondsField(help_text="From when it may be redeemed.")
    redeemed_at = MillisecondsField(allow_null=True)

    class Meta:
        model = Subscription
        fields = ["subscription_id", "client_subscription_id", "product_id", "asset", "amount", "annual_rate",
                  "lock_days", "status", "interest", "accrued_until", "time", "unlocks_at", "redeemed_at"]

    @extend_schema_field(DecimalString)
    def get_amount(self, subscription) -> str:
        return shown_amount(subscription.asset, subscription.amount)

    @extend_schema_field(DecimalString)
    def get_annual_rate(self, subscription) -> str:
        return rate(subscription.annual_rate)

    @extend_schema_field(DecimalString)
    def get_interest(self, subscription) -> str:
        return shown_amount(subscription.asset, subscription.interest or Decimal(0))

    @extend_schema_field(MillisecondsField)
    def get_accrued_until(self, subscription) -> int:
        return to_milliseconds(start_of(subscription.accrued_through + ONE_DAY))


class EarnProductViewSet(viewsets.GenericViewSet):
    serializer_class = EarnProductSerializer

    @extend_schema(
        operation_id="listEarnProducts",
        summary="Earn products open to subscription",
        description="Every active earn product, public. " + INTEREST_NOTE,
        responses={200: EarnProductSerializer(many=True)},
    )
    def list(self, request):
        return Response(EarnProductSerializer(EarnProduct.objects.open(), many=True).data)


class SubscriptionViewSet(AccountViewMixin, viewsets.GenericViewSet):
    lookup_value_regex = "[0-9]{1,18}"
    pagination_class = IdCursorPagination
    serializer_class = SubscriptionSerializer
    rate_weight = {"create": 1, "redeem": 1, "list": 5}
    response_links = {name: {"redeemEarnSubscription": {"id": "$response.body#/subscription_id"}}
                      for name in ("createEarnSubscription", "redeemEarnSubscription")}
    query_serializer = {"list": WalletListQuerySerializer}

    def get_permissions(self):
        if self.action in ("create", "redeem"):
            return [HasTradingAccount(), CanTrade()]
        return super().get_permissions()

    def get_queryset(self):
        return Subscription.objects.filter(account=self.account).for_rendering()

    @extend_schema(
        operation_id="createEarnSubscription",
        summary="Subscribe to an earn product",
        description="Moves `amount` of the product's asset from the spot wallet's available balance to the earn "
                    "wallet, locked there (transfers cannot move it) until redeemed. " + INTEREST_NOTE,
        request=SubscriptionCreateSerializer,
        responses={
            **made_once_responses(SubscriptionSerializer, "Subscribed.", "subscription", "client_subscription_id"),
            **error_responses(ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.INSUFFICIENT_FUNDS,
                              ErrorCode.EARN_PRODUCT_INACTIVE, ErrorCode.EARN_CAPACITY_EXCEEDED,
                              ErrorCode.DUPLICATE_CLIENT_SUBSCRIPTION_ID),
        },
    )
    def create(self, request):
        return make_once(request, self.account, SubscriptionCreateSerializer, subscribe, SubscriptionSerializer)

    @extend_schema(
        operation_id="redeemEarnSubscription",
        summary="Redeem a subscription (idempotent)",
        description="Moves the principal back to the spot wallet's available balance; it earns nothing for the day "
                    "of redemption. A locked product's subscription cannot be redeemed before `unlocks_at` "
                    "(`SUBSCRIPTION_LOCKED`). Redeeming it again returns it unchanged.",
        parameters=[SUBSCRIPTION_ID],
        request=None,
        responses={200: OpenApiResponse(SubscriptionSerializer, description="Redeemed (also when repeated)."),
                   **error_responses(ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.SUBSCRIPTION_NOT_FOUND,
                                     ErrorCode.SUBSCRIPTION_LOCKED)},
    )
    @action(detail=True, methods=["post"])
    def redeem(self, request, pk: str):
        return Response(SubscriptionSerializer(redeem(self.account, int(pk))).data)

    @extend_schema(
        operation_id="listEarnSubscriptions",
        summary="Your earn subscriptions, newest or oldest first",
        description=INTEREST_NOTE,
        parameters=[WalletListQuerySerializer],
        responses={200: SubscriptionSerializer(many=True)},
    )
    def list(self, request):
        return self.filtered_page(WalletListQuerySerializer, self.get_queryset(), LOOKUPS)
