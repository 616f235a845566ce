"""One relay per server process for the public streams.

With a channel per connection, the channel layer stores, sends and decodes every delta once per
subscriber. Instead, each process (each event loop) joins a public group once, on its own channel,
and hands each message to its local connections subscribed to that group. The message's WebSocket
frames are built here, once per process, so a connection that can take the message at once has it
written straight to its socket; the others handle it in order with the rest of their messages (see
consumers.StreamConsumer.relay).
"""

import asyncio
import logging
import time
import weakref
from collections import defaultdict

from channels.db import database_sync_to_async
from django.conf import settings

from marketdata import services
from marketdata.transport import prepare

logger = logging.getLogger(__name__)

# Channel layers drop a group member group_expiry (a day) after it joined: members re-join hourly.
GROUP_REFRESH_SECONDS = 3600

_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub]" = weakref.WeakKeyDictionary()


class StreamHub:
    def __init__(self, layer):
        self.layer = layer
        self.channel: str | None = None
        self.members: dict[str, set] = defaultdict(set)  # group -> consumers (anything with relay(message))
        self.relay_task: asyncio.Task | None = None
        self.refresh_task: asyncio.Task | None = None
        self.lock = asyncio.Lock()
        self.relayed: dict[str, int] = {}  # pair -> highest delta sequence relayed
        self.committed: dict[str, tuple[float, int]] = {}  # pair -> (when read, committed sequence)

    async def join(self, group: str, member) -> None:
        async with self.lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
                self.relay_task = asyncio.create_task(self.relay())
                self.refresh_task = asyncio.create_task(self.refresh_groups())
            if not self.members[group]:
                await self.layer.group_add(group, self.channel)
            self.members[group].add(member)

    async def leave(self, group: str, member) -> None:
        async with self.lock:
            self.members[group].discard(member)
            if not self.members[group] and self.channel is not None:
                del self.members[group]
                await self.layer.group_discard(group, self.channel)

    async def relay(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("stream relay could not receive; retrying")
                await asyncio.sleep(0.1)
                continue
            if message["type"] == "book.delta":
                self.relayed[message["pair"]] = max(self.relayed.get(message["pair"], 0), message["sequence"])
            texts = message["texts"] if "texts" in message else [message["text"]]
            message["frames"] = [prepare(text) for text in texts]
            for member in tuple(self.members.get(message.get("group"), ())):
                try:
                    member.relay(message)
                except Exception:  # one connection's failure must not stop the stream for the others
                    logger.exception("relaying %s to a connection failed", message["type"])

    async def refresh_groups(self) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH_SECONDS)
            for group in list(self.members):
                try:
                    await self.layer.group_add(group, self.channel)
                except Exception:
                    logger.exception("could not renew this process's membership of %s", group)

    async def latest_sequence(self, market) -> int:
        """The pair's latest sequence as this process knows it: the highest relayed, or the committed
        one (read at most once per half heartbeat interval per pair, for every connection here)."""
        read_at, committed = self.committed.get(market.pair, (float("-inf"), 0))
        if time.monotonic() - read_at > settings.WS_HEARTBEAT_SECONDS / 2:
            committed = await database_sync_to_async(services.book_sequence)(market)
            self.committed[market.pair] = (time.monotonic(), committed)
        return max(committed, self.relayed.get(market.pair, 0))


def serving_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop this process's WebSocket connections live on (the server's), if any has one."""
    return next((loop for loop in list(_hubs) if loop.is_running()), None)


def hub_for(layer) -> StreamHub:
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = StreamHub(layer)
    return _hubs[loop]
