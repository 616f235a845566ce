"""A ccxt exchange class for this exchange: ``from hkt_client.ccxt import hkt`` (``pip install hkt-client[ccxt]``).

    exchange = hkt({"apiKey": key, "secret": secret, "urls": {"api": {"rest": "http://127.0.0.1:8000"}}})
    exchange.load_markets()
    order = exchange.create_order("BTC/USD", "limit", "buy", 0.01, 63000)

It speaks the REST API (SPEC sections 6, 9 and 10) through ccxt's own machinery (throttling, retries,
``verbose``), signs as SPEC section 3 says with hkt_client.signing, over the exact body bytes ccxt
sends, and raises ccxt's exception classes for the server's error codes. Unified structures carry
ccxt's floats; ``info`` keeps the server's decimal strings. As every ccxt class does, it rounds a
price to the market's tick and truncates an amount to its lot (``price_to_precision``,
``amount_to_precision``) before sending; the server itself never rounds (docs/api.md, "ccxt").
Synchronous only.
"""

import re
import uuid
from urllib.parse import parse_qs, urlsplit

import ccxt
from ccxt.base.decimal_to_precision import TICK_SIZE, TRUNCATE
from ccxt.base.errors import (
    AddressPending, AuthenticationError, BadRequest, BadSymbol, DuplicateOrderId, ExchangeError,
    ExchangeNotAvailable, InsufficientFunds, InvalidAddress, InvalidNonce, InvalidOrder, MarketClosed, NetworkError,
    NotSupported, OperationRejected, OrderImmediatelyFillable, OrderNotFound, PermissionDenied, RateLimitExceeded,
)
from ccxt.base.types import Entry

from hkt_client.signing import new_nonce, signed_headers

# Every error code of exchange/errors.py ErrorCode, as the ccxt exception a bot catches for it.
EXCEPTIONS = {
    "INVALID_REQUEST": BadRequest,
    "INVALID_PARAMETER": BadRequest,
    "INSUFFICIENT_FUNDS": InsufficientFunds,
    "WITHDRAWAL_LIMIT_EXCEEDED": OperationRejected,
    "MISSING_AUTH_HEADERS": AuthenticationError,
    "AUTHENTICATION_REQUIRED": AuthenticationError,
    "INVALID_API_KEY": AuthenticationError,
    "API_KEY_REVOKED": AuthenticationError,
    "INVALID_SIGNATURE": AuthenticationError,
    # ccxt's class for a request stamped outside the server's window (Binance's -1021 maps to it too):
    # a NetworkError, so that ccxt retries it, signed afresh.
    "TIMESTAMP_OUT_OF_WINDOW": InvalidNonce,
    "NONCE_REUSED": InvalidNonce,
    "PERMISSION_DENIED": PermissionDenied,
    "INSUFFICIENT_SCOPE": PermissionDenied,
    "IP_NOT_ALLOWED": PermissionDenied,
    "DEPTH_REQUIRES_VERIFICATION": PermissionDenied,
    "WITHDRAWAL_ADDRESS_NOT_ALLOWED": InvalidAddress,
    "WITHDRAWAL_ADDRESS_NOT_YET_USABLE": AddressPending,
    "NOT_FOUND": NotSupported,  # no such endpoint on this server (the faucet outside the sandbox)
    "UNKNOWN_PAIR": BadSymbol,
    "ORDER_NOT_FOUND": OrderNotFound,
    "SUBSCRIPTION_NOT_FOUND": BadRequest,
    "WITHDRAWAL_NOT_FOUND": BadRequest,
    "METHOD_NOT_ALLOWED": BadRequest,
    "NOT_ACCEPTABLE": BadRequest,
    "MARKET_HALTED": MarketClosed,
    "DUPLICATE_CLIENT_ORDER_ID": DuplicateOrderId,
    "DUPLICATE_CLIENT_TRANSFER_ID": BadRequest,
    "DUPLICATE_CLIENT_SUBSCRIPTION_ID": BadRequest,
    "EARN_PRODUCT_INACTIVE": OperationRejected,
    "EARN_CAPACITY_EXCEEDED": OperationRejected,
    "SUBSCRIPTION_LOCKED": OperationRejected,
    "DUPLICATE_CLIENT_WITHDRAWAL_ID": BadRequest,
    "WITHDRAWALS_DISABLED": OperationRejected,
    "WITHDRAWAL_NOT_CANCELLABLE": OperationRejected,
    # Cancelling a filled, expired or rejected order: OrderNotFound, as ccxt's Coinbase Exchange class maps
    # "Order already done", so that a bot's usual cancel handling applies.
    "ORDER_ALREADY_CLOSED": OrderNotFound,
    "POST_ONLY_WOULD_TAKE": OrderImmediatelyFillable,
    "MESSAGE_TOO_LARGE": BadRequest,
    "UNSUPPORTED_MEDIA_TYPE": BadRequest,
    "RATE_LIMITED": RateLimitExceeded,
    "SUBSCRIPTION_LIMIT": RateLimitExceeded,
    "SLOW_CONSUMER": NetworkError,
    "FAUCET_LIMIT_REACHED": OperationRejected,  # not before the next UTC midnight: retrying soon is no use
    "PRIVATE_EVENTS_LOST": NetworkError,
    # Not retried by ccxt: whether the request had an effect is unknown (an order's client id makes a retry safe).
    "INTERNAL_ERROR": ExchangeError,
    "SERVICE_UNAVAILABLE": ExchangeNotAvailable,
}

# The endpoints (SPEC sections 6, 9, 10) and their rate-limit weights (README, "Rate limits"); the weights that
# depend on the request are in calculate_rate_limiter_cost.
API = {
    "public": {
        "get": {"time": 1, "markets": 1, "assets": 1, "tickers": 2, "ticker/{pair}": 1, "orderbook/{pair}": 1,
                "trades/{pair}": 1, "candles/{pair}": 1},
    },
    "private": {
        "get": {"account/balances": 2, "account/fees": 1, "orders": 5, "orders/{id}": 1, "fills": 5,
                "orderbook/{pair}": 1, "account/deposits": 5, "account/transfers": 5, "withdrawals": 5,
                "withdrawals/{id}": 1},
        "post": {"orders": 1, "orders/batch": 1, "orders/cancel": 1, "orders/{id}/cancel": 1, "orders/cancel-all": 10,
                 "orders/cancel-all-after": 1, "account/transfers": 1, "withdrawals": 1},
    },
}

ORDER_STATUSES = {
    "pending": "open", "untriggered": "open", "open": "open", "partially_filled": "open", "filled": "closed",
    "cancelled": "canceled", "rejected": "rejected", "expired": "expired",
}
CLOSED_STATUSES = "filled,cancelled,expired,rejected"
WITHDRAWAL_STATUSES = {
    "pending_review": "pending", "approved": "pending", "sent": "ok", "rejected": "rejected", "cancelled": "canceled",
}
TRIGGER_DIRECTIONS = {"ascending": "above", "above": "above", "up": "above",
                      "descending": "below", "below": "below", "down": "below"}
WALLETS = ("spot", "margin", "earn")
MAX_PAGE = 1000  # the server's largest page (`limit`) and candle page (intervals)
# The ids the server's paths take (a malformed one is no endpoint at all: NOT_FOUND, not ORDER_NOT_FOUND).
ORDER_ID = re.compile(r"[1-9][0-9]{0,17}")
CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PUBLIC_MAX_DEPTH = 100


def candle_weight(minutes: int) -> int:
    """GET /v1/candles' weight for a page spanning ``minutes``."""
    return 1 if minutes <= 1_440 else 2 if minutes <= 14_400 else 5 if minutes <= 144_000 else 10


def implicit_name(access: str, method: str, path: str) -> str:
    """ccxt's implicit method name: ``private_post_orders_id_cancel`` for POST orders/{id}/cancel."""
    return "_".join([access, method, *filter(None, re.split(r"[^A-Za-z0-9]+", path.lower()))])


class ImplicitAPI:
    """ccxt's implicit methods (``publicGetMarkets``, ``private_post_orders``...), made from API as ccxt's
    generated classes declare theirs."""


for _access, _methods in API.items():
    for _method, _paths in _methods.items():
        for _path, _cost in _paths.items():
            _entry = Entry(_path, _access, _method.upper(), {"cost": _cost})
            _snake = implicit_name(_access, _method, _path)
            _camel = re.sub(r"_([a-z0-9])", lambda match: match.group(1).upper(), _snake)
            for _name in (_snake, _camel):
                setattr(ImplicitAPI, _name, _entry)


class hkt(ccxt.Exchange, ImplicitAPI):  # noqa: N801 (ccxt names its exchange classes by their lowercase id)
    def describe(self):
        return self.deep_extend(super().describe(), {
            "id": "hkt",
            "name": "HKT",
            "countries": [],
            "version": "v1",
            "rateLimit": 50,  # ms per unit of weight: the retail tier's 1,200 a minute
            "certified": False,
            "pro": False,
            "has": {
                "CORS": None, "spot": True, "margin": False, "swap": False, "future": False, "option": False,
                "sandbox": False, "cancelAllOrders": True, "cancelAllOrdersAfter": True, "cancelOrder": True,
                "cancelOrders": True, "createLimitOrder": True, "createMarketBuyOrderWithCost": True,
                "createMarketOrder": True, "createOrder": True, "createOrders": True, "createPostOnlyOrder": True,
                "createStopLimitOrder": True, "createStopLossOrder": True, "createStopMarketOrder": True,
                "createStopOrder": True, "createTakeProfitOrder": True, "createTriggerOrder": True,
                "fetchBalance": True, "fetchCanceledOrders": True, "fetchClosedOrders": True,
                "fetchCurrencies": True, "fetchDeposits": True, "fetchMarkets": True, "fetchMyTrades": True,
                "fetchOHLCV": True, "fetchOpenOrders": True, "fetchOrder": True, "fetchOrderBook": True,
                "fetchOrders": True, "fetchOrderTrades": True, "fetchTicker": True, "fetchTickers": True,
                "fetchTime": True, "fetchTrades": True, "fetchTradingFee": True, "fetchTradingFees": True,
                "fetchTransfers": True, "fetchWithdrawal": True, "fetchWithdrawals": True, "transfer": True,
                "withdraw": True,
            },
            "timeframes": {name: name for name in ("1m", "5m", "15m", "1h", "4h", "1d")},
            "urls": {
                "api": {"rest": "http://127.0.0.1:8000"},  # `make run`'s sandbox; give your server's
                "www": "http://127.0.0.1:8000",
                "doc": ["http://127.0.0.1:8000/v1/docs"],
            },
            "api": API,
            "precisionMode": TICK_SIZE,
            "fees": {
                "trading": {"tierBased": True, "percentage": True, "maker": self.parse_number("0.001"),
                            "taker": self.parse_number("0.002")},
            },
            "features": {
                "spot": {
                    "sandbox": False,
                    "createOrder": {
                        "marginMode": False, "triggerPrice": True, "triggerPriceType": None, "triggerDirection": True,
                        "stopLossPrice": True, "takeProfitPrice": True, "attachedStopLossTakeProfit": None,
                        "timeInForce": {"IOC": True, "FOK": True, "PO": True, "GTD": False},
                        "hedged": False, "trailing": False, "leverage": False, "marketBuyRequiresPrice": False,
                        "marketBuyByCost": True, "selfTradePrevention": True, "iceberg": False,
                    },
                    "createOrders": {"max": 20},
                    "fetchMyTrades": {"marginMode": False, "limit": MAX_PAGE, "daysBack": None, "untilDays": None,
                                      "symbolRequired": False},
                    "fetchOrder": {"marginMode": False, "trigger": False, "trailing": False, "symbolRequired": False},
                    "fetchOpenOrders": {"marginMode": False, "limit": MAX_PAGE, "trigger": False, "trailing": False,
                                        "symbolRequired": False},
                    "fetchOrders": {"marginMode": False, "limit": MAX_PAGE, "daysBack": None, "untilDays": None,
                                    "trigger": False, "trailing": False, "symbolRequired": False},
                    "fetchClosedOrders": {"marginMode": False, "limit": MAX_PAGE, "daysBack": None,
                                          "daysBackCanceled": None, "untilDays": None, "trigger": False,
                                          "trailing": False, "symbolRequired": False},
                    "fetchOHLCV": {"limit": MAX_PAGE},
                },
                "swap": {"linear": None, "inverse": None},
                "future": {"linear": None, "inverse": None},
            },
            "options": {
                "adjustForTimeDifference": False,
                "timeDifference": 0,  # ms, our clock minus the server's (load_time_difference)
                # The API names no asset type: these symbols are fiat, the others crypto.
                "fiatCurrencies": ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "NZD", "SGD", "HKD", "KRW",
                                   "CNY", "BRL", "TRY", "MXN", "INR", "ZAR", "SEK", "NOK", "DKK", "PLN"],
                # The API names no network either (custody chooses it): a deployment that wants deposits and
                # withdrawals to carry one says so per currency, e.g. {"BTC": "BTC", "ETH": "ERC20"}.
                "currencyNetworks": {},
            },
            "exceptions": {"exact": EXCEPTIONS, "broad": {}},
        })

    # Signing (SPEC section 3) and errors (SPEC section 2).

    def nonce(self):
        """The X-Api-Timestamp: our clock, corrected by load_time_difference() when asked."""
        return self.milliseconds() - self.options["timeDifference"]

    def sign(self, path, api="public", method="GET", params={}, headers=None, body=None):
        request_path = "/" + self.version + "/" + self.implode_params(path, params)
        query = self.omit(params, self.extract_params(path))
        if method == "GET":
            if query:
                request_path += "?" + self.urlencode(query)
        elif query:
            body = self.json(query)  # ccxt's fetch() sends it UTF-8 encoded, as signed_headers() signs it
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if api == "private":
            self.check_required_credentials()
            headers.update(signed_headers(self.apiKey, self.secret, method, request_path, body or "",
                                          timestamp=self.nonce(), nonce=new_nonce()))
        return {"url": self.urls["api"]["rest"] + request_path, "method": method, "body": body, "headers": headers}

    def calculate_rate_limiter_cost(self, api, method, path, params, config={}):
        if path in ("orders/batch", "orders/cancel"):
            items = self.safe_list_n(params, ["orders", "order_ids", "client_order_ids"], [])
            return max(1, len(items))
        if path == "orderbook/{pair}":
            depth = self.safe_integer(params, "depth", PUBLIC_MAX_DEPTH)
            return 1 if depth <= 100 else 5 if depth <= 500 else 10
        if path == "candles/{pair}":
            minutes = self.safe_integer(params, "limit", 500) * self.parse_timeframe(params["interval"]) // 60
            return candle_weight(minutes)
        return self.safe_value(config, "cost", 1)

    def handle_errors(self, code, reason, url, method, headers, body, response, request_headers, request_body):
        error = self.safe_dict(response, "error") if isinstance(response, dict) else None
        if error is None:
            return None  # a success, or not our error body (a proxy's page): ccxt's HTTP status mapping applies
        feedback = self.id + " " + body
        self.throw_exactly_matched_exception(self.exceptions["exact"], self.safe_string(error, "code"), feedback)
        raise ExchangeError(feedback)  # a code newer than this class

    # Public market data.

    def fetch_time(self, params={}):
        return self.safe_integer(self.publicGetTime(params), "time")

    def fetch_markets(self, params={}):
        if self.options["adjustForTimeDifference"]:
            self.load_time_difference()  # as ccxt's classes do: once, when the markets are loaded
        return [self.parse_market(market) for market in self.publicGetMarkets(params)]

    def parse_market(self, market):
        base_id, quote_id = self.safe_string(market, "base"), self.safe_string(market, "quote")
        base, quote = self.safe_currency_code(base_id), self.safe_currency_code(quote_id)
        return self.safe_market_structure({
            "id": self.safe_string(market, "pair"), "symbol": base + "/" + quote, "base": base, "quote": quote,
            "settle": None, "baseId": base_id, "quoteId": quote_id, "settleId": None,
            "type": "spot", "spot": True, "margin": False, "swap": False, "future": False, "option": False,
            "index": False, "contract": False, "linear": None, "inverse": None, "subType": None,
            # cancel_only and halted markets take no new orders
            "active": self.safe_string(market, "status") == "online",
            "taker": self.safe_number(market, "taker_fee"), "maker": self.safe_number(market, "maker_fee"),
            "percentage": True, "tierBased": True,
            "contractSize": None, "expiry": None, "expiryDatetime": None, "strike": None, "optionType": None,
            "precision": {"amount": self.safe_number(market, "lot_size"),
                          "price": self.safe_number(market, "tick_size")},
            "limits": {
                "leverage": {"min": None, "max": None},
                "amount": {"min": self.safe_number(market, "min_size"), "max": None},
                "price": {"min": self.safe_number(market, "tick_size"), "max": None},
                "cost": {"min": self.safe_number(market, "min_notional"), "max": None},
            },
            "marginModes": {"cross": False, "isolated": False},
            "created": None,
            "info": market,
        })

    def fetch_currencies(self, params={}):
        result = {}
        for asset in self.publicGetAssets(params):
            currency_id = self.safe_string(asset, "symbol")
            code = self.safe_currency_code(currency_id)
            deposit, withdraw = self.safe_bool(asset, "deposit_enabled"), self.safe_bool(asset, "withdraw_enabled")
            result[code] = self.safe_currency_structure({
                "id": currency_id, "code": code, "name": self.safe_string(asset, "name"), "info": asset,
                "type": "fiat" if code in self.options["fiatCurrencies"] else "crypto",
                "active": deposit and withdraw, "deposit": deposit, "withdraw": withdraw,
                "fee": self.safe_number(asset, "withdraw_fee"),
                "precision": self.parse_number(self.parse_precision(self.safe_string(asset, "precision"))),
                "limits": {"withdraw": {"min": self.safe_number(asset, "withdraw_min"), "max": None},
                           "deposit": {"min": None, "max": None}},
                "networks": {},
            })
        return result

    def fetch_ticker(self, symbol, params={}):
        self.load_markets()
        market = self.market(symbol)
        return self.parse_ticker(self.publicGetTickerPair(self.extend({"pair": market["id"]}, params)), market)

    def fetch_tickers(self, symbols=None, params={}):
        self.load_markets()
        symbols = self.market_symbols(symbols)
        tickers = [self.parse_ticker(ticker) for ticker in self.publicGetTickers(params)]
        return self.filter_by_array_tickers(tickers, "symbol", symbols)

    def parse_ticker(self, ticker, market=None):
        market = self.safe_market(self.safe_string(ticker, "pair"), market, "-")
        timestamp = self.safe_integer(ticker, "time")
        last = self.safe_string(ticker, "last_price")
        return self.safe_ticker({
            "symbol": market["symbol"], "timestamp": timestamp, "datetime": self.iso8601(timestamp),
            "high": self.safe_string(ticker, "high_24h"), "low": self.safe_string(ticker, "low_24h"),
            "bid": self.safe_string(ticker, "best_bid"), "bidVolume": self.safe_string(ticker, "best_bid_size"),
            "ask": self.safe_string(ticker, "best_ask"), "askVolume": self.safe_string(ticker, "best_ask_size"),
            "vwap": None, "open": self.safe_string(ticker, "open_24h"), "close": last, "last": last,
            "previousClose": None, "change": self.safe_string(ticker, "change_24h"),
            "percentage": self.safe_string(ticker, "change_24h_pct"), "average": None,
            "baseVolume": self.safe_string(ticker, "volume_24h"),
            "quoteVolume": self.safe_string(ticker, "quote_volume_24h"), "info": ticker,
        }, market)

    def fetch_order_book(self, symbol, limit=None, params={}):
        """Depth ``limit`` (default and public maximum 100; up to 1,000 signed, for a verified account)."""
        self.load_markets()
        market = self.market(symbol)
        request = self.extend({"pair": market["id"]}, {} if limit is None else {"depth": limit}, params)
        deep = limit is not None and limit > PUBLIC_MAX_DEPTH
        response = self.privateGetOrderbookPair(request) if deep else self.publicGetOrderbookPair(request)
        book = self.parse_order_book(response, market["symbol"], self.safe_integer(response, "timestamp"))
        book["nonce"] = self.safe_integer(response, "sequence")  # the WebSocket deltas continue from it
        return book

    def fetch_trades(self, symbol, since=None, limit=None, params={}):
        """At most 1,000 (a larger ``limit`` is cut to it): the oldest ``limit`` from ``since``, else the newest;
        the ``until`` param ends the window. Trades of one matcher batch share their timestamp: to read every
        trade in order, page by id with ``params={"sort": "asc", "after": last_trade_id}``."""
        self.load_markets()
        market = self.market(symbol)
        request, params, paginate = self.window({"pair": market["id"]}, since, limit, params)
        if paginate:
            raise BadRequest(f"{self.id} fetch_trades() takes no paginate: page by trade id with "
                             "params={'sort': 'asc', 'after': last_trade_id}")
        response = self.publicGetTradesPair(self.extend(request, params))
        return self.parse_trades(self.safe_list(response, "trades", []), market, since, limit)

    def parse_trade(self, trade, market=None):
        """A public trade (GET /v1/trades) or one of your fills (GET /v1/fills)."""
        market = self.safe_market(self.safe_string(trade, "pair"), market, "-")
        timestamp = self.safe_integer(trade, "time")
        fee_cost = self.safe_string(trade, "fee")
        fee = None if fee_cost is None else {"cost": fee_cost,
                                             "currency": self.safe_currency_code(self.safe_string(trade, "fee_asset"))}
        return self.safe_trade({
            "id": self.safe_string(trade, "trade_id"), "order": self.safe_string(trade, "order_id"),
            "timestamp": timestamp, "datetime": self.iso8601(timestamp), "symbol": market["symbol"], "type": None,
            "side": self.safe_string_2(trade, "side", "taker_side"),
            "takerOrMaker": self.safe_string(trade, "liquidity"),  # None for a public trade
            "price": self.safe_string(trade, "price"), "amount": self.safe_string(trade, "size"), "cost": None,
            "fee": fee, "info": trade,
        }, market)

    def fetch_ohlcv(self, symbol, timeframe="1m", since=None, limit=None, params={}):
        """Candles ``[time, open, high, low, close, volume]`` of ``timeframe``, oldest first. As the server's
        pages, ``limit`` counts intervals and an interval without trades has no candle (docs/api.md,
        "Public market data"); more than 1,000 intervals are read in pages of 1,000. Without ``since``: the
        ``limit`` intervals up to now (or the ``until`` param)."""
        if timeframe not in self.timeframes:
            raise BadRequest(f"{self.id} fetch_ohlcv() has no timeframe {timeframe!r}: one of {', '.join(self.timeframes)}")
        self.load_markets()
        market = self.market(symbol)
        until = self.safe_integer(params, "until")
        params = self.omit(params, "until")
        # ccxt's `until` is the last millisecond included; the server's `end` is exclusive.
        request = self.extend({"pair": market["id"], "interval": self.timeframes[timeframe]},
                              {} if until is None else {"end": until + 1})
        if limit is None or (since is None and limit <= MAX_PAGE):
            page = self.extend(request, {} if since is None else {"start": since},
                               {} if limit is None else {"limit": limit}, params)
            return self.parse_ohlcvs(self.publicGetCandlesPair(page), market, timeframe)
        step = self.parse_timeframe(timeframe) * 1000
        if since is None:  # "now" is the server's, as on one page: our clock corrected, as nonce() is
            last = ((self.nonce() if until is None else until) // step) * step
            since = last - (limit - 1) * step
        rows = []
        for offset in range(0, limit, MAX_PAGE):
            start = since + offset * step
            if until is not None and start > until:  # the server refuses a page that ends before it starts
                break
            page = self.extend(request, {"start": start, "limit": min(MAX_PAGE, limit - offset)}, params)
            rows += self.publicGetCandlesPair(page)
        return self.parse_ohlcvs(rows, market, timeframe)

    def parse_ohlcv(self, ohlcv, market=None):
        # The server's rows also carry quote volume and trade count; ccxt's candles stop at volume.
        return [self.safe_integer(ohlcv, 0), *(self.safe_number(ohlcv, index) for index in range(1, 6))]

    # Account.

    def fetch_balance(self, params={}):
        """The spot wallet's balances; ``{"type": "margin"}`` or ``{"type": "earn"}`` for another wallet."""
        wallet = self.safe_string_lower(params, "type", "spot")
        if wallet not in WALLETS:
            raise BadRequest(self.id + " fetchBalance() type must be one of " + ", ".join(WALLETS))
        response = self.privateGetAccountBalances(self.omit(params, "type"))
        result = {"info": response, "timestamp": None, "datetime": None}
        for row in self.safe_list(response, "balances", []):
            wallet_balance = self.safe_dict(row, wallet, {})
            account = self.account()
            account["free"] = self.safe_string(wallet_balance, "available")
            account["used"] = self.safe_string(wallet_balance, "locked")
            account["total"] = self.safe_string(wallet_balance, "total")
            result[self.safe_currency_code(self.safe_string(row, "asset"))] = account
        return self.safe_balance(result)

    def fetch_trading_fees(self, params={}):
        """This account's maker and taker rates on every market (its fee tier's)."""
        self.load_markets()
        response = self.privateGetAccountFees(params)
        result = {}
        for fee in self.safe_list(response, "fees", []):
            market = self.safe_market(self.safe_string(fee, "pair"), None, "-")
            result[market["symbol"]] = {
                "info": fee, "symbol": market["symbol"], "maker": self.safe_number(fee, "maker_fee"),
                "taker": self.safe_number(fee, "taker_fee"), "percentage": True, "tierBased": True,
            }
        return result

    # Orders.

    def create_order(self, symbol, type, side, amount, price=None, params={}):
        """A limit or market order. Params: ``triggerPrice`` (or ``stopPrice``) with an optional
        ``triggerDirection`` (``ascending``/``above`` or ``descending``/``below``), or ``stopLossPrice`` /
        ``takeProfitPrice`` (the direction that closes a position on that side), make it a stop order that
        enters as this limit or market order; ``timeInForce`` (GTC, IOC, FOK, PO), ``postOnly``,
        ``clientOrderId`` (one is made when none is given, so that a retry never places twice), ``cost``
        (a market buy's quote amount), and any field of POST /v1/orders (``stp``)."""
        self.load_markets()
        request = self.create_order_request(symbol, type, side, amount, price, params)
        return self.parse_order(self.privatePostOrders(request))

    def create_market_buy_order_with_cost(self, symbol, cost, params={}):
        return self.create_order(symbol, "market", "buy", None, None, self.extend(params, {"cost": cost}))

    def create_orders(self, orders, params={}):
        """Up to 20 orders in one request (POST /v1/orders/batch). Each is accepted or refused on its own: a
        refused one is returned with ``status: "rejected"`` and the server's error in ``info``."""
        self.load_markets()
        requests = [self.create_order_request(order["symbol"], order["type"], order["side"], order.get("amount"),
                                              order.get("price"), order.get("params") or {}) for order in orders]
        response = self.privatePostOrdersBatch(self.extend({"orders": requests}, params))
        return [self.parse_batch_result(result, request["client_order_id"])
                for result, request in zip(self.safe_list(response, "results", []), requests)]

    def create_order_request(self, symbol, type, side, amount, price=None, params={}):
        market = self.market(symbol)
        if type not in ("limit", "market"):
            raise InvalidOrder(self.id + " createOrder() type must be limit or market (a trigger price makes a stop)")
        triggers = {name: self.safe_value(params, name) for name in ("triggerPrice", "stopPrice", "stopLossPrice",
                                                                       "takeProfitPrice")}
        given = {name: value for name, value in triggers.items() if value is not None}
        if len(given) > 1:
            raise InvalidOrder(self.id + " createOrder() takes one of " + ", ".join(triggers) + ", not several")
        is_market = type == "market"
        post_only, params = self.handle_post_only(is_market, False, params)
        request = {"pair": market["id"], "side": side, "type": type,
                   "client_order_id": self.safe_string(params, "clientOrderId") or uuid.uuid4().hex}
        time_in_force = self.safe_string_upper(params, "timeInForce")
        if time_in_force is not None:
            request["time_in_force"] = time_in_force
        if post_only:
            request["post_only"] = True
        cost = self.safe_value(params, "cost")
        if cost is not None:
            request["funds"] = self.cost_to_precision(symbol, cost)
        else:
            request["size"] = self.amount_to_precision(symbol, amount)
        if not is_market:
            request["price"] = self.price_to_precision(symbol, price)
        if given:
            (name, trigger_price), = given.items()
            request["type"] = "stop"
            request["stop_price"] = self.price_to_precision(symbol, trigger_price)
            closes_long = side == "sell"
            if name == "stopLossPrice":
                request["trigger"] = "below" if closes_long else "above"
            elif name == "takeProfitPrice":
                request["trigger"] = "above" if closes_long else "below"
            else:
                direction = self.safe_string_lower(params, "triggerDirection")
                if direction is not None:
                    if direction not in TRIGGER_DIRECTIONS:
                        raise InvalidOrder(self.id + " createOrder() triggerDirection must be ascending or descending")
                    request["trigger"] = TRIGGER_DIRECTIONS[direction]
        rest = self.omit(params, ["clientOrderId", "timeInForce", "postOnly", "cost", "triggerDirection", *triggers])
        return self.extend(request, rest)

    def parse_batch_result(self, result, client_order_id):
        order = self.safe_dict(result, "order")
        if order is not None:
            return self.parse_order(order)
        details = self.safe_dict(self.safe_dict(result, "error"), "details", {})
        return self.safe_order({"info": result, "id": self.safe_string(details, "order_id"),
                                "clientOrderId": client_order_id, "status": "rejected"})

    def fetch_order(self, id, symbol=None, params={}):
        """By order id, or by ``params={"clientOrderId": ...}``."""
        self.load_markets()
        return self.parse_order(self.privateGetOrdersId(self.order_lookup(id, params)))

    def order_lookup(self, id, params):
        """The path's id; an id no order can have is OrderNotFound, as the server's ORDER_NOT_FOUND."""
        client_order_id = self.safe_string(params, "clientOrderId")
        if client_order_id is None and not ORDER_ID.fullmatch(str(id)):
            raise OrderNotFound(f"{self.id} order {id} not found: an order id is a positive integer")
        if client_order_id is not None and not CLIENT_ORDER_ID.fullmatch(client_order_id):
            raise OrderNotFound(f"{self.id} order with clientOrderId {client_order_id} not found: a client order id "
                                "is 1 to 64 of A-Z, a-z, 0-9, _ and -")
        lookup = str(id) if client_order_id is None else "client:" + client_order_id
        return self.extend({"id": lookup}, self.omit(params, "clientOrderId"))

    def fetch_orders(self, symbol=None, since=None, limit=None, params={}):
        """At most 1,000 orders created in the window from ``since`` to the ``until`` param: its oldest ``limit``
        with ``since``, else its newest; optionally of one market; a ``status`` param filters as GET /v1/orders
        does."""
        return self.orders(symbol, since, limit, params, every_page=False)

    def fetch_open_orders(self, symbol=None, since=None, limit=None, params={}):
        """Orders that may still trade: pending, open, partially filled, and stops waiting for their trigger.
        Without ``limit``, every one (the server's pages read to the last), as Binance and Kraken give them."""
        return self.orders(symbol, since, limit, self.extend({"status": "live"}, params), every_page=limit is None)

    def orders(self, symbol, since, limit, params, every_page: bool):
        """GET /v1/orders: one page of ``limit``, or (``every_page``, or the ``paginate`` param) every page of the
        list, followed to the last."""
        self.load_markets()
        market = None if symbol is None else self.market(symbol)
        request, params, paginate = self.window({} if market is None else {"pair": market["id"]}, since, limit, params)
        if every_page:
            return self.parse_orders(self.listed(self.privateGetOrders, request, params, True), market, since)
        return self.parse_orders(self.listed(self.privateGetOrders, request, params, paginate), market, since, limit)

    def listed(self, endpoint, request, params, every_page: bool) -> list:
        """A list's results: its one page asked for, or every page of the window (pages of 1,000), each
        following the last one's cursor, so that none is lost or repeated however many entries share a
        millisecond (ccxt's ``since = last + 1`` would lose the rest of a matcher batch's)."""
        if not every_page:
            return self.safe_list(endpoint(self.extend(request, params)), "results", [])
        return self.every_page(endpoint, self.extend(request, {"limit": MAX_PAGE}, params))

    def every_page(self, endpoint, request) -> list:
        """The results of a cursor-paged list, every page's, following each page's ``next``."""
        response = endpoint(request)
        results = self.safe_list(response, "results", [])
        while response.get("next"):
            [cursor] = parse_qs(urlsplit(response["next"]).query)["cursor"]
            response = endpoint(self.extend(request, {"cursor": cursor}))
            results += self.safe_list(response, "results", [])
        return results

    def fetch_closed_orders(self, symbol=None, since=None, limit=None, params={}):
        """Filled, cancelled, expired (IOC and FOK remainders) and rejected (post-only) orders."""
        return self.fetch_orders(symbol, since, limit, self.extend({"status": CLOSED_STATUSES}, params))

    def fetch_canceled_orders(self, symbol=None, since=None, limit=None, params={}):
        return self.fetch_orders(symbol, since, limit, self.extend({"status": "cancelled"}, params))

    def parse_order(self, order, market=None):
        market = self.safe_market(self.safe_string(order, "pair"), market, "-")
        timestamp = self.safe_integer(order, "created_at")
        kind, side = self.safe_string(order, "type"), self.safe_string(order, "side")
        stop_price = self.safe_string(order, "stop_price")
        price = self.safe_string(order, "price")
        # A stop enters as a limit order with its price, else as a market order.
        unified_type = "market" if kind == "market" or (kind == "stop" and price is None) else "limit"
        trigger = self.safe_string(order, "trigger")
        closes_long = side == "sell"
        stop_loss = stop_price if trigger == ("below" if closes_long else "above") else None
        take_profit = stop_price if trigger == ("above" if closes_long else "below") else None
        fee_asset = self.safe_string(order, "fee_asset")
        return self.safe_order({
            "id": self.safe_string(order, "order_id"), "clientOrderId": self.safe_string(order, "client_order_id"),
            "timestamp": timestamp, "datetime": self.iso8601(timestamp), "lastTradeTimestamp": None,
            "lastUpdateTimestamp": self.safe_integer(order, "updated_at"),
            "status": self.safe_string(ORDER_STATUSES, self.safe_string(order, "status")),
            "symbol": market["symbol"], "type": unified_type, "timeInForce": self.safe_string(order, "time_in_force"),
            "postOnly": self.safe_bool(order, "post_only"), "reduceOnly": None, "side": side, "price": price,
            "triggerPrice": stop_price, "stopLossPrice": stop_loss, "takeProfitPrice": take_profit,
            "amount": self.safe_string(order, "size"), "filled": self.safe_string(order, "filled_size"),
            "remaining": self.safe_string(order, "remaining_size"), "cost": self.safe_string(order, "executed_value"),
            "average": self.safe_string(order, "average_fill_price"),
            "fee": None if fee_asset is None else {"cost": self.safe_number(order, "fee"),
                                                   "currency": self.safe_currency_code(fee_asset)},
            "trades": None, "info": order,
        }, market)

    def cancel_order(self, id, symbol=None, params={}):
        """Cancelled when the matcher answered within a second, else still open with ``info.cancel_requested``."""
        self.load_markets()
        return self.parse_order(self.privatePostOrdersIdCancel(self.order_lookup(id, params)))

    def cancel_orders(self, ids, symbol=None, params={}):
        """Up to 20 orders (POST /v1/orders/cancel), by id, or by client order id with
        ``params={"clientOrderIds": [...]}`` (then ``ids`` is ignored). An id the server refused is returned
        with its error in ``info`` and no status."""
        self.load_markets()
        client_order_ids = self.safe_list(params, "clientOrderIds")
        params = self.omit(params, "clientOrderIds")
        if client_order_ids is None:
            if unknown := [order_id for order_id in ids if not ORDER_ID.fullmatch(str(order_id))]:
                raise OrderNotFound(f"{self.id} order {unknown[0]} not found: an order id is a positive integer; "
                                    "nothing was cancelled")
            asked, request = ids, {"order_ids": [int(order_id) for order_id in ids]}  # JSON integers
        else:
            asked, request = client_order_ids, {"client_order_ids": client_order_ids}
        response = self.privatePostOrdersCancel(self.extend(request, params))
        results = []
        for result, order_id in zip(self.safe_list(response, "results", []), asked):
            order = self.safe_dict(result, "order")
            results.append(self.parse_order(order) if order is not None
                           else self.safe_order({"info": result, "id": None if client_order_ids else str(order_id),
                                                 "clientOrderId": order_id if client_order_ids else None}))
        return results

    def cancel_all_orders(self, symbol=None, params={}):
        """Every live order, of one market if given; as the matchers left them within a second."""
        self.load_markets()
        request = {} if symbol is None else {"pair": self.market_id(symbol)}
        response = self.privatePostOrdersCancelAll(self.extend(request, params))
        return self.parse_orders(self.safe_list(response, "orders", []))

    def cancel_all_orders_after(self, timeout, params={}):
        """The dead-man's switch: cancel every live order unless called again within ``timeout`` ms (0 disarms);
        a ``symbol`` param arms the switch of that market only."""
        self.load_markets()
        symbol = self.safe_string(params, "symbol")
        timeout = int(timeout) if isinstance(timeout, float) and timeout.is_integer() else timeout  # 60000.0 too
        request = {"timeout_ms": timeout} if symbol is None else {"timeout_ms": timeout,
                                                                   "pair": self.market_id(symbol)}
        return self.privatePostOrdersCancelAllAfter(self.extend(request, self.omit(params, "symbol")))

    def fetch_my_trades(self, symbol=None, since=None, limit=None, params={}):
        """Your fills (at most 1,000) from ``since`` to the ``until`` param: the oldest ``limit`` with ``since``,
        else the newest; with the ``paginate`` param, every one of the window."""
        self.load_markets()
        market = None if symbol is None else self.market(symbol)
        request, params, paginate = self.window({} if market is None else {"pair": market["id"]}, since, limit,
                                                params)
        return self.parse_trades(self.listed(self.privateGetFills, request, params, paginate), market, since, limit)

    def fetch_order_trades(self, id, symbol=None, since=None, limit=None, params={}):
        """The order's fills: without ``limit``, every one."""
        if not ORDER_ID.fullmatch(str(id)):
            raise OrderNotFound(f"{self.id} order {id} not found: an order id is a positive integer")
        return self.fetch_my_trades(symbol, since, limit, self.extend(
            {"order_id": str(id)}, {"paginate": True} if limit is None else {}, params))

    def window(self, request, since, limit, params):
        """A list's query, the params left and whether the ``paginate`` param asks for every page: ``since`` as
        start_time, the ``until`` param (the last millisecond included, as ccxt means it) as end_time
        (exclusive), ``limit`` up to 1,000. As ccxt's unified methods do, a page with ``since`` is the oldest
        ``limit`` from it (``sort=asc``), so that ``since = last timestamp + 1`` reads on; without it, the
        newest ``limit``."""
        if since is not None:
            request["start_time"] = since
            request["sort"] = "asc"
        if limit is not None:
            request["limit"] = min(limit, MAX_PAGE)
        until = self.safe_integer_2(params, "until", "till")
        if until is not None:
            request["end_time"] = until + 1
        return request, self.omit(params, ["until", "till", "paginate"]), bool(self.safe_bool(params, "paginate"))

    # Wallets (SPEC section 9).

    def fetch_deposits(self, code=None, since=None, limit=None, params={}):
        return self.wallet_list(self.privateGetAccountDeposits, code, since, limit, params, self.parse_transaction)

    def fetch_withdrawals(self, code=None, since=None, limit=None, params={}):
        return self.wallet_list(self.privateGetWithdrawals, code, since, limit, params, self.parse_transaction)

    def fetch_transfers(self, code=None, since=None, limit=None, params={}):
        return self.wallet_list(self.privateGetAccountTransfers, code, since, limit, params, self.parse_transfer)

    def wallet_list(self, endpoint, code, since, limit, params, parse):
        self.load_markets()
        currency = None if code is None else self.currency(code)
        request, params, paginate = self.window({} if currency is None else {"asset": currency["id"]}, since, limit,
                                                params)
        items = [parse(item, currency) for item in self.listed(endpoint, request, params, paginate)]
        return self.filter_by_currency_since_limit(self.sort_by(items, "timestamp"), code, since, limit)

    def fetch_withdrawal(self, id, code=None, params={}):
        if not ORDER_ID.fullmatch(str(id)):  # withdrawal ids are such integers too
            raise EXCEPTIONS["WITHDRAWAL_NOT_FOUND"](f"{self.id} withdrawal {id} not found: its id is a positive integer")
        self.load_markets()
        return self.parse_transaction(self.privateGetWithdrawalsId(self.extend({"id": str(id)}, params)))

    def withdraw(self, code, amount, address, params={}):
        """To an address of the account's address book (added on the account pages; a key with the
        ``trade_withdraw`` scope), ``amount`` truncated to the asset's precision (never rounded up past the
        balance). A tag or memo is part of the address as the book holds it: a ``tag`` param is refused; a
        ``network`` param must be the one ``options["currencyNetworks"]`` names for the asset."""
        if self.safe_string(params, "tag") is not None:
            raise NotSupported(self.id + " withdraw() takes no tag: give the address as in your address book, "
                                         "its tag or memo included")
        network, named = self.safe_string(params, "network"), self.safe_string(self.options["currencyNetworks"], code)
        if network is not None and network != named:
            raise BadRequest(f"{self.id} withdraw() sends {code} on one network only: options['currencyNetworks'] "
                             f"names it ({named}), not {network}")
        self.load_markets()
        currency = self.currency(code)
        request = {"asset": currency["id"],
                   "amount": self.decimal_to_precision(amount, TRUNCATE, currency["precision"], self.precisionMode),
                   "address": address, "client_withdrawal_id": self.safe_string(params, "clientWithdrawalId")
                   or uuid.uuid4().hex}
        response = self.privatePostWithdrawals(self.extend(request, self.omit(params, ["clientWithdrawalId", "tag",
                                                                                       "network"])))
        return self.parse_transaction(response, currency)

    def parse_transaction(self, transaction, currency=None):
        """A deposit (GET /v1/account/deposits) or a withdrawal (/v1/withdrawals)."""
        code = self.safe_currency_code(self.safe_string(transaction, "asset"), currency)
        is_deposit = "external_id" in transaction
        timestamp = self.safe_integer_2(transaction, "time", "created_at")
        address = self.safe_string(transaction, "address")
        return {
            "info": transaction, "id": self.safe_string(transaction, "id"),
            "txid": self.safe_string_2(transaction, "external_id", "tx_id"),
            "timestamp": timestamp, "datetime": self.iso8601(timestamp),
            "network": self.safe_string(self.options["currencyNetworks"], code),
            "address": address, "addressTo": address, "addressFrom": None,
            "tag": None, "tagTo": None, "tagFrom": None,
            "type": "deposit" if is_deposit else "withdrawal",
            "amount": self.safe_number(transaction, "amount"), "currency": code,
            "status": "ok" if is_deposit else self.safe_string(WITHDRAWAL_STATUSES,
                                                              self.safe_string(transaction, "status")),
            "updated": self.safe_integer_2(transaction, "updated_at", "time"),
            "comment": None, "internal": False,
            # A deposit costs nothing; a withdrawal's fee is charged on top of its amount.
            "fee": {"cost": self.safe_number(transaction, "fee", self.parse_number("0")), "currency": code},
        }

    def transfer(self, code, amount, fromAccount, toAccount, params={}):
        """Between this account's wallets: ``spot``, ``margin``, ``earn`` (available balances), ``amount`` as
        given: balances hold fee dust finer than the asset's precision, and all of one moves exactly."""
        self.load_markets()
        currency = self.currency(code)
        request = {"asset": currency["id"], "amount": self.number_to_string(amount),
                   "from": fromAccount, "to": toAccount,
                   "client_transfer_id": self.safe_string(params, "clientTransferId") or uuid.uuid4().hex}
        response = self.privatePostAccountTransfers(self.extend(request, self.omit(params, "clientTransferId")))
        return self.parse_transfer(response, currency)

    def parse_transfer(self, transfer, currency=None):
        timestamp = self.safe_integer(transfer, "time")
        return {
            "info": transfer, "id": self.safe_string(transfer, "transfer_id"), "timestamp": timestamp,
            "datetime": self.iso8601(timestamp),
            "currency": self.safe_currency_code(self.safe_string(transfer, "asset"), currency),
            "amount": self.safe_number(transfer, "amount"), "fromAccount": self.safe_string(transfer, "from"),
            "toAccount": self.safe_string(transfer, "to"), "status": "ok",  # made in one transaction, or refused
        }
