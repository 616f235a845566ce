"""The WebSocket at /v1/ws (SPEC section 7): public book, trades, ticker and candles channels, and after an
``auth`` operation the account's private orders, fills and balances channels.

How a book subscription joins its snapshot to the deltas without gap or overlap: the connection
joins the pair's group *first*, then reads the snapshot (sequence S) from the database. The matcher
publishes a delta only after committing it, so every delta is either already in that snapshot
(sequence <= S, dropped here) or still ahead of it, and then it reaches this connection's channel
after the group join and is forwarded. Channels hands a consumer its messages one at a time, so
deltas that arrive while the snapshot is being read wait in the channel until it has been sent (and
the direct writes of ``relay`` and of the hub wait too: they happen only while the consumer handles
nothing).
A delta whose sequence is not the next one (the channel layer dropped messages for a slow
connection, or a matcher died between commit and publish) triggers a resynchronisation from the
replay buffer, or a fresh snapshot when the buffer does not reach back that far. ``since_sequence``
on a subscription resumes the same way.
"""

import asyncio
import json
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from accounts.authentication import SignedRequest, check_session_key, record_key_use, verify_signed_request
from exchange import metrics
from exchange.errors import (AuthenticationFailed, ErrorCode, ExchangeError, InternalError, InvalidRequest,
                             MessageTooLarge, PrivateEventsLost, RateLimited, SlowConsumer, SubscriptionLimit,
                             UnknownPair)
from exchange.fields import has_control_character, to_milliseconds
from exchange.jsonparse import StrictJSONError, loads_strict
from exchange.logs import log_context
from exchange.net import budget_address, client_address
from exchange.ratelimit import MessageAllowance
from exchange.request_ids import new_request_id
from marketdata import replay, services, streams
from marketdata.account_events import AccountEvents
from marketdata.candles import INTERVALS, latest_candle
from marketdata.hub import GROUP_REFRESH_SECONDS, end_if_cancelled, hub_for, layer_call
from marketdata.transport import (STATE_OPEN, close_when_read, notify_writes, pending_output_bytes, protocol_of,
                                  refuse_oversized_with_a_close, takes_frames, write_frame)
from trading.markets import RECENT_MARKET_SECONDS, access_market
from trading.api.serializers import AssetBalanceSerializer
from trading.backends import bus
from trading.rendering import render_fills, render_orders
from trading.services import account_balances

logger = logging.getLogger(__name__)

PUBLIC_CHANNELS = {"orderbook", "trades", "ticker", "candles"}
PRIVATE_CHANNELS = {"orders", "fills", "balances"}
MAX_SUBSCRIPTIONS = 50
MAX_MESSAGE_BYTES = 16 * 1024
# Larger frames and messages are refused by the server (Daphne's autobahn) with a close, code 1009:
# it does not buffer them for the consumer to refuse with MESSAGE_TOO_LARGE.
MAX_FRAME_BYTES = 1024 * 1024
PAIR = re.compile(r"[A-Za-z0-9]{2,12}-[A-Za-z0-9]{2,12}")  # BASE-QUOTE, asset symbols in any case
SLOW_CONSUMER_CLOSE_CODE = 4008
# How long a connection closed with a reason is kept for the client to read the reason (the error and
# the close frame are behind whatever it has not read yet), before it is dropped.
CLOSE_GRACE_SECONDS = 30
MAX_QUEUED_STREAM_MESSAGES = 10_000  # relayed public messages waiting for this connection's handlers
KEY_RECHECK_SECONDS = 10  # how soon a revoked key's socket is closed
KEY_REFUSED_CLOSE_CODE = 4003
TOO_MANY_CONNECTIONS_CLOSE_CODE = 4029  # an address past WS_CONNECTIONS_PER_ADDRESS (HTTP's 429)
INTERNAL_ERROR_CLOSE_CODE = 1011  # RFC 6455: the server met a condition it did not expect
LAYER_RETRY_SECONDS = 0.5
READ_STOP_SECONDS = 1.0  # how long a cancelled read is given to end before it is taken as stuck
READ_RECANCEL_SECONDS = 0.1  # a read still running this long after its cancellation is cancelled again
RESUME_RETRY_SECONDS = 1.0  # a resume that could not join the account group again is tried again after this


def error_json(error: ExchangeError, op: str | None = None) -> dict:
    return {"type": "error", "op": op, "code": error.code.value, "message": error.message, "details": error.details}


def auth_field(value) -> str | None:
    """A field of ``auth`` as the signed request's header would carry it: a string of printable
    characters without surrounding whitespace (checked further by verify_signed_request), or a
    non-negative integer (timestamps and nonces are often numbers); None for anything else."""
    if type(value) is int and value >= 0:  # not bool
        return str(value)
    if isinstance(value, str) and value and value == value.strip() and not has_control_character(value):
        return value
    return None


def check_sequence(value) -> int | None:
    """A subscription's since_sequence, checked before anything is joined or sent."""
    if value is not None and (type(value) is not int or value < 0):  # not bool, not "5"
        raise InvalidRequest("since_sequence must be a sequence number (an integer, 0 or more).")
    return value


class Channel(NamedTuple):
    """One subscription: a channel's name, its pair (public channels) and interval (candles)."""

    name: str
    pair: str | None = None
    interval: str | None = None

    def described(self, type_: str) -> dict:
        """The acknowledgement of a subscribe or an unsubscribe."""
        message = {"type": type_, "channel": self.name, "pair": self.pair}
        return message if self.interval is None else {**message, "interval": self.interval}


@dataclass
class Connection:
    """What one socket is subscribed to and how far each of its books and candles has been sent."""

    subscriptions: set[Channel] = field(default_factory=set)
    book_sequences: dict[str, int] = field(default_factory=dict)
    # when each book was last sent something (a delta, a snapshot) or checked by a heartbeat: a book quiet for a
    # heartbeat interval gets its check even while the connection's other streams are busy
    books_checked_at: dict[str, float] = field(default_factory=dict)
    book_markets: dict[str, tuple[float, object]] = field(default_factory=dict)  # pair -> (read at, Market)
    candles_sent: dict[tuple[str, str], list] = field(default_factory=dict)  # (pair, interval) -> the last one's key
    account_id: int | None = None
    last_sent: float = field(default_factory=time.monotonic)
    private_sent: int = 0  # the "seq" of the last private message sent
    account_events: AccountEvents = field(default_factory=AccountEvents)

    def book_sent(self, pair: str, sequence: int, at: float) -> None:
        """The book's last sequence sent (a delta, a snapshot, where a replay starts), at ``at``."""
        self.book_sequences[pair] = sequence
        self.books_checked_at[pair] = at

    def a_book_quiet_since(self, since: float) -> bool:
        return any(at <= since for at in self.books_checked_at.values())


class StreamConsumer(AsyncWebsocketConsumer):
    # Messages the matcher fans out to every subscriber. Channels' dispatch first closes stale
    # database connections through Daphne's one sync thread, a hop per message per connection;
    # these handlers reach the database only through database_sync_to_async, which does that itself.
    STREAM_HANDLERS = {"book.delta": "book_delta", "market.trades": "market_trades", "market.ticker": "market_ticker",
                       "market.candle": "market_candle", "stream.heartbeat": "heartbeat", "stream.resumed": "resume",
                       "stream.events_lost": "events_lost"}

    async def dispatch(self, message):
        self.busy = True
        if self.direct_in:
            self.release_direct()
        try:
            if message["type"].startswith("websocket."):  # the client's (receive answers its own failures)
                return await super().dispatch(message)
            try:
                await self.deliver(message)
            except Exception:  # a database or Redis blip: the connection outlives it (SPEC section 7)
                logger.exception("handling a %s message failed", message["type"])
                await self.delivery_failed(message)
        finally:
            self.busy = False

    async def deliver(self, message) -> None:
        handler = self.STREAM_HANDLERS.get(message["type"])
        if handler is None:
            return await super().dispatch(message)
        self.queued_streams -= 1
        return await getattr(self, handler)(message)

    async def delivery_failed(self, message) -> None:
        """After a stream message whose handling failed: account changes it may not have sent are announced
        lost, for the client to reconcile from REST; a book it left behind is repaired by the next
        heartbeat (which checks each book against the latest sequence); a trade or ticker is not replayed."""
        if message["type"] == "account.changes" and not self.closing:
            try:
                await self.events_lost({"details": {"reason": "an event could not be read"}})
            except Exception:
                logger.exception("announcing lost account events failed")

    async def __call__(self, scope, receive, send):
        """Every line logged for the connection, from its tasks and database threads too, carries its id."""
        with log_context(connection_id=new_request_id()):
            await self.serve(scope, receive, send)

    async def serve(self, scope, receive, send):
        """Channels' AsyncConsumer.__call__, with a third source of messages: the public streams
        this process's hub relays (marketdata.hub), taken one at a time with the others."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.stream_queue: asyncio.Queue = asyncio.Queue()
        self.queued_streams = 0  # relayed messages put in stream_queue and not handled yet
        self.busy = False  # a message is being handled
        self.socket = protocol_of(send)  # Daphne's: public messages can be written straight to it
        self.frames: list[bytes] = []  # for the socket, from messages the hub read together (flush_frames)
        self.direct_in: list = []  # the hub's groups that write to this connection directly (hub.Group)
        self.low_water = settings.WS_WRITE_LOW_WATER_BYTES  # read per write, so not through Django's lazy settings
        self.base_send = send
        try:
            await self.dispatch_messages([receive, self.receive_from_layer, self.stream_queue.get])
        except StopConsumer:
            pass
        except Exception:
            # Whatever ended the connection, it leaves the hub's groups and its tasks end: a dead consumer
            # must not be relayed every message of its groups.
            if hasattr(self, "state"):
                try:
                    await self.disconnect(INTERNAL_ERROR_CLOSE_CODE)
                except Exception:  # the error that ended the connection is the one to log
                    logger.exception("leaving the groups of a connection that failed failed too")
            raise
        finally:
            # A consumer cancelled (Daphne ends one still running after its client has gone) runs no
            # disconnect: what this process counts for it is given back here, and it leaves the hub's
            # groups, without awaiting.
            self.uncount()
            hub_for(self.channel_layer).forget(self)

    async def dispatch_messages(self, sources: list) -> None:
        """Channels' ``await_many_dispatch``: the next message of each source, dispatched as it comes;
        except that a read whose cancellation was lost cannot keep the consumer from ending (stop_reading)."""
        reads = [asyncio.ensure_future(source()) for source in sources]
        try:
            while True:
                await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
                for i, read in enumerate(reads):
                    if read.done():
                        await self.dispatch(read.result())
                        reads[i] = asyncio.ensure_future(sources[i]())
        finally:
            await self.stop_reading(reads)

    async def stop_reading(self, reads: list[asyncio.Future]) -> None:
        """Cancels the consumer's reads. A channel read of channels_redis can lose its cancellation: on
        Python 3.11 redis-py writes each command under ``asyncio.wait_for`` (a socket timeout is set), which
        returns instead of raising when the cancellation lands as the write completes, a window wide enough
        to hit when many connections close at once (each close hands the layer's shared read to another
        connection, which writes its first commands). The read then goes on for good, one blocking pop
        after another, and Channels' own loop would wait for it forever. So a read still running is
        cancelled again every READ_RECANCEL_SECONDS, and one still running after READ_STOP_SECONDS is ended
        by a message to the connection's own channel.

        The consumer itself being cancelled meanwhile (Daphne ending it after application_close_timeout, an
        event loop closing) does not cut this short: a read left behind would lose that single cancellation
        too, now and then, and read on with no one left to end it. Its cancellation is raised once the reads
        are over: READ_STOP_SECONDS later at most, and the ending message's send."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_STOP_SECONDS
        cancelled = False
        running = {read for read in reads if not read.done()}
        while running and (left := deadline - loop.time()) > 0:
            for read in running:
                read.cancel()
            try:
                _, running = await asyncio.wait(running, timeout=min(left, READ_RECANCEL_SECONDS))
            except asyncio.CancelledError:
                cancelled = True
        for read in reads:
            # What a read raised while it was cancelled is of no interest to a consumer that is ending.
            read.add_done_callback(lambda read: read.cancelled() or read.exception())
        if running:
            logger.warning("a channel read outlived its cancellation; ending it with a message")
            try:
                await layer_call(self.channel_layer.send, self.channel_name, {"type": "connection.ended"})
            except Exception:
                logger.warning("could not end a channel read that outlived its cancellation", exc_info=True)
        if cancelled:
            raise asyncio.CancelledError

    async def receive_from_layer(self) -> dict:
        """The next message of the connection's own channel. A failed read (Redis down) is retried:
        the hub reports the outage to the client, and the connection outlives it."""
        failing = False
        while True:
            try:
                message = await self.channel_layer.receive(self.channel_name)
                end_if_cancelled()
                return message
            except Exception:
                if asyncio.current_task().cancelling():
                    raise  # channels_redis can turn a cancellation into another error: it must still end this
                if not failing:  # once per outage, not every retry
                    logger.warning("a connection's channel could not be read; retrying", exc_info=True)
                    failing = True
                await asyncio.sleep(LAYER_RETRY_SECONDS)

    async def connect(self):
        self.state = Connection()
        self.tasks: list[asyncio.Task] = []
        self.closing = False
        self.key_id: str | None = None  # the key the connection authenticated with
        self.heartbeat_queued = False
        self.resume_due = False  # the hub has resumed, this connection's own resume is not handled yet
        self.outbox: deque[str] = deque()
        self.outbox_bytes = 0
        self.outbox_ready = asyncio.Event()
        self.writing = False
        self.allowance = MessageAllowance(settings.WS_MESSAGES_PER_SECOND, settings.WS_MESSAGE_BURST)
        self.operations = {"subscribe": self.subscribe, "unsubscribe": self.unsubscribe, "auth": self.authenticate,
                           "ping": self.ping}
        if self.socket is not None:
            refuse_oversized_with_a_close(self.socket, MAX_FRAME_BYTES)
        self.admitted_from: str | None = budget_address(self.address())
        if not hub_for(self.channel_layer).admit(self.admitted_from):
            self.admitted_from = None
            await self.accept()  # to say why: a refused handshake would tell the client nothing
            limit = settings.WS_CONNECTIONS_PER_ADDRESS
            await self.close_with_error(TOO_MANY_CONNECTIONS_CLOSE_CODE, RateLimited(
                f"At most {limit} connections from one address: close one before opening another.", None))
            return
        await self.accept()
        # Daphne's transport, when prepared frames can be written to it: the socket is open (Daphne's accept
        # completes the handshake) and compresses nothing, which a handshake settles for good.
        self.frames_transport = self.socket.transport if self.socket is not None and takes_frames(self.socket) else None
        if self.frames_transport is not None:
            notify_writes(self.frames_transport, self.release_direct)
            self.direct_socket = (self.frames_transport.socket.send, self.frames_transport.write)
        metrics.WS_CONNECTIONS_OPENED.inc()
        metrics.WS_CONNECTIONS.inc()
        self.counted = True  # in WS_CONNECTIONS, until the first disconnect (a close with an error is followed by another)
        logger.info("WebSocket connection from %s", self.address())
        hub_for(self.channel_layer).attach(self)  # its upkeep is the hub's until it signs in (StreamHub.keep_up)
        self.tasks.append(asyncio.create_task(self.write_outbox()))

    def uncount(self) -> None:
        """Out of this process's counts (its address's connections, WS_CONNECTIONS, the hub's list), once."""
        if getattr(self, "admitted_from", None) is not None:
            hub_for(self.channel_layer).release(self.admitted_from)
            self.admitted_from = None
        if getattr(self, "counted", False):
            self.counted = False
            metrics.WS_CONNECTIONS.dec()
        hub_for(self.channel_layer).detach(self)

    async def disconnect(self, code):
        logger.info("WebSocket connection closed (%s)", code)
        self.release_direct()  # nothing more written to it directly (a close with an error comes here first)
        self.uncount()
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for group in {self.group_for(channel) for channel in self.state.subscriptions}:
            await self.leave_group(group)
        for channel in self.state.subscriptions:
            metrics.WS_SUBSCRIPTIONS.labels(channel.name).dec()
        self.state.subscriptions.clear()

    async def join_group(self, group: str) -> None:
        if group.startswith("account."):
            await hub_for(self.channel_layer).start_once()
            await self.channel_layer.group_add(group, self.channel_name)
            await self.note_private_subscriber()
        else:
            await hub_for(self.channel_layer).join(group, self)

    async def leave_group(self, group: str) -> None:
        """Retried: when many clients leave at once the layer's connection pool can refuse, and a
        channel left in a group would keep being sent every delta until the group expires."""
        for attempt in range(5):
            try:
                if group.startswith("account."):
                    return await self.channel_layer.group_discard(group, self.channel_name)
                return await hub_for(self.channel_layer).leave(group, self)
            except Exception:
                if attempt == 4:
                    logger.warning("could not leave %s", group, exc_info=True)
                    return
                await asyncio.sleep(0.05 * 2**attempt)

    # -- client operations

    async def receive(self, text_data=None, bytes_data=None):
        op = None
        try:
            if wait := self.allowance.take():
                raise RateLimited(f"A connection sends at most {settings.WS_MESSAGES_PER_SECOND:g} messages a "
                                  f"second ({settings.WS_MESSAGE_BURST} at once); this one was not read.", wait)
            if text_data is None:
                raise InvalidRequest("Send JSON text frames.")
            # In UTF-8 bytes; a text with more characters than that is not encoded to know it.
            if (len(text_data) > MAX_MESSAGE_BYTES
                    or len(text_data.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES):
                raise MessageTooLarge(f"Messages are at most {MAX_MESSAGE_BYTES} bytes.")
            try:
                message = loads_strict(text_data)
            except StrictJSONError as error:
                raise InvalidRequest(str(error)) from None
            if not isinstance(message, dict):
                raise InvalidRequest('Send an object such as {"op": "ping"}.')
            op = message.get("op")
            if not isinstance(op, str) or op not in self.operations:
                op = op if isinstance(op, str | None) else None
                raise InvalidRequest(f"Unknown op {message.get('op')!r}; use one of {', '.join(self.operations)}.",
                                     op=op)
            await self.operations[op](message)
        except ExchangeError as error:
            if op == "auth" and error.code in metrics.AUTH_CODES:
                metrics.AUTH_REFUSALS.labels(error.code, "websocket").inc()
            await self.send_json(error_json(error, op))
        except Exception:
            # Never a dropped connection without a reason (SPEC section 7).
            logger.exception("WebSocket op %r failed", op)
            await self.send_json(error_json(InternalError(), op))

    async def ping(self, message):
        await self.send_json({"type": "pong"})

    async def authenticate(self, message):
        fields = {name: auth_field(message.get(name)) for name in ("key", "timestamp", "nonce", "signature")}
        if None in fields.values():
            raise AuthenticationFailed(ErrorCode.MISSING_AUTH_HEADERS,
                                       "auth needs key, timestamp, nonce and signature, each a string of printable "
                                       "characters with no surrounding whitespace.")
        verified = await database_sync_to_async(verify_signed_request)(SignedRequest(
            key_id=fields["key"], timestamp=fields["timestamp"], nonce=fields["nonce"], signature=fields["signature"],
            method="GET", path="/v1/ws", body=b"", address=self.address(),
        ))
        key = verified.key
        if self.state.account_id not in (None, key.account_id):
            raise InvalidRequest("This connection is already authenticated for another account.")
        public_only = self.state.account_id is None
        self.state.account_id, self.key_id = key.account_id, key.public_id
        if public_only:  # out of the hub's pass (StreamHub.public_only): more to watch, on a task of its own
            self.tasks.append(asyncio.create_task(self.send_heartbeats()))
        logger.info("WebSocket connection authenticated: account %s", key.account_id)
        await database_sync_to_async(record_key_use)(verified.cached)
        await self.send_json({"type": "authenticated", "scope": key.scope})

    async def subscribe(self, message):
        requested = self.parse_channels(message)
        since_sequences = {
            channel["pair"].upper(): check_sequence(channel["since_sequence"])
            for channel in message["channels"]
            if channel.get("name") == "orderbook" and "since_sequence" in channel
        }
        default_since = check_sequence(message.get("since_sequence"))
        if len(self.state.subscriptions | set(requested)) > MAX_SUBSCRIPTIONS:
            raise SubscriptionLimit(MAX_SUBSCRIPTIONS)
        for channel in requested:
            if channel.name in PRIVATE_CHANNELS and self.state.account_id is None:
                raise AuthenticationFailed(ErrorCode.AUTHENTICATION_REQUIRED,
                                           f"Send an auth op before subscribing to {channel.name}.")
        markets = {pair: await database_sync_to_async(access_market)(pair) for _, pair, _ in requested if pair}
        markets[None] = None
        for channel in requested:
            pair = markets[channel.pair].pair if channel.pair else None
            markets.setdefault(pair, markets.get(pair.upper()) if pair else None)
            channel = channel._replace(pair=pair)
            await self.join_group(self.group_for(channel))
            if channel not in self.state.subscriptions:
                metrics.WS_SUBSCRIPTIONS.labels(channel.name).inc()
            self.state.subscriptions.add(channel)
            await self.send_json(channel.described("subscribed"))
            await self.send_initial(channel, markets.get(pair), since_sequences.get(pair, default_since))

    async def unsubscribe(self, message):
        for channel in self.parse_channels(message):
            name, pair = channel.name, channel.pair
            if channel in self.state.subscriptions:
                metrics.WS_SUBSCRIPTIONS.labels(name).dec()
            self.state.subscriptions.discard(channel)
            if name == "orderbook":
                self.state.book_sequences.pop(pair, None)
                self.state.books_checked_at.pop(pair, None)
                self.state.book_markets.pop(pair, None)
            if name == "candles":
                self.state.candles_sent.pop((pair, channel.interval), None)
            group = self.group_for(channel)
            if not any(self.group_for(other) == group for other in self.state.subscriptions):
                await self.leave_group(group)
                if name in PRIVATE_CHANNELS:  # events are not received until the next subscription
                    self.state.account_events.reset()
            await self.send_json(channel.described("unsubscribed"))

    def parse_channels(self, message) -> list[Channel]:
        channels = message.get("channels")
        if not isinstance(channels, list) or not channels:
            raise InvalidRequest('"channels" must be a non-empty list of {"name": ..., "pair": ...}.')
        parsed = []
        for channel in channels:
            name = channel.get("name") if isinstance(channel, dict) else None
            if not isinstance(name, str) or name not in PUBLIC_CHANNELS | PRIVATE_CHANNELS:
                raise InvalidRequest(f"Unknown channel {name!r}.", channels=sorted(PUBLIC_CHANNELS | PRIVATE_CHANNELS))
            pair = channel.get("pair")
            if name in PUBLIC_CHANNELS and not isinstance(pair, str):
                raise InvalidRequest(f"The {name} channel needs a pair.")
            if name in PUBLIC_CHANNELS and not PAIR.fullmatch(pair):  # never looked up: "BTC\u0000", " BTC-USD"
                raise UnknownPair(pair)
            interval = channel.get("interval") if name == "candles" else None
            if name == "candles" and (not isinstance(interval, str) or interval not in INTERVALS):
                raise InvalidRequest(f"The candles channel needs an interval, one of {', '.join(INTERVALS)}.",
                                     intervals=list(INTERVALS))
            parsed.append(Channel(name, pair.upper() if name in PUBLIC_CHANNELS else None, interval))
        return list(dict.fromkeys(parsed))  # a channel named twice is one subscription: one ack, one snapshot

    def group_for(self, channel: Channel) -> str:
        if channel.name in PRIVATE_CHANNELS:
            return streams.account_group(self.state.account_id)
        if channel.name == "candles":
            return streams.candles_group(channel.pair, channel.interval)
        return {"orderbook": streams.book_group, "trades": streams.trades_group,
                "ticker": streams.ticker_group}[channel.name](channel.pair)

    def address(self) -> str:
        # Repeated X-Forwarded-For lines joined as one list, as Django's handlers give them to REST's check.
        forwarded = b",".join(value for name, value in self.scope.get("headers", []) if name == b"x-forwarded-for")
        meta = {"REMOTE_ADDR": (self.scope.get("client") or ("",))[0],
                "HTTP_X_FORWARDED_FOR": forwarded.decode("latin-1")}
        return client_address(meta)

    async def send_initial(self, channel: Channel, market, since_sequence: int | None) -> None:
        if channel.name == "orderbook":
            self.state.book_markets[market.pair] = (time.monotonic(), market)  # read just now (subscribe)
            await self.resynchronise(market, since_sequence)
        elif channel.name == "ticker":
            await self.send_json(await database_sync_to_async(streams.ticker_message)(market))
        elif channel.name == "candles":
            await self.send_latest_candle(market, channel.interval)
        elif channel.name == "balances":
            await self.send_balances()

    # -- the order book

    async def resynchronise(self, market, since_sequence: int | None, must_reach: int | None = None) -> None:
        """Catch up from ``since_sequence`` through the replay buffer (up to ``must_reach`` at least,
        when given), or send a fresh snapshot (see replay.deltas_since)."""
        def replay_since() -> list[dict] | None:
            return replay.deltas_since(market.pair, since_sequence, services.book_sequence(market), must_reach)

        missed = None
        if since_sequence is not None:
            missed = await database_sync_to_async(replay_since)()
        if missed is None:
            snapshot = await database_sync_to_async(streams.book_snapshot)(market)
            self.state.book_sent(market.pair, snapshot["sequence"], time.monotonic())
            await self.send_json(snapshot)
            return
        self.state.book_sent(market.pair, since_sequence, time.monotonic())
        for delta in missed:
            await self.forward_delta(delta)

    async def book_market(self, pair: str):
        """The market of a subscribed book, as read at most RECENT_MARKET_SECONDS ago (its grids format
        the snapshots of repairs): without a hop to the database thread on every heartbeat."""
        read_at, market = self.state.book_markets[pair]
        if time.monotonic() - read_at >= RECENT_MARKET_SECONDS:
            market = await database_sync_to_async(access_market)(pair, recent=True)
            self.state.book_markets[pair] = (time.monotonic(), market)
        return market

    def deltas_missing_before(self, event) -> int:
        """0 for the next delta to send; negative when it is not wanted (not subscribed, or already in
        the snapshot or replay sent); else how many deltas were lost before it."""
        sent = self.state.book_sequences.get(event["pair"])
        return -1 if sent is None else event["sequence"] - sent - 1

    async def book_delta(self, event):
        pair = event["pair"]
        missing = self.deltas_missing_before(event)
        if missing < 0:
            return
        if missing:
            market = await self.book_market(pair)
            await self.resynchronise(market, self.state.book_sequences[pair])
            if self.deltas_missing_before(event) > 0:
                await self.resynchronise(market, None)  # the buffer could not fill the gap either
            if self.deltas_missing_before(event) != 0:
                return  # in the snapshot already (or, impossibly, still ahead: the next delta will tell)
        await self.forward_delta(event)

    async def forward_delta(self, event) -> None:
        self.state.book_sent(event["pair"], event["sequence"], time.monotonic())
        await self.send_text(event["text"])

    # -- relayed public messages written straight to the socket

    def relay(self, message) -> None:
        """Called by this process's hub (marketdata.hub) for each message of a public group joined, except
        while the connection is in the group's direct writes (hub.Group: it took the group's last message at
        once and has done nothing since).

        When nothing of this connection's is being handled or waiting, the message is in order and
        the client keeps up, the frame the hub built goes straight to Daphne's socket: no task switch,
        no encoding per connection. Anything else (a delta after a gap, a snapshot being read, a
        backed-up outbox, another server than Daphne) is queued and handled in order by the handlers
        below, one message at a time with the connection's others.
        """
        if self.busy or self.queued_streams or not self.write_now(message):
            if self.queued_streams >= MAX_QUEUED_STREAM_MESSAGES:
                # Its handlers cannot keep up (each waits its turn for the database thread): a slow
                # consumer like one that does not read, cut off rather than queued for without bound.
                if not self.closing:
                    self.closing = True
                    asyncio.create_task(self.close_slow_consumer(
                        f"slow consumer: more than {MAX_QUEUED_STREAM_MESSAGES} messages waiting to be handled",
                        {"limit_messages": MAX_QUEUED_STREAM_MESSAGES}))
                return
            self.queue_stream(message)

    def write_now(self, message) -> bool:
        """The checks of can_send_now and write_frame inlined, and reading as few of autobahn's and Twisted's
        objects as they can (their large attribute tables, one connection after another, cost more than the
        checks). A message that can go at once is left to the hub to write, with the others that can."""
        transport = self.frames_transport
        if transport is None or self.closing or self.outbox or self.writing or self.socket.state != STATE_OPEN:
            return False
        held = transport.dataBuffer or transport._tempDataLen  # both empty: Twisted holds nothing for the socket
        if held and pending_output_bytes(self.socket) > self.low_water:
            return False
        if message["type"] == "book.delta":
            sent = self.state.book_sequences.get(message["pair"])
            if sent is None or message["sequence"] != sent + 1:
                # not wanted, or already in the snapshot or replay sent: done with it; a gap: the handler resynchronises
                return sent is None or message["sequence"] <= sent
            self.state.book_sent(message["pair"], message["sequence"], message["relayed_at"])
        elif message["type"] == "market.candle" and not self.candle_is_new(message):
            return True  # done with it
        self.state.last_sent = message["relayed_at"]
        if message["due"] is None and not held:
            message["at_once"].append(self)  # the hub writes it (and may keep writing it directly: hub.Group)
            return True
        message["written"] += 1
        if message["due"] is None:
            transport.write(message["frame"])  # behind what Twisted holds
        else:  # one of several messages read together: written with the others after the last
            if not self.frames:
                message["due"].append(self)
            self.frames.append(message["frame"])
        return True

    def release_direct(self) -> None:
        """Out of every group's direct writes (hub.Group): before this connection handles or queues a
        message, or Twisted is handed anything for its socket (notify_writes), or it closes."""
        for group in self.direct_in:
            group.release(self)
        self.direct_in = []

    def caught_up(self, relayed_at: float, pair: str | None, sequence: int | None) -> None:
        """What a group wrote directly, noted: when, and the book's last sequence."""
        self.state.last_sent = max(self.state.last_sent, relayed_at)
        if sequence is not None and pair in self.state.book_sequences:
            self.state.book_sent(pair, sequence, relayed_at)

    def note_direct_writes(self) -> None:
        """What the groups wrote directly noted, the connection staying in their direct writes."""
        for group in self.direct_in:
            group.note_sent(self)

    def flush_frames(self) -> None:
        """The frames of several messages the hub read together, in one write."""
        frames, self.frames = b"".join(self.frames), []
        write_frame(self.frames_transport, self.direct_socket, frames)

    # -- other public channels

    def follows(self, group: str) -> bool:
        """Whether a subscription of the connection's is to ``group``: a message queued while the connection was
        busy (an unsubscribe waiting for the hub) can reach it after the client was told it had left."""
        return any(self.group_for(channel) == group for channel in self.state.subscriptions)

    async def market_trades(self, event):
        if self.follows(event["group"]):
            for text in event["texts"]:
                await self.send_text(text)

    async def market_ticker(self, event):
        if self.follows(event["group"]):
            await self.send_text(event["text"])

    # -- candles

    def candle_is_new(self, event) -> bool:
        """Whether a candle message is ahead of what the subscription was sent (a later candle, more of
        its trades, or its close), and if so, it is noted as sent. One published before the candle sent
        on subscribe was read, and delivered after it, is not."""
        key = (event["pair"], event["interval"])
        if key not in self.state.candles_sent or event["key"] <= self.state.candles_sent[key]:
            return False
        self.state.candles_sent[key] = event["key"]
        return True

    async def market_candle(self, event):
        if self.candle_is_new(event):
            await self.send_text(event["text"])

    async def send_latest_candle(self, market, interval: str) -> None:
        """On subscribe (and after an outage): the pair's latest candle of the interval, if it has one,
        closed when its interval is over, unless the connection was sent it already (a subscribe again)."""
        key = (market.pair, interval)
        self.state.candles_sent.setdefault(key, [])  # until one is sent, every candle is ahead
        candle = await database_sync_to_async(latest_candle)(market, interval)
        if candle is None:
            return
        message = streams.candle_message(market, interval, candle,
                                         closed=candle.is_closed(interval, to_milliseconds(timezone.now())))
        if message["key"] > self.state.candles_sent[key]:
            self.state.candles_sent[key] = message["key"]
            await self.send_text(message["text"])

    # -- private channels

    async def account_changes(self, event):
        subscribed = {channel.name for channel in self.state.subscriptions if channel.name in PRIVATE_CHANNELS}
        if not subscribed:  # read after an unsubscribe: not followed, or the next subscription would count a gap
            return
        # A publisher of the previous release (a rolling deploy) does not number its events, nor does one
        # whose numbering failed (trading.backends.event_numbers).
        if "event" in event and self.state.account_events.repeats(event["event"]):
            return
        restarted = self.state.account_events.receive(event["event"]) if "event" in event else None
        try:
            await self.send_account_changes(event, subscribed, restarted)
        finally:
            self.state.account_events.handled(time.monotonic())

    async def send_account_changes(self, event: dict, subscribed: set[str], restarted: dict | None) -> None:
        if restarted:
            await self.events_lost({"details": restarted})
        # Rendered once by the publisher for every connection of the account, else read here.
        rendered = event.get("rendered")
        if rendered is None and (event["orders"] or event["fills"]):
            await self.note_private_subscriber()
        if "orders" in subscribed and event["orders"]:
            orders = (rendered["orders"] if rendered is not None else
                      await database_sync_to_async(self.read_orders)(event["orders"]))
            await self.send_private({"type": "orders", "channel": "orders", "orders": orders})
        if "fills" in subscribed and event["fills"]:
            fills = (rendered["fills"] if rendered is not None else
                     await database_sync_to_async(self.read_fills)(event["fills"]))
            await self.send_private({"type": "fills", "channel": "fills", "fills": fills})
        if "balances" in subscribed:
            await self.send_balances()

    async def events_lost(self, message) -> None:
        """Account events the channel layer dropped (marketdata.account_events): the client is told to
        reconcile from REST, and the stream carries on."""
        await self.send_json(error_json(PrivateEventsLost(**message["details"])))

    async def send_private(self, message: dict) -> None:
        """A private message, with the connection's count of them as ``seq``."""
        self.state.private_sent += 1
        await self.send_json({**message, "seq": self.state.private_sent})

    def read_orders(self, order_ids: list[int]) -> list[dict]:
        return render_orders(order_ids, self.state.account_id)

    def read_fills(self, fill_ids: list[int]) -> list[dict]:
        return render_fills(fill_ids, self.state.account_id)

    async def note_private_subscriber(self) -> None:
        """Have the publisher render this account's changes once for all its connections (a Redis write:
        off the event loop)."""
        try:
            await asyncio.to_thread(bus().note_private_subscriber, self.state.account_id)
        except Exception:  # the connection reads its events itself meanwhile
            logger.warning("could not note a private subscriber", exc_info=True)

    async def send_balances(self) -> None:
        def read():
            return AssetBalanceSerializer(account_balances(self.state.account_id), many=True).data

        balances = await database_sync_to_async(read)()
        await self.send_private({"type": "balances", "channel": "balances", "balances": balances})

    # -- health of the stream
    #
    # Daphne accepts whatever is sent and buffers it without bound when a client stops reading. So
    # messages wait in this connection's outbox and are handed to Daphne only while its buffer for
    # the socket is below WS_WRITE_LOW_WATER_BYTES; when the outbox passes WS_MAX_PENDING_BYTES the
    # client is too slow to keep up: the outbox is dropped and the error and the close frame go out
    # behind at most the low-water mark, so a client that reads again learns why it was cut off.
    # The matcher and the other connections never wait for this one (the channel layer drops what a
    # full channel cannot take, and the sequence gap that leaves is repaired by resynchronising).

    async def send_json(self, content: dict) -> None:
        await self.send_text(json.dumps(content))

    async def send(self, text_data=None, bytes_data=None, close=False):
        """Every text message written to the client but the frames the hub wrote at once (it counts those)."""
        if text_data is not None:
            metrics.WS_MESSAGES_SENT.inc()
        await super().send(text_data, bytes_data, close)

    async def send_text(self, text: str) -> None:
        if self.closing:
            return
        self.state.last_sent = time.monotonic()
        if self.can_send_now():
            return await self.send(text_data=text)  # nothing waiting: no need to queue
        self.outbox.append(text)
        self.outbox_bytes += len(text)
        if self.outbox_bytes > settings.WS_MAX_PENDING_BYTES:
            await self.close_slow_consumer()
        else:
            self.outbox_ready.set()

    def can_send_now(self) -> bool:
        """Open, nothing in the outbox ahead, and Daphne's buffer for the socket below the low-water mark."""
        if self.closing or self.outbox or self.writing:
            return False
        pending = pending_output_bytes(self.socket)
        return pending is None or pending <= self.low_water

    async def write_outbox(self) -> None:
        while True:
            await self.outbox_ready.wait()
            self.outbox_ready.clear()
            while self.outbox and not self.closing:
                pending = pending_output_bytes(self.socket)
                if pending is not None and pending > self.low_water:
                    await asyncio.sleep(0.005)
                    continue
                text = self.outbox.popleft()
                self.outbox_bytes -= len(text)
                self.writing = True
                try:
                    await self.send(text_data=text)
                finally:
                    self.writing = False

    async def close_slow_consumer(self, reason: str | None = None, details: dict | None = None) -> None:
        """Disconnect, with the reason, rather than buffer without bound or hold up the group."""
        if reason is None:
            reason = f"slow consumer: more than {settings.WS_MAX_PENDING_BYTES} bytes waiting to be read"
            details = {"limit": settings.WS_MAX_PENDING_BYTES}
        metrics.WS_SLOW_CONSUMERS.inc()
        await self.close_with_error(SLOW_CONSUMER_CLOSE_CODE, SlowConsumer(reason, **details))

    async def close_with_error(self, close_code: int, error: ExchangeError, op: str | None = None) -> None:
        """Nothing more is queued, the error goes out behind what the client has not read yet, then
        the close frame with the error's message as its reason; the connection is kept until the
        client has read both and answered the close, or for CLOSE_GRACE_SECONDS."""
        self.closing = True
        self.outbox.clear()
        await self.disconnect(close_code)  # leave every group
        await self.send(text_data=json.dumps(error_json(error, op)))
        if self.socket is not None:
            close_when_read(self.socket, close_code, error.message, CLOSE_GRACE_SECONDS)
        else:
            await self.close(code=close_code, reason=error.message)

    async def send_heartbeats(self) -> None:
        """A signed-in connection's upkeep, every quarter heartbeat interval: a heartbeat when quiet
        (keep_up), lost private events announced, and now and then the key checked again and the account
        group renewed. A failed step is logged and tried again at its next turn: this task must outlive
        a database or Redis blip."""
        interval = settings.WS_HEARTBEAT_SECONDS
        key_checked = renewed = time.monotonic()
        while True:
            await asyncio.sleep(interval / 4)
            now = time.monotonic()
            self.keep_up(now, interval)
            for lost in self.state.account_events.overdue(now):  # sent in order with the stream
                self.queue_stream({"type": "stream.events_lost", "details": lost})
            try:
                if self.key_id is not None and now - key_checked >= KEY_RECHECK_SECONDS:
                    key_checked = now
                    await self.recheck_key()
                if self.state.account_id is not None and now - renewed >= GROUP_REFRESH_SECONDS:
                    renewed = now
                    if any(channel.name in PRIVATE_CHANNELS for channel in self.state.subscriptions):
                        await self.channel_layer.group_add(streams.account_group(self.state.account_id),
                                                           self.channel_name)
            except Exception:
                logger.exception("WebSocket upkeep failed; retrying at its next turn")

    def keep_up(self, now: float, interval: float) -> None:
        """A heartbeat, handled in order with the stream, when nothing was sent for ``interval``, or one of
        the books was not (its last delta may have been lost: the heartbeat repairs it, whatever the other
        streams send); what the groups wrote directly noted first."""
        self.note_direct_writes()
        if now - self.state.last_sent >= interval or self.state.a_book_quiet_since(now - interval):
            self.queue_heartbeat()

    def queue_heartbeat(self) -> None:
        if not self.heartbeat_queued:
            self.heartbeat_queued = True
            self.queue_stream({"type": "stream.heartbeat"})

    def stream_interrupted(self) -> None:
        """Called by the hub when the channel layer fails: the client hears of it at once."""
        self.queue_heartbeat()

    def stream_resumed(self) -> None:
        """Called by the hub once it has joined its groups again (handled in order: resume)."""
        self.resume_due = True
        self.queue_stream({"type": "stream.resumed"})

    def queue_stream(self, message: dict) -> None:
        """Handled in order after what is queued already, and before any public message relayed after it."""
        self.release_direct()
        self.queued_streams += 1
        self.stream_queue.put_nowait(message)

    async def resume(self, message) -> None:
        """After a channel-layer outage: the account group joined again (the layer may have forgotten
        it), each book caught up from where this connection left it (replayed, or a snapshot), each
        ticker and latest candle sent afresh, then a heartbeat that is no longer degraded. Private events
        published meanwhile failed before they were numbered, so no gap would show them: the client is
        told to reconcile, and the numbering is followed afresh (Redis may have lost its counters).
        When the account group cannot be joined again, the heartbeat stays degraded and the whole resume
        is tried again after RESUME_RETRY_SECONDS: until then the account's events do not reach it."""
        rejoined = True
        try:
            if any(channel.name in PRIVATE_CHANNELS for channel in self.state.subscriptions):
                rejoined = False
                await layer_call(self.channel_layer.group_add, streams.account_group(self.state.account_id),
                                 self.channel_name)
                rejoined = True
                self.state.account_events.reset()
                await self.events_lost({"details": {"reason": "the stream was interrupted"}})
            for pair, sent in list(self.state.book_sequences.items()):
                await self.resynchronise(await self.book_market(pair), sent)
            self.state.candles_sent = {key: [] for key in self.state.candles_sent}  # the latest is sent afresh
            for channel in list(self.state.subscriptions):
                if channel.name in ("ticker", "candles"):
                    await self.send_initial(channel, await database_sync_to_async(access_market)(channel.pair), None)
        except Exception:  # the layer or the database failed again: the heartbeat below checks the books anew
            logger.exception("resuming a connection's streams failed")
        if rejoined:
            self.resume_due = False
        else:
            self.tasks.append(asyncio.create_task(self.resume_later()))
        await self.heartbeat(message)

    async def resume_later(self) -> None:
        await asyncio.sleep(RESUME_RETRY_SECONDS)
        self.stream_resumed()

    async def heartbeat(self, message) -> None:
        """The last sequence of each subscribed book. One this connection has not reached (a delta
        lost on the way, the last before a quiet spell) is repaired first, so a heartbeat never
        claims a sequence the client was not sent. While the channel layer is down (degraded), the
        repair waits for the hub's resume: it needs the layer's replay buffer; and a heartbeat queued
        before the connection's own resume stays degraded, since its account group may not be joined
        again yet (events published meanwhile would not reach it)."""
        self.heartbeat_queued = False
        checked_at = time.monotonic()
        for pair in self.state.books_checked_at:
            self.state.books_checked_at[pair] = checked_at
        hub = hub_for(self.channel_layer)
        if hub.interrupted or self.resume_due:
            return await self.send_json({"type": "heartbeat", "sequences": dict(self.state.book_sequences),
                                         "degraded": True})
        for pair, sent in list(self.state.book_sequences.items()):
            try:
                market = await self.book_market(pair)
                latest = await hub.latest_sequence(market)
                if latest > sent:
                    await self.resynchronise(market, sent, must_reach=latest)
            except Exception:  # the heartbeat goes out anyway; the check is made again at the next one
                logger.exception("checking %s before a heartbeat failed", pair)
        await self.send_json({"type": "heartbeat", "sequences": dict(self.state.book_sequences), "degraded": False})

    async def recheck_key(self) -> None:
        """A key revoked, or its user deactivated, or the address taken off its allowlist after the
        ``auth`` ends the connection's private streams: the client is told why, then disconnected
        (as a slow consumer is: nothing more queued, the error sent before the close)."""
        try:
            await database_sync_to_async(check_session_key)(self.key_id, self.address())
        except ExchangeError as error:
            self.key_id = None
            await self.close_with_error(KEY_REFUSED_CLOSE_CODE, error, op="auth")
