"""The queries of the wallet lists: one asset and a time window (deposits, transfers), and for the ledger
also one wallet and kinds."""

from rest_framework import serializers

from exchange.fields import AssetSymbol, Identifier, one_or_more_of
from exchange.queries import PageQuery, TimeWindowQuery, time_lookups
from trading.models import Asset, Wallet
from wallets.statements import KINDS, REASONS_OF_KIND

# What each query field filters on, for AccountViewMixin.filtered_page.
LOOKUPS = {"asset": "asset", **time_lookups("created_at")}
LEDGER_LOOKUPS = {**LOOKUPS, "wallet": "wallet", "kind": "reason__in"}


class WalletListQuerySerializer(PageQuery, TimeWindowQuery):
    asset = AssetSymbol(max_length=16, required=False, help_text="Only this asset's.")

    def validate_asset(self, symbol: str) -> Asset:
        asset = Asset.objects.filter(symbol=symbol).first()
        if asset is None:
            raise serializers.ValidationError(f"Unknown asset {symbol!r}.")
        return asset


class LedgerQuerySerializer(WalletListQuerySerializer):
    wallet = serializers.ChoiceField(choices=Wallet.choices, required=False, help_text="Only this wallet's.")
    kind = Identifier(required=False, schema_pattern=one_or_more_of(KINDS),
                      help_text=f"One kind, or several separated by commas: {', '.join(KINDS)}.")

    def validate_kind(self, value: str) -> list[str]:
        """The ledger reasons the kinds stand for."""
        reasons = []
        for kind in value.split(","):
            if kind not in REASONS_OF_KIND:
                raise serializers.ValidationError(f"Unknown kind {kind!r}.")
            reasons += REASONS_OF_KIND[kind]
        return reasons
