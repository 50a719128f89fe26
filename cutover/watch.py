"""Incremental log reading for the watch: each poll reads only what is new.

CloudWatch filters by event timestamp, and an event can be ingested well after its timestamp.
So every poll re-reads `overlap` seconds behind the cursor and drops event ids it has already
seen: a late event whose timestamp falls behind the cursor (but inside the overlap) is still
caught exactly once, and the cost stays proportional to the new events plus the overlap, not
to the whole window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cutover.mtls import LEGITIMATE, PROBE_USER_AGENT, AccessEvent, classify_403, parse_access
from envconfig import AccessLog

# Pre-filter for the 403 poll. Only a pre-filter: classify_403 decides.
WATCH_FILTER = '?"403" ?"/v1/agent/"'


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


@dataclass
class WatchTally:
    fields: AccessLog
    mesh_writes: int = 0      # callers' requests to /v1/agent/* (probes not included)
    probe_requests: int = 0
    authenticated: int = 0    # callers' mesh writes that carried a caller: proof the caller field is read
    forbidden: Counter[str] = field(default_factory=Counter)
    polls: int = 0
    events: int = 0
    first_legitimate: dict | None = None

    def add(self, ev: dict) -> str | None:
        """Count one raw log event; returns the 403 class if it is a mesh-write 403."""
        self.events += 1
        access: AccessEvent | None = parse_access(ev["message"], self.fields)
        if access is None or not access.mesh_write:
            return None
        if access.run_id or access.user_agent.startswith(PROBE_USER_AGENT):
            self.probe_requests += 1
        else:
            self.mesh_writes += 1
            self.authenticated += bool(access.caller)
        kind = classify_403(access)
        if kind:
            self.forbidden[kind] += 1
            if kind == LEGITIMATE and self.first_legitimate is None:
                self.first_legitimate = {"timestamp": ev["timestamp"], "caller": access.caller,
                                         "route": access.route, "message": ev["message"][:300]}
        return kind

    def summary(self) -> dict:
        return {"polls": self.polls, "events_read": self.events, "mesh_write_requests": self.mesh_writes,
                "probe_requests": self.probe_requests, "authenticated_requests": self.authenticated,
                "forbidden": dict(self.forbidden), "first_legitimate_403": self.first_legitimate}
