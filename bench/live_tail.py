"""Issue 9 (later: streaming): can moto exercise CloudWatch Logs Live Tail (`StartLiveTail`)
honestly enough to build and measure a streaming watch on it?

Real Live Tail keeps a session open (up to 3 hours) and pushes `sessionUpdate` frames, about one
a second, with events ingested AFTER the session started. The check below starts a session in
moto with one matching event already in the group, then puts a second matching event, and
records what the response stream delivers and when it ends. The installed moto's answer is kept
in bench/results/live_tail.json, so the claim in docs/benchmarks.md can be rerun.

Run: .venv/bin/python bench/live_tail.py
"""

from __future__ import annotations

import time

import boto3
import moto
from common import save
from moto import mock_aws


def main() -> None:
    with mock_aws():
        logs = boto3.client("logs", region_name="us-east-1")
        logs.create_log_group(logGroupName="g")
        logs.create_log_stream(logGroupName="g", logStreamName="s")
        now = int(time.time() * 1000)
        logs.put_log_events(logGroupName="g", logStreamName="s",
                            logEvents=[{"timestamp": now, "message": '{"status": 403, "note": "before the session"}'}])
        group = logs.describe_log_groups()["logGroups"][0]
        arn = group.get("logGroupArn") or group["arn"].removesuffix(":*")
        resp = logs.start_live_tail(logGroupIdentifiers=[arn], logEventFilterPattern='"403"')
        logs.put_log_events(logGroupName="g", logStreamName="s",
                            logEvents=[{"timestamp": now + 1, "message": '{"status": 403, "note": "after the start"}'}])
        t = time.monotonic()
        frames = []
        for frame in resp["responseStream"]:
            kind = next(iter(frame))
            messages = [r["message"] for r in frame[kind].get("sessionResults", [])]
            frames.append({"after_s": round(time.monotonic() - t, 3), "frame": kind, "messages": messages})
        ended = round(time.monotonic() - t, 3)
    delivered = [m for f in frames for m in f["messages"]]
    result = {"moto": moto.__version__, "frames": frames, "stream_ended_after_s": ended,
              "delivers_events_from_before_the_session": any("before" in m for m in delivered),
              "delivers_events_put_after_the_start": any("after" in m for m in delivered)}
    result["exercises_streaming"] = result["delivers_events_put_after_the_start"] and ended > 1
    save("live_tail", result)
    print(result)


if __name__ == "__main__":
    main()
