"""Fan-out of one producer's updates to many HTTP clients, without ever waiting for them.

A :class:`Broadcaster` keeps, for each connected client, a short :class:`collections.deque`
(``maxlen`` items: a full queue drops its oldest update). :meth:`Broadcaster.publish` only appends
to those queues under a lock and returns, so a client that stalls or disappears costs the producer
(the demo loop, the training loop) nothing; each client is served by its own handler thread that
waits on its queue and writes with a socket timeout, and is dropped when a write fails or times
out. The number of clients is bounded: :meth:`Broadcaster.register` returns ``None`` when full.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Deque, List, Optional, Tuple

#: the most stream clients one server accepts at a time (Darknet's listen backlog is 10)
MAX_CLIENTS = 8
#: updates waiting per client; a slower client skips to the newest ones
QUEUE_LEN = 2


class ClientQueue:
    """One client's pending updates (newest last) and the condition its handler waits on."""

    def __init__(self, maxlen: int):
        self.items: Deque[bytes] = collections.deque(maxlen=maxlen)
        self.cond = threading.Condition()
        self.closed = False
        self.dropped = 0

    def put(self, item: bytes) -> None:
        with self.cond:
            if len(self.items) == self.items.maxlen:
                self.dropped += 1
            self.items.append(item)
            self.cond.notify()

    def get(self, timeout: float) -> Optional[bytes]:
        """The oldest pending update, or ``None`` after ``timeout`` seconds or once closed."""
        with self.cond:
            if not self.items and not self.closed:
                self.cond.wait(timeout)
            if self.closed or not self.items:
                return None
            return self.items.popleft()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class Broadcaster:
    """The latest update, and the queues of the clients that want every next one."""

    def __init__(self, max_clients: int = MAX_CLIENTS, queue_len: int = QUEUE_LEN):
        self.max_clients = max(1, int(max_clients))
        self.queue_len = max(1, int(queue_len))
        self._lock = threading.Lock()
        self._clients: List[ClientQueue] = []
        self.latest: Optional[bytes] = None
        self.published = 0
        self._pending: Optional[Tuple[Any, Callable[[Any], Optional[bytes]]]] = None

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def register(self, send_latest: bool = True) -> Optional[ClientQueue]:
        """A queue for a new client (primed with the latest update), or ``None`` when full."""
        q = ClientQueue(self.queue_len)
        with self._lock:
            if len(self._clients) >= self.max_clients:
                return None
            self._clients.append(q)
            if self.latest is None and self._pending is not None:
                obj, encode = self._pending
                self._pending = None
                self.latest = encode(obj)
            if send_latest and self.latest is not None:
                q.put(self.latest)
        return q

    def unregister(self, q: ClientQueue) -> None:
        q.close()
        with self._lock:
            if q in self._clients:
                self._clients.remove(q)

    def publish_lazy(self, obj: Any, encode: Callable[[Any], Optional[bytes]]) -> None:
        """``publish(encode(obj))``, except that with no client connected ``obj`` is only kept, and
        encoded when the first client connects before the next update (nobody watching costs no
        encoding). ``obj`` must not change after this call."""
        with self._lock:
            if not self._clients:
                self._pending = (obj, encode)
                self.latest = None
                self.published += 1
                return
            self._pending = None
        item = encode(obj)
        if item is not None:
            self.publish(item)

    def publish(self, item: bytes) -> None:
        with self._lock:
            self._pending = None
            self.latest = item
            self.published += 1
            clients = list(self._clients)
        for q in clients:
            q.put(item)

    def close_all(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for q in clients:
            q.close()
