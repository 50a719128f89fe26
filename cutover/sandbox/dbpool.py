"""A gateway task's database connection pool, as a model: `DATABASE_POOL_SIZE` connections, each
served request holding one for a fixed time, first come first served.

R20's ship log names the binding constraint: DB connection pool exhaustion (pool 50 per task, 2
tasks, ~3-4 RPS sustained, p95 at the timeout, most requests timing out before they reached a
provider). What makes that a ceiling is Little's law: a task serves at most `size / hold`
requests per second; beyond that, requests queue for a connection, the queue's wait grows, and a
request that cannot finish within the gateway's request timeout is answered 504 at the timeout.

The model (one instance per task; off unless the world is asked for it):

  arrive   join a FIFO queue for a connection (or take a free one at once)
  wait     until a connection is handed over or the request timeout passes: no connection in
           time -> 504 at the timeout
  hold     the connection for `hold` seconds, then answer; if the timeout comes first the
           gateway gives up at the timeout (504) and the connection is released then

It is a rehearsal of the mechanism, not a measurement of production: one fixed hold time, no
provider latency spread, no pool-acquire timeout shorter than the request timeout, no health
checks failing a busy task (see docs/load-test/README.md).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolModel:
    size: int        # DATABASE_POOL_SIZE (config database.pool_size)
    hold: float      # seconds each served request holds its connection
    timeout: float   # the gateway's request timeout (config service.request_timeout)

    def __post_init__(self) -> None:
        if self.size < 1 or self.hold < 0 or self.timeout <= 0:
            raise ValueError(f"pool model needs size >= 1, hold >= 0, timeout > 0 (got {self})")

    @property
    def ceiling_rps(self) -> float:
        """Requests per second one task can serve at most (Little's law)."""
        return float("inf") if self.hold == 0 else self.size / self.hold


class DbPool:
    """One task's pool. `serve()` blocks like a request that needs a connection and says whether
    it was answered within the timeout. Thread-safe. `close()` (the task stops) ends every wait
    and hold at once, answered as timeouts, so nothing keeps a stopping world waiting."""

    def __init__(self, model: PoolModel) -> None:
        self.model = model
        self._clock = time.monotonic
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._free = model.size
        self._waiters: deque[threading.Event] = deque()
        self.served = 0
        self.timed_out_waiting = 0   # no connection within the timeout
        self.timed_out_holding = 0   # got one too late to finish within the timeout
        self.max_waiting = 0
        self.max_wait = 0.0

    @property
    def in_use(self) -> int:
        with self._lock:
            return self.model.size - self._free

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)

    def _acquire(self, deadline: float) -> bool:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            handed = threading.Event()
            self._waiters.append(handed)
            self.max_waiting = max(self.max_waiting, len(self._waiters))
        if handed.wait(max(deadline - self._clock(), 0)):
            return not self._closed.is_set()  # set by close(): woken, not handed a connection
        with self._lock:
            if handed.is_set():  # handed over just as the wait ran out: it is ours
                return not self._closed.is_set()
            self._waiters.remove(handed)
            return False

    def _release(self) -> None:
        with self._lock:
            if self._waiters and not self._closed.is_set():
                self._waiters.popleft().set()  # hand the connection to the longest waiter
            else:
                self._free += 1

    def serve(self) -> bool:
        """Wait for a connection, hold it, release it. True: answered within the timeout."""
        start = self._clock()
        deadline = start + self.model.timeout
        if not self._acquire(deadline):
            with self._lock:
                self.timed_out_waiting += 1
                self.max_wait = max(self.max_wait, self._clock() - start)
            return False
        try:
            now = self._clock()
            with self._lock:
                self.max_wait = max(self.max_wait, now - start)
            if now + self.model.hold <= deadline:
                if self._closed.wait(self.model.hold):
                    return False
                with self._lock:
                    self.served += 1
                return True
            self._closed.wait(max(deadline - now, 0))  # the gateway gives up at its timeout
            with self._lock:
                self.timed_out_holding += 1
            return False
        finally:
            self._release()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for handed in self._waiters:
                handed.set()
            self._waiters.clear()

    def stats(self) -> dict[str, float | int]:
        with self._lock:
            return {"size": self.model.size, "hold_seconds": self.model.hold, "timeout_seconds": self.model.timeout,
                    "served": self.served, "timed_out_waiting": self.timed_out_waiting,
                    "timed_out_holding": self.timed_out_holding, "max_waiting": self.max_waiting,
                    "max_wait_seconds": round(self.max_wait, 3), "in_use": self.model.size - self._free,
                    "waiting": len(self._waiters)}
