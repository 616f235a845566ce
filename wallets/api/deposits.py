"""``GET /v1/account/deposits``: the account's deposits, newest first."""

from datetime import datetime, timedelta
from decimal import Decimal

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, viewsets

from exchange.fields import EPOCH, DecimalString, Identifier, IntegerString, MillisecondsField
from exchange.money import format_amount
from exchange.openapi import error_responses
from trading.api.views import AUTH_ERRORS, AccountViewMixin, NewestFirst
from trading.models import Asset
from wallets.models import Deposit

LAST_MILLISECOND = 253402300799999  # 9999-12-31T23:59:59.999Z, the last instant a datetime holds
PAGE_PARAMETERS = {"limit", "cursor"}


class DepositSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField()
    asset = serializers.CharField(source="asset.symbol")
    amount = serializers.SerializerMethodField()
    external_id = serializers.CharField(help_text="The transaction id on the asset's network.")
    time = MillisecondsField(source="created_at", help_text="When it was credited, ms since the epoch.")

    class Meta:
        model = Deposit
        fields = ["id", "asset", "amount", "external_id", "time"]

    @extend_schema_field(DecimalString)
    def get_amount(self, deposit) -> str:
        return format_amount(deposit.amount, Decimal(1).scaleb(-deposit.asset.precision))


class Milliseconds(IntegerString):
    """A time in ms since the epoch, as a datetime."""

    def __init__(self, **kwargs):
        super().__init__(min_value=0, max_value=LAST_MILLISECOND, **kwargs)

    def run_validation(self, data) -> datetime:  # after the range check on the integer
        return EPOCH + timedelta(milliseconds=super().run_validation(data))


class DepositListQuerySerializer(serializers.Serializer):
    asset = Identifier(max_length=16, required=False, help_text="Only this asset's deposits.")
    start_time = Milliseconds(required=False, help_text="Credited at or after this time (ms since the epoch).")
    end_time = Milliseconds(required=False, help_text="Credited before this time (ms since the epoch), exclusive.")

    def validate_asset(self, symbol: str) -> Asset:
        asset = Asset.objects.filter(symbol=symbol).first()
        if asset is None:
            raise serializers.ValidationError(f"Unknown asset {symbol!r}.")
        return asset

    def validate(self, data):
        # DRF skips an empty optional parameter and reads the last of a repeated one; both are refused here.
        refused = {name: ["Unknown parameter."] for name in self.initial_data
                   if name not in self.fields and name not in PAGE_PARAMETERS}
        refused.update({name: ["Given more than once, or empty."] for name, values in self.initial_data.lists()
                        if name not in refused and (len(values) > 1 or values[0] == "")})
        if refused:
            raise serializers.ValidationError(refused)
        if "start_time" in data and "end_time" in data and data["start_time"] > data["end_time"]:
            raise serializers.ValidationError({"end_time": ["Must not be before start_time."]})
        return data


class DepositViewSet(AccountViewMixin, viewsets.GenericViewSet):
    pagination_class = NewestFirst
    serializer_class = DepositSerializer
    rate_weight = 5

    @extend_schema(
        summary="Your deposits, newest first",
        parameters=[DepositListQuerySerializer],
        responses={200: DepositSerializer(many=True), **error_responses(*AUTH_ERRORS)},
    )
    def list(self, request):
        return self.filtered_page(
            DepositListQuerySerializer, Deposit.objects.filter(account=self.account).select_related("asset"),
            {"asset": "asset", "start_time": "created_at__gte", "end_time": "created_at__lt"},
        )
