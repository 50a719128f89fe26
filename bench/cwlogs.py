"""A CloudWatch Logs stand-in with CloudWatch's filter semantics for the terms the tool uses
(`"a"` one quoted term, `?"a" ?"b"` any of them), its time bounds and its 10,000-event pages.
moto ignores OR patterns (it returns everything), which would misstate the cost of a single
OR pre-filter; this model does not. Used by the benchmarks only."""

from __future__ import annotations

import bisect
import re


class CwLogs:
    PAGE = 10_000

    def __init__(self) -> None:
        self.events: list[tuple[int, str, str]] = []  # (timestamp, event id, message), sorted
        self.scanned = 0

    def put(self, timestamp: int, message: str) -> None:
        bisect.insort(self.events, (timestamp, f"{len(self.events):012d}", message))

    def extend_sorted(self, items: list[tuple[int, str]]) -> None:
        base = len(self.events)
        self.events.extend((t, f"{base + i:012d}", m) for i, (t, m) in enumerate(items))
        self.events.sort()

    @staticmethod
    def _terms(pattern: str | None) -> list[str] | None:
        if not pattern:
            return None
        return re.findall(r'"([^"]*)"', pattern)

    def filter_log_events(self, *, logGroupName: str, startTime: int, endTime: int, filterPattern: str | None = None,
                          nextToken: str | None = None) -> dict:
        terms = self._terms(filterPattern)
        lo = bisect.bisect_left(self.events, (startTime, "", ""))
        hi = bisect.bisect_right(self.events, (endTime, "\xff", ""))
        start = int(nextToken) if nextToken else lo
        page, i = [], start
        while i < hi and len(page) < self.PAGE:
            t, eid, msg = self.events[i]
            self.scanned += 1
            if terms is None or any(term in msg for term in terms):
                page.append({"timestamp": t, "eventId": eid, "message": msg, "logStreamName": "s"})
            i += 1
        resp: dict = {"events": page}
        if i < hi:
            resp["nextToken"] = str(i)
        return resp
