"""The queries of the wallet lists: one asset and a time window (deposits, transfers), and for the ledger
also one wallet and kinds."""

from datetime import datetime, timedelta

from rest_framework import serializers

from exchange.fields import EPOCH, Identifier, IntegerString
from trading.models import Asset, Wallet
from wallets.statements import KINDS, REASONS_OF_KIND

LAST_MILLISECOND = 253402300799999  # 9999-12-31T23:59:59.999Z, the last instant a datetime holds
PAGE_PARAMETERS = {"limit", "cursor"}
# What each query field filters on, for AccountViewMixin.filtered_page.
LOOKUPS = {"asset": "asset", "start_time": "created_at__gte", "end_time": "created_at__lt"}
LEDGER_LOOKUPS = {**LOOKUPS, "wallet": "wallet", "kind": "reason__in"}


class Milliseconds(IntegerString):
    """A time in ms since the epoch, as a datetime."""

    def __init__(self, **kwargs):
        super().__init__(min_value=0, max_value=LAST_MILLISECOND, **kwargs)

    def run_validation(self, data) -> datetime:  # after the range check on the integer
        return EPOCH + timedelta(milliseconds=super().run_validation(data))


class WalletListQuerySerializer(serializers.Serializer):
    asset = Identifier(max_length=16, required=False, help_text="Only this asset's.")
    start_time = Milliseconds(required=False, help_text="At or after this time (ms since the epoch).")
    end_time = Milliseconds(required=False, help_text="Before this time (ms since the epoch), exclusive.")

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


class LedgerQuerySerializer(WalletListQuerySerializer):
    wallet = serializers.ChoiceField(choices=Wallet.choices, required=False, help_text="Only this wallet's.")
    kind = Identifier(required=False, help_text=f"One kind, or several separated by commas: {', '.join(KINDS)}.")

    def validate_kind(self, value: str) -> list[str]:
        """The ledger reasons the kinds stand for."""
        reasons = []
        for kind in value.split(","):
            if kind not in REASONS_OF_KIND:
                raise serializers.ValidationError(f"Unknown kind {kind!r}.")
            reasons += REASONS_OF_KIND[kind]
        return reasons
