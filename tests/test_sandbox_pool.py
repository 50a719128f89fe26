"""The sandbox's database pool model: a pool of N connections, a hold time per served request,
FIFO waiting, 504 at the gateway's request timeout; through a real task behind the ALB stand-in."""

from __future__ import annotations

import threading
import time

import pytest

from cutover.mtls import with_mode
from cutover.sandbox.dbpool import DbPool, PoolModel
from cutover.sandbox.gateway import Front, GatewaySettings, Task
from cutover.sandbox.pki import make_pki
from cutover.sandbox.traffic import post
from envconfig import render_document

DOC = render_document({"tls": {"mtls": {"meshWritesEnforcement": "advisory"}}})


def _concurrently(n: int, fn, gap: float = 0.05) -> list[tuple[float, object]]:
    """n calls in their own threads, started `gap` apart (a definite arrival order, so FIFO is
    checkable); (seconds each took from its own start, what it returned), in start order."""
    out: list[tuple[float, object]] = [(0.0, None)] * n

    def one(i: int) -> None:
        t = time.monotonic()
        result = fn()
        out[i] = (time.monotonic() - t, result)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(gap)
    for t in threads:
        t.join()
    return out


def test_at_pool_1_requests_queue_and_the_one_that_cannot_finish_in_time_fails():
    pool = DbPool(PoolModel(size=1, hold=0.4, timeout=1.0))
    (t1, ok1), (t2, ok2), (t3, ok3) = _concurrently(3, pool.serve)
    assert (ok1, ok2, ok3) == (True, True, False)
    assert t1 == pytest.approx(0.4, abs=0.1), "the first gets the connection at once"
    assert t2 == pytest.approx(0.75, abs=0.1), "the second waits for the first (FIFO), then holds"
    assert t3 == pytest.approx(1.0, abs=0.1), "the third gets it too late to finish: cut at the timeout"
    s = pool.stats()
    assert (s["served"], s["timed_out_holding"], s["timed_out_waiting"], s["in_use"], s["waiting"]) == (2, 1, 0, 0, 0)


def test_however_long_the_queue_no_request_outlasts_the_timeout():
    """Overload: one connection, six requests at once. The first is served; every other one ends
    with a 504 at its own timeout, whether it was still waiting or got the connection too late."""
    pool = DbPool(PoolModel(size=1, hold=0.3, timeout=0.5))
    results = _concurrently(6, pool.serve)
    assert [ok for _, ok in results] == [True] + [False] * 5
    assert all(t == pytest.approx(0.5, abs=0.1) for t, _ in results[1:])
    s = pool.stats()
    assert s["served"] == 1 and s["timed_out_waiting"] + s["timed_out_holding"] == 5
    assert s["max_waiting"] >= 4 and (s["in_use"], s["waiting"]) == (0, 0)


def test_a_bigger_pool_serves_the_same_burst_without_queueing():
    pool = DbPool(PoolModel(size=3, hold=0.3, timeout=0.7))
    results = _concurrently(3, pool.serve)
    assert [ok for _, ok in results] == [True] * 3 and max(t for t, _ in results) < 0.45
    assert PoolModel(size=50, hold=28, timeout=60).ceiling_rps == pytest.approx(1.786, abs=0.001)


def test_close_ends_waits_and_holds_at_once():
    pool = DbPool(PoolModel(size=1, hold=5.0, timeout=10.0))
    threading.Timer(0.3, pool.close).start()
    t0 = time.monotonic()
    results = _concurrently(2, pool.serve)
    assert [ok for _, ok in results] == [False, False] and time.monotonic() - t0 < 1.5


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), ["agent"])


class _Lines:
    def emit(self, stream: str, message: str, ts_ms: int | None = None) -> None:
        pass


def _gateway(pki, db_pool: PoolModel | None) -> Front:
    settings = GatewaySettings(routes=("/v1/agent/delegate",), api_keys={"k": "agent"},
                               read_parameter=lambda: with_mode(DOC, "advisory"), ca=pki.ca, shipper=_Lines(),
                               db_pool=db_pool)
    front = Front(pki)
    front.register(Task("t0", settings))
    return front


def test_through_the_gateway_a_queued_request_past_the_timeout_is_a_504(pki):
    import ssl

    front = _gateway(pki, PoolModel(size=1, hold=0.4, timeout=1.0))
    ctx = ssl.create_default_context(cafile=pki.ca_cert)
    try:
        results = _concurrently(3, lambda: post("127.0.0.1", front.port, ctx, "/v1/chat/completions", key="k",
                                                agent="test"))
        assert [status for _, status in results] == [200, 200, 504]
        assert post("127.0.0.1", front.port, ctx, "/v1/chat/completions", key=None, agent="t") == 404, \
            "a request the gateway refuses takes no connection"
    finally:
        front.stop()


def test_without_a_pool_model_the_gateway_answers_at_once(pki):
    import ssl

    front = _gateway(pki, None)
    ctx = ssl.create_default_context(cafile=pki.ca_cert)
    try:
        assert front.tasks[0].db is None
        results = _concurrently(3, lambda: post("127.0.0.1", front.port, ctx, "/v1/agent/delegate", key="k",
                                                agent="test"))
        assert [status for _, status in results] == [200] * 3 and max(t for t, _ in results) < 0.3
    finally:
        front.stop()
