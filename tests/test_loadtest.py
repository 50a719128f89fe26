"""python -m loadtest: the open-model schedule, the ship log's numbers and table, the client's
TLS/mTLS and API key, against real local servers (127.0.0.1) and a fake clock."""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cutover.sandbox.pki import make_pki
from loadtest.cli import main
from loadtest.client import Target, UsageError, read_api_key, sender, tls_context
from loadtest.schedule import R20_PROFILE, OpenModelRunner, Record, Result, Stage, parse_stage, timetable
from loadtest.stats import TIMEOUT, fmt_ms, peak_goodput, percentile, ship_log_table, summarize


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.on_sleep = lambda now: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.on_sleep(self.now)


# ---------------------------------------------------------------- the schedule


def test_stages_parse_like_the_ship_log_writes_them():
    assert parse_stage("10rps:90s") == Stage(10, 90)
    assert parse_stage("5:1m") == Stage(5, 60)
    assert parse_stage("0.5rps:4s").planned == 2
    for bad in ("10rps", "fast:90s", "0rps:10s", "10rps:0s", "0.1rps:5s"):
        with pytest.raises(ValueError):
            parse_stage(bad)
    assert [s.planned for s in R20_PROFILE] == [900, 300]


def test_timetable_is_a_constant_arrival_rate_per_stage():
    plan = timetable([Stage(4, 1), Stage(2, 2)])
    assert [p.offset for p in plan] == [0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5]
    assert [p.test for p in plan] == [1] * 4 + [2] * 4
    assert [p.seq for p in plan] == list(range(8))


def test_the_schedule_holds_when_no_answer_comes_back():
    """Open model: every request leaves at its time although none has been answered yet (a closed
    model would stop at its number of users and wait)."""
    clock = FakeClock()
    answered = threading.Event()
    started: list[float] = []
    lock = threading.Lock()

    def send() -> Result:  # an answer that takes forever: it comes only once everything was sent
        with lock:
            started.append(clock())
        answered.wait(10)
        return Result(200, 30.0, "ok")

    plan = timetable([Stage(10, 2)])
    clock.on_sleep = lambda now: answered.set() if now >= 1000.0 + plan[-1].offset + 0.1 else None
    runner = OpenModelRunner(send, max_in_flight=100, clock=clock, sleep=clock.sleep)
    records = runner.run([Stage(10, 2)])
    assert [r.sent for r in records] == pytest.approx([p.offset for p in plan]), "each request left when due"
    assert runner.peak_in_flight == 20, "all 20 were in flight at once: nothing waited for an answer"
    assert all(r.outcome == "ok" and r.latency == 30.0 for r in records)
    assert len(started) == 20


def test_a_request_due_at_the_cap_is_dropped_not_sent_late():
    clock = FakeClock()
    release = threading.Event()
    clock.on_sleep = lambda now: release.set() if now >= 1000.0 + 1.0 else None
    runner = OpenModelRunner(lambda: (release.wait(10), Result(200, 1.0, "ok"))[1], max_in_flight=3,
                             clock=clock, sleep=clock.sleep)
    records = runner.run([Stage(10, 1)])
    sent = [r for r in records if r.sent is not None]
    assert [r.seq for r in sent] == [0, 1, 2]
    assert [r.outcome for r in records[3:]] == ["dropped"] * 7
    assert summarize(records, [Stage(10, 1)])[0].dropped == 7


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay = 0.5
    key = ""

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(self.delay)
        ok = not self.key or self.headers.get("Authorization") == f"Bearer {self.key}"
        body = b'{"ok": true}' if ok else b'{"error": "api key"}'
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _server(handler: type, ctx: ssl.SSLContext | None = None):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    if ctx is not None:
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    return srv


@pytest.fixture
def slow_server():
    servers = []

    def start(delay: float, key: str = "", ctx: ssl.SSLContext | None = None) -> str:
        handler = type("Handler", (_Slow,), {"delay": delay, "key": key})
        srv = _server(handler, ctx)
        servers.append(srv)
        return f"{'https' if ctx else 'http'}://127.0.0.1:{srv.server_address[1]}"
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_offered_load_does_not_fall_when_a_real_server_is_slow(slow_server):
    """20 RPS against a server that takes 0.5 s per answer: all 20 leave on time within the
    second (a closed model with a few users would have sent a few per 0.5 s)."""
    send = sender(Target(url=slow_server(0.5), timeout=3.0))
    runner = OpenModelRunner(send, max_in_flight=50)
    t0 = time.monotonic()
    records = runner.run([Stage(20, 1)])
    assert len(records) == 20 and all(r.outcome == "ok" and r.status == 200 for r in records)
    assert max(r.sent - r.planned for r in records) < 0.1, "sent on schedule"
    assert records[-1].sent < 1.0 and min(r.latency for r in records) >= 0.45
    assert runner.peak_in_flight >= 8, "requests overlapped instead of waiting for each other"
    assert time.monotonic() - t0 < 2.5


def test_a_request_over_its_timeout_is_a_timeout_at_the_timeout(slow_server):
    res = sender(Target(url=slow_server(2.0), timeout=0.3))()
    assert (res.status, res.outcome) == (0, "timeout")
    assert 0.25 <= res.latency < 0.8


def test_connection_refused_is_an_error_not_a_timeout():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        res = sender(Target(url=f"http://127.0.0.1:{port}", timeout=2.0))()
    assert res.outcome == "error" and res.status == 0 and "Refused" in res.error


# ---------------------------------------------------------------- numbers and the table


def test_percentiles_are_nearest_rank_and_a_timeout_is_shown_as_timeout():
    values = [float(i) for i in range(1, 21)]  # 1..20 s
    assert percentile(values, 50) == 10.0 and percentile(values, 95) == 19.0
    assert percentile([3.0], 95) == 3.0 and percentile([], 50) is None
    assert percentile([1.0, 2.0, TIMEOUT, TIMEOUT], 50) == 2.0
    assert percentile([1.0, 2.0, TIMEOUT, TIMEOUT], 95) == TIMEOUT
    assert fmt_ms(22.05) == "22,050ms" and fmt_ms(TIMEOUT) == "timeout" and fmt_ms(0.0123) == "12ms"


def _rec(test: int, seq: int, latency: float | None, status: int, outcome: str) -> Record:
    sent = None if outcome == "dropped" else seq * 0.1 + 0.002  # 2 ms behind schedule
    return Record(test=test, seq=seq, planned=seq * 0.1, sent=sent, status=status, latency=latency, outcome=outcome)


def test_failure_counts_timeouts_errors_and_bad_statuses_not_dropped_requests():
    records = [_rec(1, 0, 1.0, 200, "ok"), _rec(1, 1, 2.0, 302, "ok"), _rec(1, 2, 60.0, 0, "timeout"),
               _rec(1, 3, 30.0, 504, "http"), _rec(1, 4, 0.01, 0, "error"), _rec(1, 5, None, 0, "dropped"),
               _rec(2, 6, 5.0, 200, "ok")]
    s1, s2 = summarize(records, [Stage(6, 1), Stage(1, 1)])
    assert (s1.total, s1.failed, s1.dropped) == (5, 3, 1)
    assert s1.failure_rate == pytest.approx(0.6)
    assert s1.p50 == 2.0 and s1.p95 == TIMEOUT, "the timeout has no duration: it sorts last"
    assert s1.statuses[504] == 1 and s1.outcomes["timeout"] == 1 and s1.outcomes["error"] == 1
    assert s1.max_lag == pytest.approx(0.002)
    assert (s2.total, s2.failed, s2.p50, s2.p95) == (1, 0, 5.0, 5.0)


def test_the_table_has_the_ship_logs_columns_and_formats():
    r20_like = ([_rec(1, i, 22.05, 200, "ok") for i in range(10)] + [_rec(1, 10 + i, 60, 0, "timeout") for i in range(2)]
                + [_rec(2, 100 + i, 12.742, 200, "ok") for i in range(3)] + [_rec(2, 103, 60, 504, "http")])
    table = ship_log_table(summarize(r20_like, [Stage(10, 90), Stage(5, 60)]))
    assert table.splitlines() == [
        "| Test | RPS | Duration | Total | Failure | p50 | p95 |",
        "|---|---|---|---|---|---|---|",
        "| 1 | 10 | 90s | 12 | 16.67% | 22,050ms | timeout |",
        "| 2 | 5 | 60s | 4 | 25.00% | 12,742ms | 60,000ms |",
    ]


def test_peak_goodput_is_the_best_window_of_successful_answers():
    records = [Record(1, i, i * 0.5, i * 0.5, 200, 1.0, "ok") for i in range(120)]  # 2/s answered, t=1..60.5
    records += [Record(1, 200 + i, 61.0, 61.0, 504, 1.0, "http") for i in range(50)]  # failures do not count
    best, _, window = peak_goodput(records, window=30)
    assert window == 30 and best == pytest.approx(2.0, abs=0.05)


# ---------------------------------------------------------------- TLS, mTLS and the API key


def test_api_key_comes_from_env_or_file_only(tmp_path):
    f = tmp_path / "key"
    f.write_text("s3cret\n")
    assert read_api_key(env=None, file=str(f)) == "s3cret"
    assert read_api_key(env="BR_KEY", file=None, environ={"BR_KEY": "k2"}) == "k2"
    assert read_api_key(env=None, file=None) is None
    with pytest.raises(UsageError, match="not set"):
        read_api_key(env="BR_KEY", file=None, environ={})
    with pytest.raises(UsageError, match="empty"):
        (tmp_path / "empty").write_text("\n")
        read_api_key(env=None, file=str(tmp_path / "empty"))


def test_a_key_in_a_header_on_the_command_line_is_refused(capsys):
    code = main(["--url", "http://127.0.0.1:9", "--yes", "--header", "Authorization: Bearer literal"])
    assert code == 2 and "never on the command line" in capsys.readouterr().err


def test_a_real_url_needs_yes_and_sends_nothing_without_it(capsys, tmp_path):
    code = main(["--url", "http://127.0.0.1:9", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "add --yes" in err and "1200 requests" in err
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), ["loadtester"])


def _mtls_server_context(pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca_cert)
    ctx.load_cert_chain(pki.server.cert, pki.server.key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def test_mtls_and_the_api_key_reach_the_server_through_the_command(pki, slow_server, tmp_path, monkeypatch):
    url = slow_server(0.05, key="s3cret", ctx=_mtls_server_context(pki))
    monkeypatch.setenv("BR_LOADTEST_KEY", "s3cret")
    client = pki.clients["loadtester"]
    code = main(["--url", url, "--yes", "--stage", "5rps:1s", "--timeout", "5s", "--api-key-env", "BR_LOADTEST_KEY",
                 "--ca-bundle", pki.ca_cert, "--client-cert", client.cert, "--client-key", client.key,
                 "--name", "mtls", "--out-dir", str(tmp_path)])
    assert code == 0
    (md,) = tmp_path.glob("mtls-5rps1s-*.md")
    (raw,) = tmp_path.glob("mtls-5rps1s-*.jsonl")
    assert "| 1 | 5 | 1s | 5 | 0.00% |" in md.read_text()
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    assert [r["status"] for r in rows] == [200] * 5, "authenticated (a wrong key is 401) over mTLS"
    assert "s3cret" not in md.read_text() + raw.read_text()


def test_without_the_client_certificate_the_mtls_server_refuses(pki, slow_server):
    url = slow_server(0.0, ctx=_mtls_server_context(pki))
    res = sender(Target(url=url, timeout=3.0, context=tls_context(ca_bundle=pki.ca_cert)))()
    assert res.outcome == "error" and res.status == 0, res
    res = sender(Target(url=url, timeout=3.0, context=tls_context()))()  # system store: server not trusted
    assert res.outcome == "error" and "CERTIFICATE_VERIFY_FAILED" in res.error


def test_client_cert_needs_its_key():
    with pytest.raises(UsageError, match="go together"):
        tls_context(client_cert="/etc/hosts")


@pytest.mark.e2e
def test_the_sandbox_rehearsal_runs_end_to_end_and_says_what_it_is(tmp_path):
    code = main(["--sandbox", "--pool", "1", "--hold", "0.3s", "--stage", "5rps:1s", "--timeout", "5s",
                 "--out-dir", str(tmp_path)])
    assert code == 0
    (md,) = tmp_path.glob("sandbox-pool1-5rps1s-*.md")
    text = md.read_text()
    assert "rehearsal of the mechanism, not a measurement of production" in text
    assert "| 1 | 5 | 1s | 5 | 0.00% |" in text, "2 tasks x 1 connection / 0.3 s = 6.7 RPS > 5: no failure"
    assert "2 x 1 / 0.3 s = 6.67 RPS" in text
    assert "make loadtest ARGS=" in text
