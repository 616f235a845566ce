"""Settings, read from the environment (12-factor).

Unset variables give the embedded default: SQLite, an in-memory channel layer, a local cache and the
matcher running in-process, so the exchange starts on a bare laptop. Setting ``DATABASE_URL`` and
``REDIS_URL`` gives the production stack (PostgreSQL, Redis for broker, channel layer and cache).
"""

import logging
import os
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

from exchange.logs import logging_config
from exchange.money import ASSET_PATTERN, configure_decimal_context

configure_decimal_context()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("EXCHANGE_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG")
EXCHANGE_ENVIRONMENT = os.environ.get("EXCHANGE_ENVIRONMENT", "production")
if EXCHANGE_ENVIRONMENT not in {"production", "sandbox"}:
    raise ValueError(f"EXCHANGE_ENVIRONMENT must be 'production' or 'sandbox', not {EXCHANGE_ENVIRONMENT!r}")


def env_amounts(name: str, default: str) -> dict[str, str]:
    """Comma-separated ASSET=AMOUNT pairs: "USD=100000,BTC=10", each amount a decimal of 0 or more (0: none);
    anything else stops the process at start, rather than every account opening later."""
    amounts = {}
    for item in env_list(name, default):
        asset, _, amount = item.partition("=")
        try:
            valid = Decimal(amount).is_finite() and Decimal(amount) >= 0 and re.fullmatch(ASSET_PATTERN, asset)
        except InvalidOperation:
            valid = False
        if not valid:
            raise ImproperlyConfigured(f"{name}: {item!r} is not ASSET=AMOUNT with an amount of 0 or more.")
        amounts[asset] = amount
    return amounts


# The sandbox's testnet money (sandbox/services.py), per asset: the faucet's limit per account and UTC
# day, and what an account opened in the sandbox starts with.
SANDBOX_FAUCET_DAILY_LIMITS = env_amounts("SANDBOX_FAUCET_DAILY_LIMITS", "USD=100000,BTC=10,ETH=100")
SANDBOX_STARTING_BALANCES = env_amounts("SANDBOX_STARTING_BALANCES", "USD=10000,BTC=0.5,ETH=5")


def local_secret_key() -> str:
    """A laptop's key, made once and kept in var/ so that every local process signs sessions alike."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(get_random_secret_key())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = os.environ.get("SECRET_KEY") or local_secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
CSRF_FAILURE_VIEW = "exchange.errors.csrf_failure_view"
# Peers whose X-Forwarded-For is believed (addresses or CIDR ranges of the proxies in front).
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES")
# Fernet keys for API key secrets at rest, newest first (accounts/secrets.py); unset: derived from SECRET_KEY.
API_KEY_ENCRYPTION_KEYS = env_list("API_KEY_ENCRYPTION_KEYS")
# Weight per sliding minute for unsigned requests, per client address.
PUBLIC_WEIGHT_PER_MINUTE = int(os.environ.get("PUBLIC_WEIGHT_PER_MINUTE", "1200"))
# Password attempts (log-in, and the password asked again) per sliding minute, per account name and per
# client address (accounts/passwords.py).
PASSWORD_ATTEMPTS_PER_NAME = int(os.environ.get("PASSWORD_ATTEMPTS_PER_NAME", "5"))
PASSWORD_ATTEMPTS_PER_ADDRESS = int(os.environ.get("PASSWORD_ATTEMPTS_PER_ADDRESS", "20"))
# The sliding window of every budget ("per minute"); tests shorten it to watch a budget come back.
RATE_LIMIT_WINDOW_SECONDS = int(os.environ.get("RATE_LIMIT_WINDOW_SECONDS", "60"))
# The server `manage.py simulate_market` trades with (sandbox) unless given --base-url.
SIMULATION_BASE_URL = os.environ.get("SIMULATION_BASE_URL", "http://127.0.0.1:8000")
# How long after it is added to the address book an address may receive withdrawals: time for its
# holder to notice an address someone else added (wallets/withdrawals.py).
WITHDRAWAL_ADDRESS_WAITING_PERIOD = timedelta(hours=float(os.environ.get("WITHDRAWAL_ADDRESS_WAITING_HOURS", "24")))

# Behind a TLS-terminating proxy in production: secure cookies, HSTS, redirect plain HTTP.
BEHIND_TLS = env_bool("EXCHANGE_BEHIND_TLS")
if BEHIND_TLS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 31_536_000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI as static files: /v1/docs needs no CDN
    "channels",
    "accounts",
    "trading",
    "wallets",
    "earn",
    "marketdata",
    "sandbox",
]

MIDDLEWARE = [
    "exchange.request_ids.RequestIdMiddleware",  # first: the id is on every log line and error body
    "exchange.health.HealthMiddleware",  # /healthz, /readyz: before the Host check and the HTTPS redirect
    "exchange.metrics_http.MetricsMiddleware",  # /metrics (before the Host check too); each request's metrics
    "exchange.slow_requests.SlowRequestsMiddleware",  # times the rest: the admin's slowest recent requests
    "django.middleware.security.SecurityMiddleware",
    "exchange.security.ContentSecurityPolicyMiddleware",
    "exchange.ratelimit.RateLimitHeadersMiddleware",
    "exchange.strictinput.RefuseControlCharactersMiddleware",
    "exchange.strictinput.StrictQueryMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "exchange.urls"
WSGI_APPLICATION = "exchange.wsgi.application"
ASGI_APPLICATION = "exchange.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "sandbox.context_processors.environment",  # the SANDBOX banner
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'exchange.sqlite3'}",
        conn_max_age=60,
        conn_health_checks=True,
    )
}
# Django's backends, plus how each vendor stores amounts exactly (exchange/db_backends).
DATABASES["default"]["ENGINE"] = {
    "django.db.backends.postgresql": "exchange.db_backends.postgresql",
    "django.db.backends.sqlite3": "exchange.db_backends.sqlite3",
}[DATABASES["default"]["ENGINE"]]
if DATABASES["default"]["ENGINE"] == "exchange.db_backends.sqlite3":
    # One writer at a time: take the write lock when a transaction begins rather than failing
    # with "database is locked" when a reader later tries to upgrade; WAL lets readers run alongside.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file too: the in-memory test database's shared cache locks whole tables and
    # ignores the busy timeout, which is not how the embedded default behaves.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-exchange-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
# A Redis that does not answer (a partition, not a refused connection) fails a request with 503 in
# seconds (two tries) rather than hanging it on TCP's timeouts; reads wait longer than a matcher's 1 s answer.
REDIS_TIMEOUTS = {"socket_connect_timeout": 2, "socket_timeout": 2}
REDIS_CLIENT = {"url": REDIS_URL, **REDIS_TIMEOUTS}  # exchange/redis.py, for the Redis backends below
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "OPTIONS": REDIS_TIMEOUTS}}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # channels_redis blocks 5 s per read; redis-py's own 5 s socket timeout would then cut
            # quiet consumers off (channels_redis#422), so reads get more time than the block.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30,
                                  "socket_connect_timeout": REDIS_TIMEOUTS["socket_connect_timeout"]}],
                       "capacity": 500},
        }
    }
    # Shared by every server process: rate-limit windows, keys' tokens and nonces, recent book deltas.
    RATE_LIMIT_WINDOWS = "exchange.ratelimit_backends.RedisWindows"
    NONCE_TOKENS = "accounts.key_cache_backends.RedisTokens"
    REPLAY_BUFFER = "marketdata.replay_backends.RedisReplay"
    SLOW_REQUESTS_STORE = "exchange.slow_request_backends.RedisSlowRequests"
else:
    # The local cache holds nonces for their key's drift window: at its default 300 entries it forgot
    # the oldest under a few dozen signed requests a second, and a replay would pass.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                          "OPTIONS": {"MAX_ENTRIES": 1_000_000}}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # The embedded default is one process: its memory is shared by all its requests.
    RATE_LIMIT_WINDOWS = "exchange.ratelimit_backends.InProcessWindows"
    NONCE_TOKENS = "accounts.key_cache_backends.LocalTokens"
    REPLAY_BUFFER = "marketdata.replay_backends.LocalReplay"
    SLOW_REQUESTS_STORE = "exchange.slow_request_backends.LocalSlowRequests"
# The admin's slowest recent requests (exchange/slow_requests.py): how many, over how long.
SLOW_REQUESTS_KEEP = int(os.environ.get("SLOW_REQUESTS_KEEP", "50"))
SLOW_REQUESTS_WINDOW_SECONDS = int(os.environ.get("SLOW_REQUESTS_WINDOW_SECONDS", "3600"))

# WebSocket health: a heartbeat after this many quiet seconds, and a connection with more than this many
# bytes it has not read yet is closed as a slow consumer (Daphne also sends keepalive pings, see bin/).
WS_HEARTBEAT_SECONDS = float(os.environ.get("WS_HEARTBEAT_SECONDS", "5"))
# A connection's own messages (auth, subscribe, ping...): enough for every subscription one message at a
# time, then a steady 10 a second (Binance allows 5); past that each is refused with RATE_LIMITED.
WS_MESSAGE_BURST = int(os.environ.get("WS_MESSAGE_BURST", "60"))
WS_MESSAGES_PER_SECOND = float(os.environ.get("WS_MESSAGES_PER_SECOND", "10"))
# Connections a client address may hold open in one WebSocket process (0: no limit); past it a connection
# is closed with RATE_LIMITED. Behind the production proxy, nginx's limit_conn caps them across processes.
WS_CONNECTIONS_PER_ADDRESS = int(os.environ.get("WS_CONNECTIONS_PER_ADDRESS", "100"))
WS_MAX_PENDING_BYTES = int(os.environ.get("WS_MAX_PENDING_BYTES", str(4 * 1024 * 1024)))
WS_WRITE_LOW_WATER_BYTES = int(os.environ.get("WS_WRITE_LOW_WATER_BYTES", str(256 * 1024)))

# "celery": each pair's matcher is a loop in the Celery worker serving its queue match.<PAIR>, woken through Redis.
# "inprocess": the same matcher runs in the web process, after the accepting commit (embedded default).
MATCHER_MODE = os.environ.get("MATCHER_MODE", "celery" if REDIS_URL else "inprocess")
# The backend objects where the stacks differ (trading.backends): chosen here, once.
MATCHER_BACKEND = {"celery": "trading.backends.CeleryMatchers", "inprocess": "trading.backends.InProcessMatchers"}[
    MATCHER_MODE]
TRADING_STORE = ("trading.backends.PostgresStore" if "postgresql" in DATABASES["default"]["ENGINE"]
                 else "trading.backends.SqliteStore")
MESSAGE_BUS = "trading.backends.RedisBus" if REDIS_URL else "trading.backends.LocalBus"
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")  # when each job last ran
# Celery beat (bin/supervise's `periodic` role): earn interest at five past every hour. A day is paid once it has
# ended, so the 00:05 run pays it; the others find nothing owed unless an earlier run failed or stopped short
# (accrual pays each day once, so repeats are harmless). A run not started within the hour is dropped.
CELERY_BEAT_SCHEDULE = {
    "earn-accrue-interest": {"task": "earn.accrue_interest", "schedule": crontab(minute=5),
                             "options": {"expires": 3300}},
    # Fee tiers by 30-day volume (trading/fees.py), once a day; a run that could not start within the day is dropped.
    "trading-assign-fee-tiers": {"task": "trading.assign_fee_tiers", "schedule": crontab(minute=20, hour=0),
                                 "options": {"expires": 23 * 3600}},
    # The ledger proof (trading/audit.py) every ten minutes, kept as an AuditRun; a run not started within its ten
    # minutes is dropped, so that a stalled worker does not pile them up.
    "trading-audit-ledger": {"task": "trading.audit_ledger", "schedule": crontab(minute="*/10"),
                             "options": {"expires": 540}},
}
# Fee tiers by volume count the quote amount of trades on the markets quoted in this asset (trading/fees.py).
FEE_TIER_VOLUME_ASSET = os.environ.get("FEE_TIER_VOLUME_ASSET", "USD")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]  # our own assets (favicon, page scripts)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LOGIN_URL = "/account/login/"
LOGIN_REDIRECT_URL = "/account/keys/"
LOGOUT_REDIRECT_URL = "/"

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["exchange.jsonparse.StrictJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["exchange.ratelimit.WeightedRateThrottle"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "exchange.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "exchange.schema.ExchangeAutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Exchange API",
    "DESCRIPTION": (
        "Spot exchange API for trading bots. Every amount is a decimal string; times are integer "
        "milliseconds since the Unix epoch. Every error has the body "
        '`{"error": {"code", "message", "details"}}`; the codes are listed in the `ErrorCode` schema.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Swagger UI's default validator badge is an image from validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SCHEMA_PATH_PREFIX": r"/v1",
    # Relative: the paths are served where the document is (a sandbox, production, a local server).
    "SERVERS": [{"url": "/", "description": "The server this document is served from."}],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ErrorCode": "exchange.openapi.ERROR_CODE_CHOICES",
        "Side": "trading.models.Side",
        "OrderStatus": "trading.models.Order.Status",
        "TimeInForce": "trading.models.Order.TimeInForce",
        "Wallet": "trading.models.Wallet",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "exchange.openapi.describe_error_codes",
    ],
}

# JSON lines for the production stack's log shippers, readable text on a laptop (DEBUG, or the embedded default
# of `make run`); every line with its request's id and without secrets (exchange/logs.py).
LOG_FORMAT = os.environ.get("LOG_FORMAT") or ("text" if DEBUG or not REDIS_URL else "json")
LOGGING = logging_config(LOG_FORMAT, os.environ.get("LOG_LEVEL", "INFO"))
# Each request's own line (exchange/request_ids.py) says what Django's 4xx warnings would repeat; likewise
# the 400 for a Host not in ALLOWED_HOSTS, which Django logs at ERROR with a traceback (every scanner sends one).
LOGGING["loggers"] = {"django.request": {"level": "ERROR"}, "django.security.DisallowedHost": {"level": "CRITICAL"}}
# Python's warnings (a library's deprecation, a static directory missing) as log lines in that format too.
logging.captureWarnings(True)

# /readyz (exchange/health.py): what must answer for this process to take traffic, by name.
READINESS_CHECKS = {"database": "exchange.health.database", **({"redis": "exchange.health.redis"} if REDIS_URL else {}),
                    "matchers": "trading.lag.lagging_matchers"}
# A matcher whose oldest queued command waits longer than this is behind: /readyz fails naming its pair.
MATCHER_LAG_BUDGET_SECONDS = float(os.environ.get("MATCHER_LAG_BUDGET_SECONDS", "5"))
# The operators' token for GET /metrics (exchange/metrics_http.py: Authorization: Bearer ...); unset: no /metrics.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
