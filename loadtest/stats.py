"""From per-request records to the ship log's table: Test, RPS, Duration, Total, Failure, p50, p95.

Definitions (k6's, as far as the ship log shows them):

Total     requests sent in the test (scheduled in its stage; dropped ones are counted apart)
Failure   share of the sent requests that failed: no answer (timeout, connection or TLS error)
          or a status outside 200-399 (k6's http_req_failed)
p50, p95  nearest-rank percentiles of the duration of every sent request, failed ones included
          (k6's http_req_duration); a request that hit the client timeout has no duration, so a
          percentile that falls on one reads "timeout" (the ship log's "p95 timeout")
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from loadtest.schedule import Record, Stage

TIMEOUT = math.inf


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    if not values:
        return None
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds == TIMEOUT:
        return "timeout"
    return f"{round(seconds * 1000):,}ms"


def fmt_rate(rate: float) -> str:
    return f"{rate:g}"


@dataclass
class TestSummary:
    test: int
    stage: Stage
    total: int                  # sent
    failed: int
    dropped: int
    p50: float | None           # seconds, TIMEOUT, or None (nothing sent)
    p95: float | None
    outcomes: Counter = field(default_factory=Counter)   # ok/http/timeout/error
    statuses: Counter = field(default_factory=Counter)   # HTTP status -> count (answered requests)
    max_lag: float = 0.0        # seconds the latest request left after its due time

    @property
    def failure_rate(self) -> float | None:
        return None if not self.total else self.failed / self.total

    def row(self) -> list[str]:
        rate = self.failure_rate
        return [str(self.test), fmt_rate(self.stage.rate), f"{self.stage.duration:g}s", str(self.total),
                "-" if rate is None else f"{rate * 100:.2f}%", fmt_ms(self.p50), fmt_ms(self.p95)]


def summarize(records: list[Record], stages: tuple[Stage, ...] | list[Stage]) -> list[TestSummary]:
    out = []
    for n, stage in enumerate(stages, 1):
        mine = [r for r in records if r.test == n]
        sent = [r for r in mine if r.sent is not None]
        durations = [TIMEOUT if r.outcome == "timeout" else (r.latency or 0.0) for r in sent]
        out.append(TestSummary(
            test=n, stage=stage, total=len(sent), failed=sum(r.failed for r in sent),
            dropped=len(mine) - len(sent), p50=percentile(durations, 50), p95=percentile(durations, 95),
            outcomes=Counter(r.outcome for r in sent),
            statuses=Counter(r.status for r in sent if r.status),
            max_lag=max((r.sent - r.planned for r in sent if r.sent is not None), default=0.0)))
    return out


HEADERS = ["Test", "RPS", "Duration", "Total", "Failure", "p50", "p95"]


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ship_log_table(summaries: list[TestSummary]) -> str:
    return markdown_table(HEADERS, [s.row() for s in summaries])


def timeline(records: list[Record], *, bucket: float = 10.0) -> list[dict]:
    """Per `bucket` seconds of the run: requests sent, answers that arrived ok / failed, and how
    many were in flight at the bucket's end. Successful answers per second is the throughput the
    target actually delivered (its ceiling, once it is saturated)."""
    sent = [r for r in records if r.sent is not None]
    if not sent:
        return []
    end = max(r.done or r.sent or 0.0 for r in sent)
    rows = []
    for i in range(math.ceil(end / bucket) or 1):
        lo, hi = i * bucket, (i + 1) * bucket
        done_here = [r for r in sent if r.done is not None and lo <= r.done < hi]
        rows.append({
            "from": lo, "to": hi,
            "sent": sum(1 for r in sent if lo <= r.sent < hi),  # type: ignore[operator]
            "ok": sum(not r.failed for r in done_here),
            "failed": sum(r.failed for r in done_here),
            "in_flight": sum(1 for r in sent if r.sent < hi and (r.done is None or r.done >= hi)),  # type: ignore[operator]
        })
    return rows


def peak_goodput(records: list[Record], *, window: float = 30.0) -> tuple[float, float, float]:
    """The highest rate of successful answers over any `window` seconds of the run (answers per
    second, where the window starts, and the window: the run's length if that is shorter): what
    the target sustained at best."""
    done = sorted(r.done for r in records if not r.failed and r.done is not None)
    span = max((r.done or 0.0 for r in records if r.done is not None), default=0.0)
    window = min(window, span) or window
    best, at = 0.0, 0.0
    j = 0
    for i, start in enumerate(done):
        while j < len(done) and done[j] < start + window:
            j += 1
        if (j - i) / window > best:
            best, at = (j - i) / window, start
    return best, at, window
