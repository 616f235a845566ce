"""A small synchronous client for the exchange's REST API (SPEC section 6).

Every method returns the decoded JSON body and raises a typed ApiError (hkt_client.errors) on a
non-2xx response. Retries never risk a second effect:
- a request that never reached the server (connection refused) or was refused before it ran (429)
  may be retried whatever it does;
- after an ambiguous failure (read timeout, dropped connection, 5xx) only requests that are safe to
  repeat are retried: GETs, `place_order` and `place_orders` (each order's client_order_id makes the
  server return the first order instead of creating a second), `cancel_order` and `cancel_orders`
  (idempotent on the server) and `cancel_all_after` (setting the switch again only moves its time).
Each attempt is signed afresh: a new nonce and the current time, over the same body bytes.
"""

import json
import time
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from hkt_client import errors
from hkt_client.signing import now_ms, signed_headers

Amount = str | Decimal | int

# Transport errors raised before the request was written: the server cannot have acted on it.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
PUBLIC_MAX_DEPTH = 100  # deeper books need a signed request from a verified account


def decimal_string(name: str, value: Amount) -> str:
    """A decimal string for the wire. Floats are refused: 0.1 is not 0.1, and the server never rounds."""
    if isinstance(value, float):
        raise TypeError(f"{name} must be a str or Decimal, not float ({value!r} is not exact)")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{name} must be a finite number, not {value}")
        return format(value, "f")  # never "1E-8": the server rejects exponents
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a str or Decimal, not {type(value).__name__}")


def order_body(pair: str, side: str, type: str, *, price: Amount | None = None, size: Amount | None = None,
               funds: Amount | None = None, stop_price: Amount | None = None, time_in_force: str | None = None,
               post_only: bool | None = None, stp: str | None = None, client_order_id: str | None = None,
               trigger: str | None = None) -> dict[str, Any]:
    """An order as POST /v1/orders takes it, with a client_order_id generated when none is given."""
    body: dict[str, Any] = {"pair": pair, "side": side, "type": type}
    for name, value in (("price", price), ("size", size), ("funds", funds), ("stop_price", stop_price)):
        if value is not None:
            body[name] = decimal_string(name, value)
    optional = {"time_in_force": time_in_force, "post_only": post_only, "stp": stp, "trigger": trigger}
    body.update({name: value for name, value in optional.items() if value is not None})
    body["client_order_id"] = client_order_id or uuid.uuid4().hex
    return body


def path_part(value: Any) -> str:
    return quote(str(value), safe=":")


class Client:
    def __init__(self, base_url: str, key: str | None = None, secret: str | None = None, timeout: float = 10.0,
                 max_retries: int = 3, http: httpx.Client | None = None, backoff: float = 0.25):
        self.base_url = base_url.rstrip("/")
        self.key, self.secret = key, secret
        self.max_retries, self.backoff = max_retries, backoff
        self.clock_offset_ms = 0  # server time minus ours, learnt from TIMESTAMP_OUT_OF_WINDOW or sync_clock()
        self._owns_http = http is None
        self.http = http or httpx.Client(timeout=timeout)

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # Public market data.

    def time(self) -> dict:
        return self._request("GET", "/v1/time")

    def markets(self) -> list[dict]:
        return self._request("GET", "/v1/markets")

    def ticker(self, pair: str) -> dict:
        return self._request("GET", f"/v1/ticker/{path_part(pair)}")

    def orderbook(self, pair: str, depth: int | None = None) -> dict:
        # Signed only when asking for more than everyone gets, so that public calls stay on the IP budget.
        private = depth is not None and depth > PUBLIC_MAX_DEPTH and self.key is not None
        return self._request("GET", f"/v1/orderbook/{path_part(pair)}", params={"depth": depth}, private=private)

    def trades(self, pair: str, limit: int | None = None, before: int | None = None, start_time: int | None = None,
               end_time: int | None = None, sort: str | None = None, after: int | None = None) -> dict:
        """Newest first (the window's newest `limit`; page back with `before`), or with sort="asc" oldest
        first (its oldest `limit`; page on with `after`)."""
        params = {"limit": limit, "before": before, "start_time": start_time, "end_time": end_time, "sort": sort,
                  "after": after}
        return self._request("GET", f"/v1/trades/{path_part(pair)}", params=params)

    def tickers(self) -> list[dict]:
        """Every pair's ticker."""
        return self._request("GET", "/v1/tickers")

    def candles(self, pair: str, interval: str, start: int | None = None, end: int | None = None,
                limit: int | None = None) -> list[list]:
        """Rows `[time, open, high, low, close, volume, quote_volume, trade_count]`, oldest first; intervals
        without trades have none. A page covers `limit` intervals (default 500) from `start`, else up to `end`."""
        return self._request("GET", f"/v1/candles/{path_part(pair)}",
                             params={"interval": interval, "start": start, "end": end, "limit": limit})

    def assets(self) -> list[dict]:
        return self._request("GET", "/v1/assets")

    def sync_clock(self) -> int:
        """Measure the clock offset with GET /v1/time (assuming a symmetric round trip); returns it in ms."""
        sent = now_ms()
        server_time = self.time()["time"]
        self.clock_offset_ms = server_time - (sent + now_ms()) // 2
        return self.clock_offset_ms

    # Private: orders, fills, balances.

    def place_order(
        self, pair: str, side: str, type: str, *, price: Amount | None = None, size: Amount | None = None,
        funds: Amount | None = None, stop_price: Amount | None = None, time_in_force: str | None = None,
        post_only: bool | None = None, stp: str | None = None, client_order_id: str | None = None,
        trigger: str | None = None,
    ) -> dict:
        """Create an order. Without a client_order_id one is generated, so that retries are safe; pass
        your own to find the order with get_order_by_client_id if every attempt fails. A stop's trigger:
        "above" or "below" its stop_price (default: above for a buy, below for a sell)."""
        body = order_body(pair, side, type, price=price, size=size, funds=funds, stop_price=stop_price,
                          time_in_force=time_in_force, post_only=post_only, stp=stp, client_order_id=client_order_id,
                          trigger=trigger)
        return self._request("POST", "/v1/orders", json_body=body, private=True, idempotent=True)

    def place_orders(self, orders: list[dict]) -> dict:
        """Create up to 20 orders in one request, each a dict of place_order's arguments (`pair`, `side`,
        `type`, `price`...). Returns `{"results": [...]}`, one per order in the order given: `{"status":
        201, "order": {...}}` (200 for an order its client_order_id made before) or `{"status": 4xx,
        "error": {...}}`; the request itself raises only when refused as a whole. Each order without a
        client_order_id gets one, so that a retry places none twice."""
        body = {"orders": [order_body(**order) for order in orders]}
        return self._request("POST", "/v1/orders/batch", json_body=body, private=True, idempotent=True)

    def get_order(self, order_id: int | str) -> dict:
        return self._request("GET", f"/v1/orders/{path_part(order_id)}", private=True)

    def get_order_by_client_id(self, client_order_id: str) -> dict:
        return self._request("GET", f"/v1/orders/client:{path_part(client_order_id)}", private=True)

    def list_orders(self, pair: str | None = None, status: str | list[str] | None = None,
                    limit: int | None = None, cursor: str | None = None, start_time: int | None = None,
                    end_time: int | None = None, sort: str | None = None) -> dict:
        """One page, newest first (oldest first with sort="asc"): `{"next", "previous", "results"}`. status:
        one, several, or "live"; created at or after start_time and before end_time (ms)."""
        if isinstance(status, (list, tuple)):
            status = ",".join(status)
        params = {"pair": pair, "status": status, "limit": limit, "cursor": cursor, "start_time": start_time,
                  "end_time": end_time, "sort": sort}
        return self._request("GET", "/v1/orders", params=params, private=True)

    def cancel_order(self, order_id: int | str) -> dict:
        return self._request("POST", f"/v1/orders/{path_part(order_id)}/cancel", private=True, idempotent=True)

    def cancel_orders(self, order_ids: list[int] | None = None, client_order_ids: list[str] | None = None) -> dict:
        """Cancel up to 20 orders, by id or by client_order_id (one of the two). Returns `{"results": [...]}`,
        one per id in the order given: `{"status": 200 | 202, "order": {...}}` or `{"status": 4xx, "error":
        {...}}`."""
        body = {"order_ids": order_ids} if client_order_ids is None else {"client_order_ids": client_order_ids}
        return self._request("POST", "/v1/orders/cancel", json_body=body, private=True, idempotent=True)

    def cancel_all(self, pair: str | None = None) -> dict:
        # Not repeated after an ambiguous failure: a second run could cancel orders placed in between.
        body = {} if pair is None else {"pair": pair}
        return self._request("POST", "/v1/orders/cancel-all", json_body=body, private=True, idempotent=False)

    def cancel_all_after(self, timeout_ms: int, pair: str | None = None) -> dict:
        """The dead-man's switch: unless called again within timeout_ms (1,000 to 600,000), every live order
        (of `pair` only, when given) is cancelled; 0 disarms it. Returns `{"pair", "timeout_ms",
        "current_time", "trigger_time"}` (ms)."""
        body: dict[str, Any] = {"timeout_ms": timeout_ms} if pair is None else {"timeout_ms": timeout_ms, "pair": pair}
        return self._request("POST", "/v1/orders/cancel-all-after", json_body=body, private=True, idempotent=True)

    def fills(self, pair: str | None = None, order_id: int | None = None, limit: int | None = None,
              cursor: str | None = None, start_time: int | None = None, end_time: int | None = None,
              sort: str | None = None) -> dict:
        params = {"pair": pair, "order_id": order_id, "limit": limit, "cursor": cursor, "start_time": start_time,
                  "end_time": end_time, "sort": sort}
        return self._request("GET", "/v1/fills", params=params, private=True)

    def balances(self) -> dict:
        return self._request("GET", "/v1/account/balances", private=True)

    def fees(self) -> dict:
        """This account's fee tier and its maker and taker rates per pair: `{"tier", "fees": [{"pair", ...}]}`."""
        return self._request("GET", "/v1/account/fees", private=True)

    # Wallets (SPEC section 9). Lists are one page, newest first (oldest first with sort="asc"): `{"next",
    # "previous", "results"}`;
    # start_time and end_time are in ms. Requests with a client id get a generated one, so retries are safe.

    def ledger(self, asset: str | None = None, wallet: str | None = None, kind: str | None = None,
               start_time: int | None = None, end_time: int | None = None, limit: int | None = None,
               cursor: str | None = None, sort: str | None = None) -> dict:
        """Every balance change with the balance of its bucket after it."""
        params = {"asset": asset, "wallet": wallet, "kind": kind, "start_time": start_time, "end_time": end_time,
                  "limit": limit, "cursor": cursor, "sort": sort}
        return self._request("GET", "/v1/account/ledger", params=params, private=True)

    def deposits(self, asset: str | None = None, start_time: int | None = None, end_time: int | None = None,
                 limit: int | None = None, cursor: str | None = None, sort: str | None = None) -> dict:
        return self._list("/v1/account/deposits", asset, start_time, end_time, limit, cursor, sort=sort)

    def transfer(self, asset: str, amount: Amount, from_wallet: str, to_wallet: str,
                 client_transfer_id: str | None = None) -> dict:
        """Move funds between your own wallets (`spot`, `margin`, `earn`)."""
        body = {"asset": asset, "amount": decimal_string("amount", amount), "from": from_wallet, "to": to_wallet,
                "client_transfer_id": client_transfer_id or uuid.uuid4().hex}
        return self._request("POST", "/v1/account/transfers", json_body=body, private=True, idempotent=True)

    def transfers(self, asset: str | None = None, start_time: int | None = None, end_time: int | None = None,
                  limit: int | None = None, cursor: str | None = None, sort: str | None = None) -> dict:
        return self._list("/v1/account/transfers", asset, start_time, end_time, limit, cursor, sort=sort)

    def withdraw(self, asset: str, amount: Amount, address: str, client_withdrawal_id: str | None = None) -> dict:
        """Ask for a withdrawal to an address of your address book (a trade_withdraw key)."""
        body = {"asset": asset, "amount": decimal_string("amount", amount), "address": address,
                "client_withdrawal_id": client_withdrawal_id or uuid.uuid4().hex}
        return self._request("POST", "/v1/withdrawals", json_body=body, private=True, idempotent=True)

    def withdrawals(self, asset: str | None = None, start_time: int | None = None, end_time: int | None = None,
                    limit: int | None = None, cursor: str | None = None, status: str | None = None,
                    sort: str | None = None) -> dict:
        return self._list("/v1/withdrawals", asset, start_time, end_time, limit, cursor, status=status, sort=sort)

    def get_withdrawal(self, withdrawal_id: int | str) -> dict:
        return self._request("GET", f"/v1/withdrawals/{path_part(withdrawal_id)}", private=True)

    def cancel_withdrawal(self, withdrawal_id: int | str) -> dict:
        return self._request("POST", f"/v1/withdrawals/{path_part(withdrawal_id)}/cancel", private=True,
                             idempotent=True)

    def earn_products(self) -> list[dict]:
        return self._request("GET", "/v1/earn/products")

    def subscribe(self, product_id: int, amount: Amount, client_subscription_id: str | None = None) -> dict:
        body = {"product_id": product_id, "amount": decimal_string("amount", amount),
                "client_subscription_id": client_subscription_id or uuid.uuid4().hex}
        return self._request("POST", "/v1/earn/subscriptions", json_body=body, private=True, idempotent=True)

    def redeem(self, subscription_id: int | str) -> dict:
        return self._request("POST", f"/v1/earn/subscriptions/{path_part(subscription_id)}/redeem", private=True,
                             idempotent=True)

    def subscriptions(self, asset: str | None = None, start_time: int | None = None, end_time: int | None = None,
                      limit: int | None = None, cursor: str | None = None, sort: str | None = None) -> dict:
        return self._list("/v1/earn/subscriptions", asset, start_time, end_time, limit, cursor, sort=sort)

    def faucet(self, asset: str, amount: Amount) -> dict:
        """Testnet money, in the sandbox only (404 elsewhere)."""
        body = {"asset": asset, "amount": decimal_string("amount", amount)}
        return self._request("POST", "/v1/sandbox/faucet", json_body=body, private=True, idempotent=False)

    def _list(self, path: str, asset: str | None, start_time: int | None, end_time: int | None, limit: int | None,
              cursor: str | None, **filters: Any) -> dict:
        params = {"asset": asset, "start_time": start_time, "end_time": end_time, "limit": limit, "cursor": cursor,
                  **filters}
        return self._request("GET", path, params=params, private=True)

    # The one place requests are built, signed, sent and retried.

    def _request(self, method: str, path: str, *, params: dict | None = None, json_body: Any = None,
                 private: bool = False, idempotent: bool | None = None) -> Any:
        if private and not (self.key and self.secret):
            raise ValueError(f"{method} {path} is a private call: give the Client a key and secret")
        if idempotent is None:
            idempotent = method == "GET"
        # Serialized once: the bytes signed are the bytes sent, on every attempt.
        content = b"" if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
        params = {name: value for name, value in (params or {}).items() if value is not None}
        attempt, resynced = 0, False
        while True:
            request = self._build(method, path, params, content, private)
            try:
                response = self.http.send(request)
            except httpx.TransportError as exc:
                if attempt < self.max_retries and (idempotent or isinstance(exc, NOT_SENT)):
                    attempt += 1
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise
            if response.is_success:
                return response.json() if response.content else None
            error = errors.from_response(response)
            if private and not resynced and isinstance(error, errors.TimestampOutOfWindow):
                resynced = True  # once: a second refusal means something other than our clock is wrong
                self._learn_clock(error)
                continue
            retryable = response.status_code == 429 or (response.status_code >= 500 and idempotent)
            if attempt < self.max_retries and retryable:
                attempt += 1
                wait = errors.parse_retry_after(response.headers.get("Retry-After"))
                time.sleep(wait if wait is not None else self.backoff * 2 ** (attempt - 1))
                continue
            raise error

    def _build(self, method: str, path: str, params: dict, content: bytes, private: bool) -> httpx.Request:
        headers = {"Accept": "application/json"}
        if content:
            headers["Content-Type"] = "application/json"
        request = self.http.build_request(method, self.base_url + path, params=params or None,
                                          content=content or None, headers=headers)
        if private:
            # Sign the path and query exactly as httpx encoded them on the request line.
            sent_path = request.url.raw_path.decode("ascii")
            timestamp = now_ms() + self.clock_offset_ms
            request.headers.update(signed_headers(self.key, self.secret, method, sent_path, content, timestamp))
        return request

    def _learn_clock(self, error: errors.TimestampOutOfWindow) -> None:
        if error.server_time is not None:
            self.clock_offset_ms = error.server_time - now_ms()
        else:
            self.sync_clock()
