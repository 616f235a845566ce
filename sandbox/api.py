"""The sandbox's endpoints: parse, call one service, render. Outside the sandbox each answers 404,
as a path that does not exist would, before any authentication."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import CanTrade
from exchange.errors import ErrorCode, not_found_view
from exchange.fields import AssetSymbol, DecimalString, FormattedDecimal
from exchange.openapi import error_responses
from sandbox import services
from trading.api.views import HasTradingAccount


class FaucetRequestSerializer(serializers.Serializer):
    asset = AssetSymbol(help_text="An asset symbol, e.g. USD.")
    amount = DecimalString(help_text="Positive, at most the asset's precision in decimal places.")


class FaucetCreditSerializer(serializers.Serializer):
    asset = serializers.CharField()
    amount = FormattedDecimal(help_text="Credited to the spot wallet's available balance.")
    available = FormattedDecimal(help_text="The spot available balance after the credit.")
    remaining_today = FormattedDecimal(help_text="What the faucet may still give of this asset until the next UTC "
                                                 "midnight.")


class SandboxOnly:
    """Outside the sandbox the endpoint is a path that does not exist, to the byte (no DRF headers such as
    ``Allow``): answered before DRF's dispatch, by the site's own 404."""

    def dispatch(self, request, *args, **kwargs):
        if not services.in_sandbox():
            return not_found_view(request)
        return super().dispatch(request, *args, **kwargs)


class FaucetView(SandboxOnly, APIView):
    permission_classes = [HasTradingAccount, CanTrade]
    rate_weight = 1

    @extend_schema(
        operation_id="requestFaucetFunds",
        summary="Sandbox only: credit testnet funds",
        description="Credits the spot wallet through the ledger, as a deposit. At most "
                    "`SANDBOX_FAUCET_DAILY_LIMITS` of an asset per account and UTC day (by default 100,000 USD, "
                    "10 BTC, 100 ETH): past it, 429 `FAUCET_LIMIT_REACHED` with `Retry-After` (the next UTC "
                    "midnight) and nothing credited. Outside the sandbox, 404 `NOT_FOUND`.",
        request=FaucetRequestSerializer,
        responses={200: FaucetCreditSerializer,
                   **error_responses(ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.NOT_FOUND,
                                     ErrorCode.FAUCET_LIMIT_REACHED)},
    )
    def post(self, request):
        form = FaucetRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        given = form.validated_data
        return Response(services.request_faucet(request.user.account, given["asset"], given["amount"]))
