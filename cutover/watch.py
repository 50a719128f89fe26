"""The watch: read the gateway's access log from the flip on, and tell a hurt caller from noise.

Incremental reading: CloudWatch filters by event timestamp, and an event can be ingested well
after its timestamp. So every poll re-reads `overlap` behind the cursor and drops event ids it
has already seen: a late event whose timestamp falls behind the cursor (but inside the overlap)
is still caught exactly once, and the cost stays proportional to the new events plus the
overlap, not to the whole window.

`EventSource` is the seam for a streaming reader (CloudWatch Logs Live Tail delivers events as
they are ingested): anything with `poll(now_ms) -> new events` can stand behind the `Watcher`,
with polling kept as the safety net.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from cutover.mtls import LEGITIMATE, PROBE_USER_AGENT, SENTINEL, AccessEvent, classify_403, parse_accesses
from envconfig import AccessLog

# Pre-filter for the 403 poll. Only a pre-filter: classify_403 decides.
WATCH_FILTER = '?"403" ?"/v1/agent/"'


class EventSource(Protocol):
    def poll(self, now_ms: int) -> list[dict]: ...


@dataclass
class LogCursor:
    read: Callable[[int, int], Iterator[dict]]  # (start_ms, end_ms) -> events
    start_ms: int
    overlap_ms: int
    cursor_ms: int = 0
    seen: dict[str, int] = field(default_factory=dict)  # event id -> timestamp

    def __post_init__(self) -> None:
        self.cursor_ms = self.cursor_ms or self.start_ms

    def poll(self, now_ms: int) -> list[dict]:
        lo = max(self.start_ms, self.cursor_ms - self.overlap_ms)
        fresh = []
        for ev in self.read(lo, now_ms):
            eid = ev.get("eventId") or f"{ev.get('logStreamName')}/{ev['timestamp']}/{hash(ev['message'])}"
            if eid in self.seen:
                continue
            self.seen[eid] = ev["timestamp"]
            fresh.append(ev)
        self.cursor_ms = max(self.cursor_ms, now_ms)
        # Forget ids that can no longer be re-read: keeps memory flat over a long window.
        floor = self.cursor_ms - self.overlap_ms
        if len(self.seen) > 4096:
            self.seen = {k: t for k, t in self.seen.items() if t >= floor}
        return fresh


@dataclass(frozen=True)
class Hit:
    """A legitimate caller's 403: the reason to roll back."""

    timestamp_ms: int
    caller: str
    route: str
    stream: str
    message: str


@dataclass
class WatchSummary:
    polls: int = 0
    events_read: int = 0
    mesh_write_requests: int = 0      # callers' requests to /v1/agent/* (the tool's own not included)
    authenticated_requests: int = 0   # ... that carried a caller: proof the caller field is read
    own_requests: int = 0             # probes and sentinel (any run)
    forbidden: dict[str, int] = field(default_factory=dict)  # 403 class -> count
    first_legitimate: Hit | None = None
    window: float = 0.0               # the counted window, seconds
    watched: float = 0.0              # seconds of the counted window actually watched
    cut_short: bool = False


class Watcher:
    """One watch for the whole run, from the flip: every loop of the run calls `poll`."""

    def __init__(self, source: EventSource, fields: AccessLog, *, run_id: str) -> None:
        self.source, self.fields, self.run_id = source, fields, run_id
        self.summary = WatchSummary()
        self.forbidden: Counter[str] = Counter()
        # This run's own lines, for the proofs: stream -> count of marked no-cert 403s; sentinel lines.
        self.own_403_streams: Counter[str] = Counter()
        self.sentinel_lines: list[tuple[str, AccessEvent]] = []

    def poll(self, now: float) -> Hit | None:
        """Read what is new; returns the first legitimate 403 among it, if any."""
        s = self.summary
        s.polls += 1
        hit = None
        for ev in self.source.poll(int(now * 1000)):
            s.events_read += 1
            for access in parse_accesses(ev["message"], self.fields):
                hit = self._count(ev, access, hit)
        s.forbidden = dict(self.forbidden)
        return hit

    def _count(self, ev: dict, access: AccessEvent, hit: Hit | None) -> Hit | None:
        s = self.summary
        if not access.mesh_write:
            return hit
        if access.marked:
            s.own_requests += 1
        else:
            s.mesh_write_requests += 1
            s.authenticated_requests += bool(access.caller)
        kind = classify_403(access)
        stream = ev.get("logStreamName", "")
        if access.marked and self._own(access):
            if access.sentinel:
                self.sentinel_lines.append((stream, access))
            elif access.status == 403:
                self.own_403_streams[stream] += 1
        if not kind:
            return hit
        self.forbidden[kind] += 1
        if kind == LEGITIMATE and hit is None:
            hit = Hit(ev["timestamp"], access.caller, access.route, stream, ev["message"][:300])
            if s.first_legitimate is None:
                s.first_legitimate = hit
        return hit

    def _own(self, access: AccessEvent) -> bool:
        """This run's request: its run header, or its user agent `brainstorm-cutover-probe/<run> ...`."""
        agent = access.user_agent.split()
        return access.marked and access.run_id == self.run_id and bool(agent) and \
            agent[0] == f"{PROBE_USER_AGENT}/{self.run_id}"

    def countdown(self, remaining: float) -> str:
        from envconfig import format_duration

        f, s = self.forbidden, self.summary
        return (f"watch: {format_duration(remaining)} left | mesh-write requests {s.mesh_write_requests} | 403s: "
                f"legitimate {f[LEGITIMATE]}, own {f['probe'] + f[SENTINEL]}, unauthenticated {f['unauthenticated']}")
