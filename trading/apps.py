from django.apps import AppConfig


class TradingConfig(AppConfig):
    name = "trading"

    def ready(self):
        from exchange import metrics
        from trading import scraped_metrics

        metrics.register_reader(scraped_metrics.matcher_queues)
        metrics.register_reader(scraped_metrics.last_audit)
