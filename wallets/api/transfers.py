"""Transfers between an account's own wallets: parse, call wallets.transfers, render."""

from decimal import Decimal

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, viewsets

from accounts.permissions import CanTrade
from exchange.errors import ErrorCode
from exchange.fields import AssetSymbol, DecimalString, IdentifierPattern, MillisecondsField
from exchange.money import format_amount
from exchange.openapi import error_responses
from trading.api.views import AccountViewMixin, HasTradingAccount, IdCursorPagination
from trading.models import Wallet
from wallets.api.made_once import made_once_responses, make_once
from wallets.api.queries import LOOKUPS, WalletListQuerySerializer
from wallets.models import Transfer
from wallets.transfers import TransferRequest, make_transfer

WALLETS_NOTE = ("Orders trade from `spot` only. `margin` holds collateral: nothing borrows against it yet "
                "(borrowing comes in an issue of its own). `earn` holds what is subscribed to earn products.")


class FromField:
    # `from` is a Python keyword and cannot be declared as a class attribute: `from_wallet` is
    # declared in its place and served under that name.

    def get_fields(self):
        return {("from" if name == "from_wallet" else name): field for name, field in super().get_fields().items()}


class TransferCreateSerializer(FromField, serializers.Serializer):
    """A transfer between two of your own wallets, from the available balance of `from`."""

    asset = AssetSymbol(help_text="The asset's symbol, e.g. `BTC`.")
    amount = DecimalString(help_text="Greater than zero.")
    from_wallet = serializers.ChoiceField(choices=Wallet.choices, help_text="The wallet debited.")
    to = serializers.ChoiceField(choices=Wallet.choices, help_text="The wallet credited; not the same as `from`.")
    client_transfer_id = IdentifierPattern(
        r"^[A-Za-z0-9_-]{1,64}$", required=False, help_text="Your id, unique per account: retries are safe."
    )

    def validate(self, data) -> TransferRequest:
        return TransferRequest(asset=data["asset"], amount=data["amount"], source=data["from"], target=data["to"],
                               client_transfer_id=data.get("client_transfer_id"))


class TransferSerializer(FromField, serializers.ModelSerializer):
    """A transfer between two of your own wallets."""

    transfer_id = serializers.IntegerField(source="pk")
    asset = serializers.CharField(source="asset.symbol")
    amount = serializers.SerializerMethodField()
    from_wallet = serializers.ChoiceField(source="source", choices=Wallet.choices)
    to = serializers.ChoiceField(source="target", choices=Wallet.choices)
    time = MillisecondsField(source="created_at")

    class Meta:
        model = Transfer
        fields = ["transfer_id", "client_transfer_id", "asset", "amount", "from_wallet", "to", "time"]

    @staticmethod
    @extend_schema_field(DecimalString)
    def get_amount(transfer) -> str:
        return format_amount(transfer.amount, Decimal(1).scaleb(-transfer.asset.precision))


class TransferViewSet(AccountViewMixin, viewsets.GenericViewSet):
    pagination_class = IdCursorPagination
    serializer_class = TransferSerializer
    rate_weight = {"create": 1, "list": 5}
    query_serializer = {"list": WalletListQuerySerializer}

    def get_permissions(self):
        if self.action == "create":
            return [HasTradingAccount(), CanTrade()]
        return super().get_permissions()

    def get_queryset(self):
        return Transfer.objects.filter(account=self.account).select_related("asset")

    @extend_schema(
        operation_id="createTransfer",
        summary="Move funds between your own wallets",
        description="Moves `amount` of `asset` from one of the account's wallets (`spot`, `margin`, `earn`) to "
                    "another, from the available balance. " + WALLETS_NOTE,
        request=TransferCreateSerializer,
        responses={
            **made_once_responses(TransferSerializer, "Done: both balances changed.", "transfer", "client_transfer_id"),
            **error_responses(ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.INSUFFICIENT_FUNDS,
                              ErrorCode.DUPLICATE_CLIENT_TRANSFER_ID),
        },
    )
    def create(self, request):
        return make_once(request, self.account, TransferCreateSerializer, make_transfer, TransferSerializer)

    @extend_schema(
        operation_id="listTransfers",
        summary="Your transfers between wallets, newest or oldest first",
        description=WALLETS_NOTE,
        parameters=[WalletListQuerySerializer],
        responses={200: TransferSerializer(many=True)},
    )
    def list(self, request):
        return self.filtered_page(WalletListQuerySerializer, self.get_queryset(), LOOKUPS)
