"""The pure parts: the flag inside YAML, the incremental log cursor, 403 classification, reports."""

from __future__ import annotations

import json

import pytest

from cutover.mtls import (
    LEGITIMATE,
    PROBE,
    SENTINEL,
    UNAUTHENTICATED,
    classify_403,
    is_own_traffic,
    parse_access,
    read_mode,
    with_mode,
    write_config_mode,
)
from cutover.watch import LogCursor, Watcher
from envconfig import AccessLog

DOC = """\
# gateway config, hand-edited
gateway: {name: brainstorm-router}
tls:
  mtls:
    meshWritesEnforcement: 'advisory'   # quoted, with a comment
    clientCertHeader: X-Amzn-Mtls-Clientcert
other: [1, 2, 3]
"""


def test_flip_changes_only_the_flag_and_keeps_every_other_byte():
    out = with_mode(DOC, "strict")
    assert out == DOC.replace("'advisory'", "'strict'"), "the quoting style is kept"
    assert read_mode(out) == "strict" and with_mode(out, "advisory").count("advisory") == 1


def test_flip_refuses_unknown_modes():
    with pytest.raises(ValueError):
        with_mode(DOC, "enforcing")


def test_write_config_mode_round_trip(tmp_path):
    src = tmp_path / "production.yaml"
    text = "a: 1  # keep\ngateway:\n  document:\n    tls:\n      mtls:\n        meshWritesEnforcement: advisory  # c\n"
    src.write_text(text)
    assert write_config_mode(src, "strict") is True
    assert src.read_text() == text.replace("advisory  # c", "strict  # c")
    assert write_config_mode(src, "strict") is False, "already says so: no write"


# ---------------------------------------------------------------- the cursor


class FakeLogs:
    """CloudWatch's contract: events by *timestamp* in [start, end], paginated."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.reads: list[tuple[int, int]] = []

    def put(self, eid: str, ts: int) -> None:
        self.events.append({"eventId": eid, "timestamp": ts, "message": eid})

    def read(self, lo: int, hi: int):
        self.reads.append((lo, hi))
        yield from (e for e in self.events if lo <= e["timestamp"] <= hi)


def test_cursor_reads_only_new_events_with_overlap_and_dedup():
    logs = FakeLogs()
    c = LogCursor(read=logs.read, start_ms=0, overlap_ms=100)
    logs.put("a", 10)
    assert [e["eventId"] for e in c.poll(1000)] == ["a"]
    logs.put("b", 1050)
    assert [e["eventId"] for e in c.poll(2000)] == ["b"]
    assert logs.reads[-1] == (900, 2000), "re-reads the overlap behind the cursor, not the whole window"
    assert c.poll(3000) == [], "nothing is reported twice"


def test_cursor_catches_a_late_event_inside_the_overlap_and_documents_the_bound():
    logs = FakeLogs()
    c = LogCursor(read=logs.read, start_ms=0, overlap_ms=500)
    c.poll(1000)
    logs.put("late", 700)      # ingested after the poll at 1000, timestamped behind the cursor
    logs.put("too-late", 300)  # behind the overlap: the configured bound, so raise `overlap` for slower ingestion
    assert [e["eventId"] for e in c.poll(1500)] == ["late"]


def test_cursor_memory_stays_flat():
    logs = FakeLogs()
    c = LogCursor(read=logs.read, start_ms=0, overlap_ms=10)
    for i in range(10_000):
        logs.put(f"e{i}", i)
    c.poll(10_000)
    c.poll(20_000)
    assert len(c.seen) < 100


# ---------------------------------------------------------------- 403s


F = AccessLog()


def ev(**kw) -> str:
    base = {"path": "/v1/agent/delegate", "status": 403, "caller": "", "userAgent": "x", "cutoverRunId": ""}
    return json.dumps({**base, **kw})


@pytest.mark.parametrize("message,kind", [
    (ev(caller="brainstorm-cli"), LEGITIMATE),
    (ev(caller="", userAgent="brainstorm-cutover-probe/run-9", cutoverRunId="run-9"), PROBE),
    (ev(caller="cutover-sentinel", userAgent="brainstorm-cutover-probe/run-9 sentinel", cutoverRunId="run-9"),
     SENTINEL),
    # One mark alone is a caller (a look-alike must never hide a hurt caller).
    (ev(caller="brainstorm-cli", cutoverRunId="run-1"), LEGITIMATE),
    (ev(caller="brainstorm-cli", userAgent="brainstorm-cutover-probe-harness/2.1"), LEGITIMATE),
    (ev(caller="", userAgent="brainstorm-cutover-probe/run-9"), UNAUTHENTICATED),
    (ev(), UNAUTHENTICATED),
    (ev(caller="x", status=200), None),
    (ev(caller="x", path="/v1/chat/completions"), None),
])
def test_classify_403(message, kind):
    assert classify_403(parse_access(message, F)) == kind


def test_a_prefix_with_braces_of_its_own_does_not_hide_the_access_line():
    event = parse_access("[req {7f3a}] " + ev(caller="brainstorm-cli"), F)
    assert event is not None and classify_403(event) == LEGITIMATE


HURT = ev(caller="brainstorm-cli")
OURS = ev(caller="cutover-sentinel", userAgent="brainstorm-cutover-probe/run-9 sentinel", cutoverRunId="run-9")


@pytest.mark.parametrize("message", [
    ev(caller="a", status=200) + "\n" + HURT,              # two lines merged into one event
    HURT + " (12ms)",                                      # text after the object
    "{a} {b} {c} {d} {e} [req] " + HURT,                  # a prefix with many braces of its own
    ev(caller="a", status=200) + " " + HURT,              # two objects on one line
    " ".join([ev(caller="a", status=200)] * 100 + [HURT]),  # many objects on one line
])
def test_a_hurt_caller_is_read_whatever_shape_the_event_has(message):
    w = Watcher(Lines(("gateway/gateway/t1", message)), F, run_id="run-1")
    hit = w.poll(1.0)
    assert hit is not None and hit.caller == "brainstorm-cli"


@pytest.mark.parametrize("sep", ["\n", " ", "\r", "\u2028", "\x1e", ""])
def test_an_own_line_merged_with_other_text_is_not_own_traffic_for_the_gate(sep):
    assert is_own_traffic(OURS, F)
    assert not is_own_traffic(OURS + sep + "WARN [mtls-advisory] mesh write without client certificate", F)
    assert not is_own_traffic(OURS + sep + HURT, F)


def test_deep_nesting_is_not_an_access_line_and_does_not_crash_the_watch():
    deep = "{" * 100_000 + HURT
    assert not is_own_traffic("[" * 100_000, F)
    w = Watcher(Lines(("gateway/gateway/t1", "[" * 100_000), ("gateway/gateway/t1", HURT)), F, run_id="run-1")
    assert w.poll(1.0) is not None, "the next event is still read"
    parse_access(deep, F)  # no RecursionError escapes (what it finds in such a line is not specified)


@pytest.mark.parametrize("message", ["[api/cold-start] mtls ready in 40ms", "{not json", "{\"a\": 1}", "[]"])
def test_non_access_lines_are_not_events(message):
    assert parse_access(message, F) is None


class Lines:
    """An EventSource over a fixed list, for the Watcher."""

    def __init__(self, *messages: tuple[str, str]) -> None:
        self.events = [{"message": m, "timestamp": 5, "logStreamName": s} for s, m in messages]

    def poll(self, now_ms: int) -> list[dict]:
        out, self.events = self.events, []
        return out


def test_the_watcher_counts_callers_apart_from_its_own_requests():
    sentinel_ua = "brainstorm-cutover-probe/run-1 sentinel"
    probe_ua = "brainstorm-cutover-probe/run-1"
    w = Watcher(Lines(("gateway/gateway/t1", ev(caller="a", status=200)),
                      ("gateway/gateway/t1", ev(cutoverRunId="r", userAgent="brainstorm-cutover-probe/r")),
                      ("gateway/gateway/t2", ev(cutoverRunId="run-1", userAgent=probe_ua)),
                      ("gateway/gateway/t2", ev(caller="cutover-sentinel", cutoverRunId="run-1", userAgent=sentinel_ua)),
                      ("gateway/gateway/t1", ev()), ("gateway/gateway/t1", ev(caller="b"))), F, run_id="run-1")
    hit = w.poll(1.0)
    s = w.summary
    assert s.mesh_write_requests == 3 and s.own_requests == 3
    assert s.forbidden == {"probe": 2, "sentinel": 1, "unauthenticated": 1, "legitimate": 1}
    assert hit is not None and hit.caller == "b" and s.first_legitimate == hit
    assert dict(w.own_403_streams) == {"gateway/gateway/t2": 1}, "another run's probe is not this run's proof"
    assert [a.caller for _, a in w.sentinel_lines] == ["cutover-sentinel"]


def test_the_journal_always_fits_a_standard_parameter():
    from cutover_core.journal import SSM_STANDARD_LIMIT, Journal, fit

    j = Journal(run_id="production-20261129T000000Z-abcd", env="production", operator="arn:aws:sts::1:assumed-role/x/y",
                target="strict", previous_mode="advisory",
                parameter="/brainstorm-router/production/gateway/config", started=1.0, previous_version=41,
                new_version=42, deployment_id="ecs-svc/1234567890123456789")
    for i in range(30):
        j.record(f"step-{i}", "failed", 1000.0 + i, "x" * 500)
    text = fit(j)
    assert len(text) <= SSM_STANDARD_LIMIT
    back = Journal.from_json(text)
    assert back.previous_version == 41 and back.new_version == 42 and len(back.steps) == 30
    assert back.steps[-1].step == "step-29" and back.steps[-1].status == "failed"
    small = Journal.from_dict({**back.to_dict(), "steps": []})
    small.record("flip", "done", 5.0, "advisory -> strict: v41 -> v42 " + "y" * 150)
    assert Journal.from_json(fit(small)).steps == small.steps, "a journal that fits is stored as it is"
