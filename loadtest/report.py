"""The run's markdown (the ship log's table first) and its raw records as JSON lines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.schedule import Record, Stage, profile_name
from loadtest.stats import TestSummary, markdown_table, peak_goodput, ship_log_table, timeline

REHEARSAL = ("> **Sandbox rehearsal of the mechanism, not a measurement of production.** The target is the "
             "local sandbox on 127.0.0.1: gateway tasks whose database pool is a model (a fixed hold time "
             "per request, 504 at the request timeout). It shows how a pool ceiling behaves under R20's "
             "open-model load; it says nothing about production's latencies or its real ceiling. "
             "See docs/load-test/README.md for what is and is not modelled.")


@dataclass
class RunInfo:
    name: str                       # file-name prefix: 'sandbox-pool50', or the target's host
    started: str                    # UTC, 2026-05-08T16-36-29Z
    command: str                    # how to rerun it
    target: str                     # URL
    request: str                    # 'POST /v1/chat/completions'
    timeout: float
    tls: str                        # what TLS/mTLS the client used
    max_in_flight: int
    peak_in_flight: int = 0
    tasks: int | None = None        # known in the sandbox; --tasks for a real target
    sandbox: dict[str, Any] | None = None   # the pool model and its counters
    notes: list[str] = field(default_factory=list)


def file_stem(info: RunInfo, stages: tuple[Stage, ...] | list[Stage]) -> str:
    return f"{info.name}-{profile_name(stages)}-{info.started}"


def _failures_table(summaries: list[TestSummary]) -> str:
    rows = []
    for s in summaries:
        http = ", ".join(f"{code}: {n}" for code, n in sorted(s.statuses.items()) if not 200 <= code < 400) or "-"
        rows.append([str(s.test), str(s.outcomes.get("ok", 0)), http, str(s.outcomes.get("timeout", 0)),
                     str(s.outcomes.get("error", 0)), str(s.dropped), f"{s.max_lag * 1000:.0f}ms"])
    return markdown_table(["Test", "ok", "HTTP errors (status: count)", "client timeouts", "connection/TLS errors",
                           "dropped", "latest send vs schedule"], rows)


def markdown(info: RunInfo, stages: tuple[Stage, ...] | list[Stage], summaries: list[TestSummary],
             records: list[Record], records_file: str) -> str:
    profile = " + ".join(f"{s.rate:g} RPS x {s.duration:g} s" for s in stages)
    title = f"sandbox rehearsal, pool {info.sandbox['pool_size']}" if info.sandbox else info.target
    lines = [f"# Load test: {title} ({profile})", ""]
    if info.sandbox:
        lines += [REHEARSAL, ""]
    lines += [f"Run {info.started} against {info.target}: `{info.request}`, open model (constant arrival rate, "
              f"requests sent on schedule whatever the latency), client timeout {info.timeout:g} s.", "",
              ship_log_table(summaries), "",
              "Failure: no answer or a status outside 200-399. p50/p95: nearest-rank over every sent request, "
              "failed ones included; `timeout` where the percentile falls on a request that hit the client "
              "timeout.", ""]
    best, at, window = peak_goodput(records)
    per_task = f" ({best / info.tasks:.2f}/s per task across {info.tasks} tasks)" if info.tasks else ""
    lines += ["## Throughput", "",
              f"Highest rate of successful answers over any {window:.0f} s window: **{best:.2f}/s**{per_task}, "
              f"from t={at:.0f} s. When the offered rate is above it and requests fail, this is the ceiling the "
              "target sustained; when nothing fails it is only what was offered.", ""]
    rows = [[f"{b['from']:.0f}-{b['to']:.0f}", str(b["sent"]), str(b["ok"]), str(b["failed"]), str(b["in_flight"])]
            for b in timeline(records)]
    lines += [markdown_table(["t (s)", "sent", "ok answers", "failed answers", "in flight at end"], rows), ""]
    lines += ["## Failures", "", _failures_table(summaries), ""]
    lines += ["## Setup", "",
              f"- target: {info.target}; request `{info.request}`; TLS: {info.tls}",
              f"- stages: {', '.join(s.label for s in stages)}; client timeout {info.timeout:g} s; "
              f"at most {info.max_in_flight} requests in flight (peak {info.peak_in_flight})",
              "- one fresh connection per request; every request on its own thread, dispatched on schedule"]
    if info.sandbox:
        sb = info.sandbox
        lines += [f"- sandbox: {sb['tasks']} gateway tasks behind the ALB stand-in, each with a modelled pool of "
                  f"{sb['pool_size']} connections (DATABASE_POOL_SIZE), each served request holding one for "
                  f"{sb['hold']:g} s, 504 at the gateway's request timeout ({sb['timeout']:g} s); the world's "
                  "own background callers are stopped as the load starts, so only this load reaches the pools "
                  "(their first request or two may show in the counters below)",
                  f"- the model's ceiling (Little's law): {sb['tasks']} x {sb['pool_size']} / {sb['hold']:g} s = "
                  f"{sb['ceiling_rps']:.2f} RPS ({sb['pool_size'] / sb['hold']:.2f} per task)"]
        stats = sb.get("pools") or {}
        if stats:
            rows = [[tid[:8], str(s["served"]), str(s["timed_out_waiting"]), str(s["timed_out_holding"]),
                     str(s["max_waiting"]), f"{s['max_wait_seconds']:.1f}s"] for tid, s in stats.items()]
            lines += ["", "Pool counters per task at the end:", "",
                      markdown_table(["task", "served", "504: no connection in time", "504: connection too late",
                                      "most waiting", "longest wait"], rows)]
    for note in info.notes:
        lines.append(f"- {note}")
    lines += ["", f"Raw records: [`{records_file}`]({records_file}), one JSON object per request (test, seq, "
              "planned and actual send time in seconds from the start, latency, status, outcome, error).", "",
              f"Rerun: `{info.command}`", ""]
    return "\n".join(lines)


def write(out_dir: Path, info: RunInfo, stages: tuple[Stage, ...] | list[Stage], summaries: list[TestSummary],
          records: list[Record]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = file_stem(info, stages)
    md, raw = out_dir / f"{stem}.md", out_dir / f"{stem}.jsonl"
    raw.write_text("".join(json.dumps(r.to_json()) + "\n" for r in sorted(records, key=lambda r: r.seq)),
                   encoding="utf-8")
    md.write_text(markdown(info, stages, summaries, records, raw.name), encoding="utf-8")
    return md, raw
