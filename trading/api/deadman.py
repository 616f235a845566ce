"""The dead-man's switch endpoint (trading/deadman.py): parse, call one service, render."""

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import CanTrade
from exchange.errors import ErrorCode
from exchange.fields import to_milliseconds
from exchange.openapi import error_responses
from trading import deadman
from trading.api import serializers
from trading.api.views import AccountViewMixin, HasTradingAccount


class CancelAllAfterView(AccountViewMixin, APIView):
    permission_classes = [HasTradingAccount, CanTrade]
    rate_weight = 1

    @extend_schema(
        operation_id="cancelAllOrdersAfter",
        summary="Dead-man's switch: cancel all orders unless set again in time",
        description=f"Arms (or refreshes) the switch: unless this is called again within `timeout_ms`, every live "
                    f"order of the account (of `pair` only, when given: each pair has a switch of its own, and "
                    f"so have all pairs together) is cancelled through the matchers, as `POST "
                    f"/v1/orders/cancel-all` does, within {deadman.POLL_SECONDS} s of `trigger_time`. `timeout_ms` "
                    f"0 disarms it; otherwise {deadman.MIN_TIMEOUT_MS:,} to {deadman.MAX_TIMEOUT_MS:,} ms (refresh "
                    f"it well within: every 15 s for a 60 s timeout, say). Firing disarms it. A switch outlives "
                    f"server restarts; orders placed after it fired are not cancelled unless it is armed again.",
        request=serializers.CancelAllAfterSerializer,
        responses={200: serializers.DeadManSwitchSerializer,
                   **error_responses(ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.UNKNOWN_PAIR)},
    )
    def post(self, request):
        form = serializers.CancelAllAfterSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        switch, now = deadman.set_switch(self.account, form.validated_data["timeout_ms"],
                                         form.validated_data.get("pair"))
        return Response(serializers.DeadManSwitchSerializer({
            "pair": switch.market.pair if switch.market else None, "timeout_ms": switch.timeout_ms,
            "current_time": to_milliseconds(now),
            "trigger_time": switch.trigger_at and to_milliseconds(switch.trigger_at),
        }).data)
