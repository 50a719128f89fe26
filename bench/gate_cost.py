"""3. Gate cost: one pass with every pattern in one OR pre-filter (ours) vs one query per pattern
(the runbook's nine: five patterns and four routes), on a log group of 10^5 events with
realistic noise. Two backends:

- moto: real API round trips, but moto ignores OR patterns, so our pass transfers every event;
- cw-model: CloudWatch's filter semantics (bench/cwlogs.py), so both strategies transfer only
  matches. `server_scanned` counts the events the service examined: what grows with the group.
"""

from __future__ import annotations

import random
import time

import boto3
from common import save
from cwlogs import CwLogs
from moto import mock_aws

from cutover.aws import Aws
from cutover.mtls import GateCounts, gate_filter_pattern
from envconfig import load

N = 100_000
DAY_MS = 24 * 3600 * 1000
NOISE = ["[api/cold-start] mtls context ready in {}ms", '{{"path": "/v1/chat/completions", "status": 200, "ms": {}}}',
         '{{"path": "/health", "status": 200, "ms": {}}}', "INFO provider openai latency {}ms",
         '{{"path": "/v1/agent/task-runs", "status": 200, "caller": "sandbox-agents", "ms": {}}}',
         '{{"path": "/v1/messages", "status": 429, "caller": "k6", "ms": {}}}']


def corpus(now_ms: int) -> list[tuple[int, str]]:
    rng = random.Random(1)
    start = now_ms - 23 * 3600 * 1000
    return [(start + i * (23 * 3600 * 1000 // N), rng.choices(NOISE, weights=[1, 60, 20, 15, 3, 1])[0]
             .format(rng.randint(1, 900))) for i in range(N)]


def one_pass(clients: dict, cfg, now_ms: int) -> dict:
    aws = Aws(clients, sleep=time.sleep)
    g = cfg.cutover.gate
    t = time.perf_counter()
    counts = GateCounts(g)
    for ev in aws.log_events(cfg.observability.log_group_name, now_ms - DAY_MS, now_ms, gate_filter_pattern(g)):
        counts.add(ev["message"])
    return {"seconds": time.perf_counter() - t, "calls": aws.calls["filter_log_events"],
            "events_transferred": aws.calls["events_read"], "queries": 1,
            "verdict_counts": {**counts.patterns, **counts.routes}, "excluded_timing_lines": counts.excluded}


def per_pattern(clients: dict, cfg, now_ms: int) -> dict:
    aws = Aws(clients, sleep=time.sleep)
    g = cfg.cutover.gate
    t = time.perf_counter()
    counts = {}
    for term in [*g.patterns, *g.routes]:
        counts[term] = sum(1 for _ in aws.log_events(cfg.observability.log_group_name, now_ms - DAY_MS, now_ms,
                                                     f'"{term}"'))
    return {"seconds": time.perf_counter() - t, "calls": aws.calls["filter_log_events"],
            "events_transferred": aws.calls["events_read"], "queries": len(counts), "raw_counts": counts}


def main() -> None:
    cfg = load("production")
    now_ms = int(time.time() * 1000)
    events = corpus(now_ms)
    results = {}

    with mock_aws():
        logs = boto3.client("logs", region_name=cfg.region)
        group = cfg.observability.log_group_name
        logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName="s")
        for i in range(0, N, 10_000):
            logs.put_log_events(logGroupName=group, logStreamName="s",
                                logEvents=[{"timestamp": t, "message": m} for t, m in events[i:i + 10_000]])
        clients = {n: boto3.client(n, region_name=cfg.region) for n in ("ssm", "ecs", "logs", "cloudwatch", "sts")}
        results["moto"] = {"one_pass": one_pass(clients, cfg, now_ms), "per_pattern": per_pattern(clients, cfg, now_ms)}

    model = CwLogs()
    model.extend_sorted(events)
    clients = {"logs": model, "ssm": None, "ecs": None, "cloudwatch": None, "sts": None}
    before = model.scanned
    ours = one_pass(clients, cfg, now_ms)
    ours["server_scanned"] = model.scanned - before
    before = model.scanned
    naive = per_pattern(clients, cfg, now_ms)
    naive["server_scanned"] = model.scanned - before
    results["cw_model"] = {"one_pass": ours, "per_pattern": naive}

    save("gate_cost", {"events": N, **results})
    for backend, r in results.items():
        o, p = r["one_pass"], r["per_pattern"]
        print(f"{backend}: one pass {o['calls']} calls / {o['events_transferred']} events / {o['seconds']:.2f}s; "
              f"per pattern {p['calls']} calls / {p['events_transferred']} events / {p['seconds']:.2f}s")


if __name__ == "__main__":
    main()
