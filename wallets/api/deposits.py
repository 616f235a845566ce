"""``GET /v1/account/deposits``: the account's deposits, newest first."""

from decimal import Decimal

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, viewsets

from exchange.fields import DecimalString, MillisecondsField
from exchange.money import format_amount
from trading.api.views import AccountViewMixin, IdCursorPagination
from wallets.api.queries import LOOKUPS, WalletListQuerySerializer
from wallets.models import Deposit



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


class DepositViewSet(AccountViewMixin, viewsets.GenericViewSet):
    pagination_class = IdCursorPagination
    serializer_class = DepositSerializer
    rate_weight = 5
    query_serializer = WalletListQuerySerializer

    @extend_schema(
        operation_id="listDeposits",
        summary="Your deposits, newest or oldest first",
        parameters=[WalletListQuerySerializer],
        responses={200: DepositSerializer(many=True)},
    )
    def list(self, request):
        return self.filtered_page(
            WalletListQuerySerializer, Deposit.objects.filter(account=self.account).select_related("asset"), LOOKUPS,
        )
