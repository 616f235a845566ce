"""One relay per server process for the public streams.

With a channel per connection, the channel layer stores, sends and decodes every delta once per
subscriber. Instead, each process (each event loop) joins a public group once, on its own channel,
and hands each message to the queues of its local connections subscribed to that group. A
connection still handles its messages one at a time, in order (see consumers.StreamConsumer).
"""

import asyncio
import logging
import weakref
from collections import defaultdict

logger = logging.getLogger(__name__)

_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub]" = weakref.WeakKeyDictionary()


class StreamHub:
    def __init__(self, layer):
        self.layer = layer
        self.channel: str | None = None
        self.members: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self.relay_task: asyncio.Task | None = None
        self.lock = asyncio.Lock()

    async def join(self, group: str, queue: asyncio.Queue) -> None:
        async with self.lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
                self.relay_task = asyncio.create_task(self.relay())
            if not self.members[group]:
                await self.layer.group_add(group, self.channel)
            self.members[group].add(queue)

    async def leave(self, group: str, queue: asyncio.Queue) -> None:
        async with self.lock:
            self.members[group].discard(queue)
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
            for queue in tuple(self.members.get(message.get("group"), ())):
                queue.put_nowait(message)


def hub_for(layer) -> StreamHub:
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = StreamHub(layer)
    return _hubs[loop]
