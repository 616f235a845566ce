from django.contrib import admin

from accounts.models import Account, RateTier


@admin.register(RateTier)
class RateTierAdmin(admin.ModelAdmin):
    list_display = ("name", "weight_per_minute", "maker_fee_rate", "taker_fee_rate")
    search_fields = ("name",)


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "kind", "verified", "rate_tier", "created_at")
    list_filter = ("kind", "verified", "rate_tier")
    search_fields = ("id", "user__username", "user__email")
    autocomplete_fields = ("user",)
    readonly_fields = ("kind", "created_at")
    actions = ("verify_accounts", "unverify_accounts")

    @admin.action(description="Verify selected accounts")
    def verify_accounts(self, request, queryset):
        self.set_verified(request, queryset, True)

    @admin.action(description="Remove verification from selected accounts")
    def unverify_accounts(self, request, queryset):
        self.set_verified(request, queryset, False)

    def set_verified(self, request, queryset, verified: bool) -> None:
        changed = list(queryset.exclude(verified=verified))
        for account in changed:
            account.verified = verified
            account.save(update_fields=["verified"])
            self.log_change(request, account, [{"changed": {"fields": ["verified"]}}])
        self.message_user(request, f"{len(changed)} account(s) {'verified' if verified else 'unverified'}.")
