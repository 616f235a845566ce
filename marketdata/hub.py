"""One relay per server process for the public streams.

With a channel per connection, the channel layer stores, sends and decodes every delta once per
subscriber. Instead, each process (each event loop) joins a public group once, on its own channel,
and hands each message to its local connections subscribed to that group. The message's WebSocket
frames are built here, once per process, as one string of bytes, so a connection that can take the
message at once has it written straight to its socket in one call; the others handle it in order with the rest of their messages (see
consumers.StreamConsumer.relay). A connection that took a message at once and has done nothing since
takes the group's next message, if it follows on, with no check of its own (Group.direct).

The channel layer can lose its groups (a Redis restart or flush) or be unreachable for a while. Each
hub sends a probe every PROBE_SECONDS to a group only its own channel belongs to: when a probe fails
or does not come back, the stream is interrupted (the process's connections send heartbeats marked
degraded) until every group is joined again; then each connection repairs what it may have missed.
"""

import asyncio
import logging
import time
import uuid
import weakref
from collections import Counter

import redis
from channels.db import database_sync_to_async
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from exchange import metrics
from marketdata import services
from marketdata.transport import prepare, write_at_once
from trading.backends import bus

logger = logging.getLogger(__name__)

# Channel layers drop a group member group_expiry (a day) after it joined: members re-join hourly.
GROUP_REFRESH_SECONDS = 3600
PROBE_SECONDS = 1.0
# Messages a connection can be written by its group's direct writes: each is the same for every connection
# that took the group's previous message at once (a candle is not: each connection notes its own).
DIRECT_TYPES = frozenset({"book.delta", "market.trades", "market.ticker"})
# A probe not back after this many more have been sent means the groups were lost. Generous: a probe
# waits behind the stream's own messages in the process's channel.
PROBE_TURNS = 3
LAYER_CALL_SECONDS = 2.0  # a layer call taking longer counts as a failure (an unreachable Redis)
RECEIVE_RETRY_SECONDS = 0.5

_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub]" = weakref.WeakKeyDictionary()


class Group:
    """A public group's connections in this process.

    Those in ``slow`` are each given every message (their ``relay``), and check it against what they were
    sent and what they hold. Those in ``direct`` took the group's last message at once and have done
    nothing since (handled no message, queued none, had nothing handed to Twisted: they leave the set
    first, ``release_direct``), so the next message, if it follows on, is written to their sockets with
    no check of theirs, and what they were sent is noted on them only when they leave the set
    (``caught_up``). Per message and connection that reads only the socket's own object: on a busy
    machine, autobahn's protocol, Twisted's transport and the consumer, read one connection after
    another, cost more than the checks (docs/performance.md, "WebSocket fan-out").
    """

    def __init__(self):
        self.slow: set = set()
        self.direct: dict = {}  # member -> (its socket's send, its transport's write)
        self.relayed_at = 0.0  # the last message's
        self.pair: str | None = None  # of the last book delta
        self.sequence: int | None = None

    def __bool__(self) -> bool:
        return bool(self.slow or self.direct)

    def follows_on(self, message: dict) -> bool:
        """Whether every direct member can be written ``message`` (one of DIRECT_TYPES) as it was the last one:
        a book delta must be the next in sequence."""
        return message["type"] != "book.delta" or (self.sequence is not None
                                                     and message["sequence"] == self.sequence + 1)

    def admit(self, member) -> None:
        self.slow.discard(member)
        self.direct[member] = member.direct_socket
        member.direct_in.append(self)

    def release(self, member) -> None:
        """``member`` leaves the direct set, knowing what it was written meanwhile."""
        del self.direct[member]
        self.slow.add(member)
        self.note_sent(member)

    def note_sent(self, member) -> None:
        member.caught_up(self.relayed_at, self.pair, self.sequence)

    def release_all(self) -> None:
        for member in list(self.direct):
            member.release_direct()


class StreamHub:
    def __init__(self, layer):
        self.layer = layer
        self.channel: str | None = None
        self.groups: dict[str, Group] = {}  # consumers (anything with relay(message)) of each public group joined
        self.relay_task: asyncio.Task | None = None
        self.reader: RedisReader | None = None
        self.refresh_task: asyncio.Task | None = None
        self.lock = asyncio.Lock()
        self.relayed: dict[str, int] = {}  # pair -> highest delta sequence relayed
        self.committed: dict[str, tuple[float, int]] = {}  # pair -> (when read, committed sequence)
        self.reading: dict[str, asyncio.Task] = {}  # pair -> the read of its committed sequence under way
        # Every local connection (public streams or not), told when the stream is interrupted and back.
        self.connections: weakref.WeakSet = weakref.WeakSet()
        self.open_per_address: Counter[str] = Counter()  # WS_CONNECTIONS_PER_ADDRESS, in this process
        self.upkeep_task: asyncio.Task | None = None
        self.probe_group = f"stream-probe.{uuid.uuid4().hex}"
        self.probes_sent = self.probes_back = 0
        self.interrupted = False
        self.watch_task: asyncio.Task | None = None
        self.leaving: set[asyncio.Task] = set()  # forget's leaves of emptied groups, kept until done

    async def start(self) -> None:
        if self.channel is None:
            # A name of its own before the "!": channels_redis keeps one sorted set per such name, so this
            # one holds this hub's messages only (not those of the process's connections' own channels)
            # and is read by the hub alone (RedisReader).
            self.channel = await self.layer.new_channel(prefix=f"hub.{uuid.uuid4().hex[:12]}")
            self.reader = RedisReader(self.layer, self.channel) if isinstance(self.layer, RedisChannelLayer) else None
            self.relay_task = asyncio.create_task(self.relay())
            self.refresh_task = asyncio.create_task(self.refresh_groups())
            self.watch_task = asyncio.create_task(self.watch())

    async def start_once(self) -> None:
        """For a connection with private channels only: the probe tells it of an outage too, and its
        resume re-joins its account group."""
        async with self.lock:
            await self.start()

    def admit(self, address: str) -> bool:
        """Count one more connection from ``address``, unless it holds its WS_CONNECTIONS_PER_ADDRESS already."""
        limit = settings.WS_CONNECTIONS_PER_ADDRESS
        if limit and self.open_per_address[address] >= limit:
            return False
        self.open_per_address[address] += 1
        return True

    def release(self, address: str) -> None:
        """One connection ``admit`` counted has closed."""
        self.open_per_address[address] -= 1
        if not self.open_per_address[address]:
            del self.open_per_address[address]

    def attach(self, connection) -> None:
        self.connections.add(connection)
        if self.upkeep_task is None:
            self.upkeep_task = asyncio.create_task(self.keep_up())

    def detach(self, connection) -> None:
        self.connections.discard(connection)

    @property
    def public_only(self) -> list:
        """The connections not signed in, whose upkeep is this hub's pass (keep_up); one that signs in keeps
        itself up from then on (consumers.StreamConsumer.send_heartbeats)."""
        return [connection for connection in self.connections if connection.state.account_id is None]

    async def keep_up(self) -> None:
        """One pass over the connections with public streams only every quarter heartbeat interval, each
        sent a heartbeat if quiet for an interval: a timer per connection was half of Daphne's CPU with
        quiet connections (docs/performance.md)."""
        while True:
            interval = settings.WS_HEARTBEAT_SECONDS
            await asyncio.sleep(interval / 4)
            now = time.monotonic()
            for connection in self.public_only:
                try:
                    connection.keep_up(now, interval)
                except Exception:  # one connection's failure must not stop the others' heartbeats
                    logger.exception("a connection's upkeep failed")

    async def join(self, group: str, member) -> None:
        async with self.lock:
            await self.start()
            if group not in self.groups:
                await self.layer.group_add(group, self.channel)
                self.groups[group] = Group()
            self.groups[group].slow.add(member)

    async def leave(self, group: str, member) -> None:
        async with self.lock:
            members = self.groups.get(group)
            if members is None:
                return
            if member in members.direct:
                member.release_direct()
            members.slow.discard(member)
            if not members and self.channel is not None:
                del self.groups[group]
                await self.layer.group_discard(group, self.channel)

    def forget(self, member) -> None:
        """``member`` out of every group at once, without awaiting: a consumer cancelled (Daphne ends one
        still running after its client has gone) runs no disconnect, and would otherwise be relayed every
        message of its groups for good. The groups it leaves empty are left at the layer in a task."""
        member.release_direct()
        emptied = []
        for name, members in self.groups.items():
            if member in members.slow:
                members.slow.discard(member)
                if not members:
                    emptied.append(name)
        if emptied:
            self.leaving.add(task := asyncio.get_running_loop().create_task(self.leave_if_empty(emptied)))
            task.add_done_callback(self.leaving.discard)

    async def leave_if_empty(self, names: list[str]) -> None:
        for name in names:
            try:
                async with self.lock:
                    if name in self.groups and not self.groups[name] and self.channel is not None:
                        del self.groups[name]
                        await self.layer.group_discard(name, self.channel)
            except Exception:  # the group expires at the layer in the end; until then its messages reach no one
                logger.warning("could not leave %s", name, exc_info=True)

    async def receive(self) -> list[dict]:
        """The next messages for this process's connections: at least one (from Redis, all those waiting)."""
        if self.reader is None:
            return [await self.layer.receive(self.channel)]
        return await self.reader.read()

    async def relay(self) -> None:
        while True:
            try:
                messages = await self.receive()
            except Exception as error:
                if asyncio.current_task().cancelling():
                    raise  # channels_redis can turn a cancellation into another error: it must still end this
                self.interrupt(f"the stream relay could not receive: {error!r}")
                await asyncio.sleep(RECEIVE_RETRY_SECONDS)
                continue
            end_if_cancelled()
            # Each connection is written once for all the messages read together: one send for several.
            due = [] if len(messages) > 1 else None
            for message in messages:
                self.relay_one(message, due)
            for member in due or ():
                member.flush_frames()

    def relay_one(self, message: dict, due: list | None) -> None:
        # Any message of a group shows this process's groups are still there: a probe dropped by a
        # full channel under load must not read as an outage.
        self.probes_back = self.probes_sent
        if message["type"] == "hub.probe":
            return
        if "sent_at" in message:
            metrics.WS_RELAY_LATENCY.observe(max(0.0, time.time() - message["sent_at"]))
        if message["type"] == "book.delta":
            self.relayed[message["pair"]] = max(self.relayed.get(message["pair"], 0), message["sequence"])
        members = self.groups.get(message.get("group"))
        if members is None:
            return
        texts = message["texts"] if "texts" in message else [message["text"]]
        message["frame"] = frame = prepare(texts)
        message["relayed_at"] = time.monotonic()
        message["written"] = 0  # connections given the frame by their own relay (the others are counted below)
        message["due"] = due  # None: written at once; else the connections given frames to write after the batch
        message["at_once"] = []  # members Twisted holds nothing for: the frame is sent to each after the loop
        direct = due is None and message["type"] in DIRECT_TYPES
        if members.direct and not (direct and members.follows_on(message)):
            members.release_all()
        for member in tuple(members.slow):
            try:
                member.relay(message)
            except Exception:  # one connection's failure must not stop the stream for the others
                logger.exception("relaying %s to a connection failed", message["type"])
        at_once = message["at_once"]
        if direct:
            for member in at_once:
                members.admit(member)
            at_once = []
        members.relayed_at = message["relayed_at"]
        if message["type"] == "book.delta":
            members.pair, members.sequence = message["pair"], message["sequence"]
        written = write_at_once([*members.direct.values(), *(member.direct_socket for member in at_once)], frame)
        metrics.WS_MESSAGES_SENT.inc((message["written"] + written) * len(texts))

    async def refresh_groups(self) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH_SECONDS)
            for group in [self.probe_group, *self.groups]:
                try:
                    await self.layer.group_add(group, self.channel)
                except Exception:
                    logger.exception("could not renew this process's membership of %s", group)

    async def watch(self) -> None:
        """The probe (see the module's docstring): a failed one interrupts the stream; once every group
        is joined again, the connections resume."""
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            if self.probes_back < self.probes_sent - PROBE_TURNS:
                self.interrupt("a probe did not come back: the channel layer lost this process's groups")
            try:
                if self.interrupted or not self.probes_sent:
                    async with self.lock:
                        for group in [self.probe_group, *self.groups]:
                            await layer_call(self.layer.group_add, group, self.channel)
                    self.probes_back = self.probes_sent
                    self.resume()
                self.probes_sent += 1
                probe = {"type": "hub.probe", "group": self.probe_group, "turn": self.probes_sent}
                await layer_call(self.layer.group_send, self.probe_group, probe)
            except Exception as error:
                if asyncio.current_task().cancelling():
                    raise
                self.interrupt(f"the channel layer failed: {error!r}")

    def interrupt(self, reason: str) -> None:
        if not self.interrupted:
            self.interrupted = True
            logger.warning("public streams interrupted: %s", reason)
            for connection in tuple(self.connections):
                connection.stream_interrupted()

    def resume(self) -> None:
        if self.interrupted:
            self.interrupted = False
            logger.warning("public streams resumed: every group joined again")
            for connection in tuple(self.connections):
                connection.stream_resumed()

    async def latest_sequence(self, market) -> int:
        """The pair's latest sequence as this process knows it: the highest relayed, or the committed
        one (read at most once per half heartbeat interval per pair, for every connection here: connections
        that subscribed together come to their heartbeats together, and share one read)."""
        read_at, committed = self.committed.get(market.pair, (float("-inf"), 0))
        if time.monotonic() - read_at > settings.WS_HEARTBEAT_SECONDS / 2:
            if market.pair not in self.reading:
                self.reading[market.pair] = asyncio.create_task(self.read_committed(market))
            committed = await asyncio.shield(self.reading[market.pair])  # a waiter cancelled leaves the read to the others
        return max(committed, self.relayed.get(market.pair, 0))

    async def read_committed(self, market) -> int:
        try:
            committed = await database_sync_to_async(services.book_sequence)(market)
        finally:
            del self.reading[market.pair]
        self.committed[market.pair] = (time.monotonic(), committed)
        return committed


async def layer_call(call, *args):
    """``call(*args)``, a failure after LAYER_CALL_SECONDS; a refused connection tried once more: after a
    Redis restart the first command on each pooled connection fails (the server closed it), which is no
    outage, and would interrupt the streams a second time once they had resumed."""
    try:
        return await asyncio.wait_for(call(*args), LAYER_CALL_SECONDS)
    except redis.exceptions.ConnectionError:
        return await asyncio.wait_for(call(*args), LAYER_CALL_SECONDS)


def end_if_cancelled() -> None:
    """A read that returned although its task was cancelled ends here: on Python 3.11 redis-py can lose a
    cancellation (see consumers.StreamConsumer.stop_reading), and a loop that reads again would never end."""
    if asyncio.current_task().cancelling():
        raise asyncio.CancelledError


class RedisReader:
    """Reads the hub's channel of a channels_redis layer itself: after each message (BZPOPMIN) whatever
    arrived meanwhile, in one ZPOPMIN. The layer's own receive takes one message a time through four
    round trips to Redis (a backup copy of each, for consumers that must not lose one), under a lock
    shared with every connection's channel of the process; a public message lost with its process
    (which takes its connections with it) needs no backup."""

    BATCH = 64

    def __init__(self, layer, channel: str):
        self.layer = layer
        local = layer.non_local_name(channel)
        self.key, self.index = layer.prefix + local, layer.consistent_hash(local)

    async def read(self) -> list[dict]:
        connection = self.layer.connection(self.index)
        popped = await connection.zpopmin(self.key, self.BATCH)
        while not popped:
            end_if_cancelled()
            found = await connection.bzpopmin(self.key, timeout=self.layer.brpop_timeout)
            popped = [found[1:]] if found is not None else []
        messages = []
        for member, _ in popped:
            message = self.layer.deserialize(member)
            message.pop("__asgi_channel__", None)
            messages.append(message)
        return messages


def hub_for(layer) -> StreamHub:
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = StreamHub(layer)
        bus().serve_on(loop)
    return _hubs[loop]
