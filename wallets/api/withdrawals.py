"""Withdrawals to the account's address book: parse, call wallets.withdrawals, render."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.permissions import CanWithdraw
from exchange.errors import ErrorCode
from exchange.fields import (LARGEST_INTEGER, AssetSymbol, DecimalString, Identifier, IdentifierPattern,
                             MillisecondsField, one_or_more_of)
from exchange.openapi import error_responses
from trading.api.serializers import RefusesUnknownFields
from trading.api.views import AccountViewMixin, HasTradingAccount, IdCursorPagination
from wallets.api.made_once import made_once_responses, make_once
from wallets.api.queries import LOOKUPS, WalletListQuerySerializer
from wallets.models import Withdrawal
from wallets.withdrawals import (
    ADDRESS, WithdrawalRequest, access_withdrawal, cancel_withdrawal, request_withdrawal, shown_amount,
)

STATES = ("States: `pending_review` (held, awaiting an operator), `approved`, `sent` (paid out; `tx_id` is the "
          "network's transaction id), `rejected` and `cancelled` (the hold released).")
WITHDRAWAL_ID = OpenApiParameter("id", {"type": "integer", "minimum": 1, "maximum": LARGEST_INTEGER},
                                 OpenApiParameter.PATH, description="The withdrawal's id.")


class WithdrawalCreateSerializer(RefusesUnknownFields, serializers.Serializer):
    """A withdrawal to an address in your address book for the asset."""

    asset = AssetSymbol(help_text="The asset's symbol, e.g. `BTC`.")
    amount = DecimalString(help_text="What the address receives; the fee is held and charged on top.")
    address = IdentifierPattern(rf"^{ADDRESS.pattern}$", help_text="An address in your address book for this asset, "
                                                                   "past its waiting period; matched exactly.")
    client_withdrawal_id = IdentifierPattern(
        r"^[A-Za-z0-9_-]{1,64}$", required=False, help_text="Your id, unique per account: retries are safe."
    )

    def validate(self, data) -> WithdrawalRequest:
        return WithdrawalRequest(asset=data["asset"], amount=data["amount"], address=data["address"],
                                 client_withdrawal_id=data.get("client_withdrawal_id"))


class WithdrawalSerializer(serializers.ModelSerializer):
    """A withdrawal and its state."""

    id = serializers.IntegerField(source="pk")
    asset = serializers.CharField(source="asset.symbol")
    amount = serializers.SerializerMethodField()
    fee = serializers.SerializerMethodField(help_text="Charged on top of the amount, to the exchange.")
    status = serializers.ChoiceField(choices=Withdrawal.Status.choices)
    tx_id = serializers.CharField(allow_null=True, help_text="The network's transaction id, once sent.")
    created_at = MillisecondsField()
    updated_at = MillisecondsField(help_text="When its state last changed.")

    class Meta:
        model = Withdrawal
        fields = ["id", "client_withdrawal_id", "asset", "amount", "fee", "address", "status", "tx_id",
                  "created_at", "updated_at"]

    @staticmethod
    @extend_schema_field(DecimalString)
    def get_amount(withdrawal) -> str:
        return shown_amount(withdrawal.asset, withdrawal.amount)

    @staticmethod
    @extend_schema_field(DecimalString)
    def get_fee(withdrawal) -> str:
        return shown_amount(withdrawal.asset, withdrawal.fee)


class WithdrawalListQuerySerializer(WalletListQuerySerializer):
    status = Identifier(required=False, schema_pattern=one_or_more_of(Withdrawal.Status.values),
                        help_text="One state, or several separated by commas.")

    def validate_status(self, value: str) -> list[str]:
        unknown = [name for name in value.split(",") if name not in Withdrawal.Status.values]
        if unknown:
            raise serializers.ValidationError(f"Unknown status {unknown[0]!r}.")
        return value.split(",")


class WithdrawalViewSet(AccountViewMixin, viewsets.GenericViewSet):
    lookup_value_regex = "[0-9]{1,18}"
    pagination_class = IdCursorPagination
    serializer_class = WithdrawalSerializer
    rate_weight = {"create": 1, "retrieve": 1, "cancel": 1, "list": 5}
    response_links = {name: {"getWithdrawal": {"id": "$response.body#/id"},
                             "cancelWithdrawal": {"id": "$response.body#/id"}}
                      for name in ("createWithdrawal", "getWithdrawal", "cancelWithdrawal")}
    query_serializer = {"list": WithdrawalListQuerySerializer}

    def get_permissions(self):
        if self.action in ("create", "cancel"):
            return [HasTradingAccount(), CanWithdraw()]
        return super().get_permissions()

    def render(self, withdrawal: Withdrawal, http_status=status.HTTP_200_OK) -> Response:
        return Response(WithdrawalSerializer(withdrawal).data, status=http_status)

    @extend_schema(
        operation_id="createWithdrawal",
        summary="Withdraw to an address in your address book",
        description="Needs a `trade_withdraw` key. Holds `amount` + the asset's fee from the spot wallet's available "
                    "balance until the withdrawal is sent (then settled) or rejected or cancelled (then released). "
                    "The address must be in the account's address book for the asset (the account pages, "
                    "`/account/wallets/addresses/`) and past its waiting period. " + STATES,
        request=WithdrawalCreateSerializer,
        responses={
            **made_once_responses(WithdrawalSerializer, "Requested: pending review, amount + fee held.", "withdrawal",
                                  "client_withdrawal_id"),
            **error_responses(ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.INSUFFICIENT_FUNDS,
                              ErrorCode.WITHDRAWAL_LIMIT_EXCEEDED, ErrorCode.WITHDRAWAL_ADDRESS_NOT_ALLOWED,
                              ErrorCode.WITHDRAWAL_ADDRESS_NOT_YET_USABLE, ErrorCode.WITHDRAWALS_DISABLED,
                              ErrorCode.DUPLICATE_CLIENT_WITHDRAWAL_ID),
        },
    )
    def create(self, request):
        return make_once(request, self.account, WithdrawalCreateSerializer, request_withdrawal, WithdrawalSerializer)

    @extend_schema(
        operation_id="listWithdrawals",
        summary="Your withdrawals, newest or oldest first",
        description=STATES,
        parameters=[WithdrawalListQuerySerializer],
        responses={200: WithdrawalSerializer(many=True)},
    )
    def list(self, request):
        return self.filtered_page(WithdrawalListQuerySerializer,
                                  Withdrawal.objects.filter(account=self.account).select_related("asset"),
                                  {**LOOKUPS, "status": "status__in"})

    @extend_schema(
        operation_id="getWithdrawal",
        summary="Fetch a withdrawal",
        description=STATES,
        parameters=[WITHDRAWAL_ID],
        responses={200: WithdrawalSerializer, **error_responses(ErrorCode.WITHDRAWAL_NOT_FOUND)},
    )
    def retrieve(self, request, pk: str):
        return self.render(access_withdrawal(self.account, int(pk)))

    @extend_schema(
        operation_id="cancelWithdrawal",
        summary="Cancel a withdrawal pending review (idempotent)",
        description="Releases the hold. Only while `pending_review`; cancelling a cancelled withdrawal returns it "
                    "unchanged. Needs a `trade_withdraw` key.",
        parameters=[WITHDRAWAL_ID],
        request=None,
        responses={
            200: OpenApiResponse(WithdrawalSerializer, description="Cancelled (also when repeated)."),
            **error_responses(ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.WITHDRAWAL_NOT_FOUND,
                              ErrorCode.WITHDRAWAL_NOT_CANCELLABLE),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk: str):
        return self.render(cancel_withdrawal(self.account, int(pk)))
