"""The cutover engine on moto, with a fake clock: every path ends in a known, asserted state
(parameter, service rollouts, lock, journal), and no test sleeps."""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from cutover.engine import Options
from cutover.lockstore import Lock
from envconfig import load
from tests.conftest import FIXTURE_ACK, ROOT, use_strategy
from tests.fakes import Crash, client_error, make_world

FORWARD_STEPS = ("flip", "redeploy", "probe", "proof", "watch")
DONE, INTERRUPTED, ROLLBACK_FAILED, ROLLED_BACK = "done", "interrupted", "rollback_failed", "rolled_back"

YES = Options(target="strict", yes=True)


def original(world) -> str:
    return world.clients["ssm"].get_parameter(Name=f"{world.cfg.gateway.parameter_name}:1")["Parameter"]["Value"]


def assert_untouched(world) -> None:
    assert world.param()["Version"] == 1 and world.mode() == "advisory"
    assert world.lock() is None
    assert world.rollouts == 0


def assert_restored(world, outcome) -> None:
    assert outcome.code == 4, outcome.message
    assert world.param()["Value"] == original(world), "the exact previous document is back"
    assert world.lock() is None
    assert world.journal()["state"] == ROLLED_BACK


# ---------------------------------------------------------------- the happy path


def test_clean_cutover_flips_redeploys_probes_watches_and_finishes(world):
    world.scripts = [["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]]
    # Traffic during the watch: served callers with certs, probes' own 403s, unauthenticated noise.
    t0 = world.clock.now
    for i in range(5):
        world.log(at=t0 + 60 + i * 60, status=200, caller="sandbox-agents")
    world.log(at=t0 + 30, status=403, user_agent="brainstorm-cutover-probe/run-x", run_id="run-x")
    world.log(at=t0 + 400, status=403, caller="")
    engine, out = world.cutover()

    outcome = engine.run(YES)

    assert outcome.code == 0, outcome.message
    assert world.mode() == "strict" and world.param()["Version"] == 2
    # Only the flag changed: the documents differ by exactly that one line.
    before, after = original(world).splitlines(), world.param()["Value"].splitlines()
    assert [(a, b) for a, b in zip(before, after, strict=True) if a != b] == [
        ("    meshWritesEnforcement: advisory", "    meshWritesEnforcement: strict")]
    assert world.deployed_mode == "strict" and world.rollouts == 1
    assert world.lock() is None
    j = world.journal()
    assert j["state"] == DONE and j["previous_version"] == 1 and j["new_version"] == 2
    assert [s["step"] for s in j["steps"] if s["status"] == "done"] == [
        "preflight", "gate", "confirm", "flip", "redeploy", "probe", "proof", "watch", "finish"]
    assert j["sentinel"] == "verified"
    assert world.clock.slept >= 30 * 60, "the whole 30-minute window was watched"
    assert outcome.watch.mesh_write_requests == 6
    f = outcome.watch.forbidden
    assert f["unauthenticated"] == 1 and "legitimate" not in f and f["sentinel"] == 4 * 6
    assert f["probe"] == 1 + 4 * 3 * 6, "another run's probe line, and this run's probes (4 routes x 3 kinds x 6)"
    assert outcome.config_mode == "strict", "the CLI is told what config/production.yaml must now say"
    labels = world.clients["ssm"].get_parameter_history(Name=world.cfg.gateway.parameter_name)["Parameters"]
    assert [p.get("Labels") for p in labels] == [[f"cutover-{outcome.run_id}-before"],
                                                 [f"cutover-{outcome.run_id}-after"]]
    assert "watch: " in out.getvalue() and "left" in out.getvalue(), "a countdown was shown"


def test_already_strict_changes_nothing(world):
    engine, _ = world.cutover()
    assert engine.run(YES).code == 0
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 0 and outcome.state == "nothing_to_do"
    assert world.param()["Version"] == 2 and world.rollouts == 1


def test_dry_run_writes_nothing_at_all(world):
    engine, out = world.cutover()
    outcome = engine.run(Options(target="strict", dry_run=True))
    assert outcome.code == 0 and outcome.state == "dry_run"
    assert_untouched(world)
    assert world.journal() is None
    assert "plan: set tls.mtls.meshWritesEnforcement: advisory -> strict" in out.getvalue()


def test_advisory_is_the_way_back_without_a_gate(world):
    engine, _ = world.cutover()
    engine.run(YES)
    world.log(at=world.clock.now - 10, text="WARN mtls-advisory bypass")  # would make a gate RED
    engine, _ = world.cutover()
    outcome = engine.run(Options(target="advisory", yes=True))
    assert outcome.code == 0, outcome.message
    assert world.mode() == "advisory" and world.deployed_mode == "advisory"
    assert outcome.gate is None and outcome.watch is None and outcome.config_mode == "advisory"


# ---------------------------------------------------------------- the gate


@pytest.mark.parametrize("text", ['{"level":"warn","msg":"mtls-advisory: no client cert"}',
                                  "requireMtls=false for caller x", "X-Amzn-Mtls-Clientcert missing",
                                  "clientCert absent, serving anyway"])
def test_gate_red_changes_nothing(world, text):
    world.log(at=world.clock.now - 3600, text=text)
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 3 and not outcome.gate.green
    assert_untouched(world)
    assert world.journal() is None


def test_gate_route_counts_are_context_not_a_verdict(world):
    for i in range(3):  # enrolled callers, with certs: unaffected by strict
        world.log(at=world.clock.now - 100 - i, route="/v1/agent/task-runs", status=200, caller="sandbox-agents")
    engine, _ = world.cutover()
    verdict = engine.gate()
    assert verdict.green and verdict.counts.routes["/v1/agent/task-runs"] == 3


def test_gate_ignores_cold_start_timing_lines_and_old_events(world):
    for i in range(10):
        world.log(at=world.clock.now - 600 - i, text=f"[api/cold-start] mtls init took {i}ms")
    world.log(at=world.clock.now - 25 * 3600, text="mtls-advisory from two days ago")
    engine, _ = world.cutover()
    verdict = engine.gate()
    assert verdict.green, verdict.reasons
    assert verdict.counts.excluded == 10 and verdict.counts.patterns["mtls"] == 0


def test_gate_counts_patterns_in_one_paginated_pass(world):
    for i in range(30):
        world.log(at=world.clock.now - 100 - i, text=f"mtls-advisory bypass {i} /v1/agent/delegate")
    engine, _ = world.cutover()
    verdict = engine.gate()
    assert verdict.counts.patterns["mtls-advisory"] == 30 and verdict.counts.routes["/v1/agent/delegate"] == 30
    assert verdict.counts.patterns["mtls"] == 30 and verdict.counts.patterns["requireMtls"] == 0
    assert engine.aws.calls["filter_log_events"] == 1


def test_gate_red_for_an_unenrolled_unacknowledged_caller(config_dir, monkeypatch):
    monkeypatch.chdir(ROOT)
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace(f"      {FIXTURE_ACK}\n", "", 1))  # brainstorm-cli's
    use_strategy(config_dir, "rolling")
    with mock_aws():
        world = make_world(load("production", config_dir))
        engine, _ = world.cutover()
        outcome = engine.run(YES)
        assert outcome.code == 3
        (reason,) = [r for r in outcome.gate.reasons if "future caller" in r]
        assert reason.startswith("future caller 'brainstorm-cli' is neither enrolled nor acknowledged: set "
                                 "cutover.future_callers[0].enrolled: true (it has a CAF client cert) or "
                                 "cutover.future_callers[0].acknowledged: \"<why it is safe>\" in ")
        assert reason.endswith(f" in {path}"), "the file the operator edits (outside the cwd: its full path)"
        assert_untouched(world)


def test_the_shipped_production_config_leaves_the_caller_decision_to_the_operator(monkeypatch):
    """config/production.yaml as shipped: the ship log's three future callers, none enrolled or
    acknowledged, so the gate is RED naming each caller and the exact key to set, in that file."""
    monkeypatch.chdir(ROOT)
    cfg = load("production")
    assert [(c.name, c.enrolled, c.acknowledged) for c in cfg.cutover.future_callers] == [
        ("brainstorm-cli", False, None), ("test-harnesses", False, None), ("sandbox-agents", False, None)]
    text = (ROOT / "config" / "production.yaml").read_text(encoding="utf-8")
    for note in ("# Internal Brainstorm CLI (would need CAF enrollment automation)",
                 "# Test harnesses (pnpm e2e:local, k6 baselines — these are localhost; not affected)",
                 "# Sandbox agents in dev/staging environments"):
        assert note in text, "the seed's own notes ship with the callers"
    with mock_aws():
        world = make_world(cfg)
        engine, _ = world.cutover()
        outcome = engine.run(YES)
        assert outcome.code == 3 and outcome.state == "gate_red"
        assert [r for r in outcome.gate.reasons if "future caller" in r] == [
            f"future caller {name!r} is neither enrolled nor acknowledged: set cutover.future_callers[{i}].enrolled: "
            f"true (it has a CAF client cert) or cutover.future_callers[{i}].acknowledged: \"<why it is safe>\" in "
            "config/production.yaml"
            for i, name in enumerate(("brainstorm-cli", "test-harnesses", "sandbox-agents"))]
        assert dict(outcome.gate.callers) == dict.fromkeys(("brainstorm-cli", "test-harnesses", "sandbox-agents"),
                                                            "NOT ENROLLED")
        assert_untouched(world)


def test_gate_red_when_a_guard_alarm_is_already_firing(world):
    world.set_alarm(world.cfg.observability.alarm_5xx)
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 3 and "already in ALARM" in outcome.message
    assert_untouched(world)


def test_gate_red_while_a_deployment_is_in_progress(world):
    world.scripts = [["IN_PROGRESS"] * 100]
    world.clients["ecs"].update_service  # noqa: B018 (moto has one deployment; script a second)
    engine, _ = world.cutover()
    engine.aws.ecs.update_service(cluster=world.cfg.service.cluster_name, service=world.cfg.service.service_name,
                                  forceNewDeployment=True)
    outcome = engine.run(YES)
    assert outcome.code == 3 and "deployment is in progress" in outcome.message
    assert world.param()["Version"] == 1 and world.lock() is None


# ---------------------------------------------------------------- failures after the flip


def test_parameter_write_fails_production_unchanged(world):
    gateway = world.cfg.gateway.parameter_name

    def deny_gateway_writes(kwargs):
        return client_error("AccessDeniedException", "PutParameter") if kwargs["Name"] == gateway else None
    engine, _ = world.cutover(faults={"ssm": {"put_parameter": [deny_gateway_writes] * 20}})
    outcome = engine.run(YES)
    assert outcome.code == 4 and "flip failed" in outcome.message
    assert world.param()["Version"] == 1 and world.rollouts == 0, "nothing was deployed"
    assert world.lock() is None


def test_deployment_failed_restores_the_parameter_then_redeploys(world):
    world.scripts = [["IN_PROGRESS", "IN_PROGRESS", "FAILED"], ["IN_PROGRESS", "COMPLETED"]]
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert_restored(world, outcome)
    assert "FAILED" in outcome.message and world.rollouts == 2
    assert world.deployed_mode == "advisory"
    steps = [(s["step"], s["status"]) for s in world.journal()["steps"]]
    assert steps.index(("restore", "done")) < steps.index(("rollback-redeploy", "started")), \
        "the parameter is restored before ECS starts tasks that read it"


def test_rollout_timeout_rolls_back(world):
    world.scripts = [["IN_PROGRESS"] * 10_000]
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert_restored(world, outcome)
    assert "not COMPLETED after 30m" in outcome.message


def test_probe_mismatch_rolls_back(world):
    world.probe_override = {"no-cert": 200}  # strict deployed, yet a request without a cert is served
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    world.probe_override = None
    assert_restored(world, outcome)
    assert "no-cert" in outcome.message and "expected 403" in outcome.message


def test_legitimate_403_during_the_watch_rolls_back_at_once(world):
    world.scripts = [["COMPLETED"], ["COMPLETED"]]
    t_hit = world.clock.now + 7 * 60
    world.at(t_hit, lambda: world.log(at=t_hit, status=403, caller="brainstorm-cli", route="/v1/agent/sub-agents"))
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert_restored(world, outcome)
    assert "'brainstorm-cli' got 403 on /v1/agent/sub-agents" in outcome.message
    assert world.deployed_mode == "advisory"
    assert world.clock.now - t_hit <= world.cfg.cutover.poll + 1, "caught within one poll"
    assert outcome.rollback_probes and all(r.ok for r in outcome.rollback_probes)


def test_late_ingested_legitimate_event_is_still_caught(world):
    t_late = world.clock.now + 5 * 60
    # Written at t+6m with a timestamp of t+5m: behind the cursor when it arrives, inside the overlap.
    world.at(t_late + 60, lambda: world.log(at=t_late, status=403, caller="agent-x"))
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert_restored(world, outcome)
    assert "'agent-x' got 403" in outcome.message


def test_a_guard_alarm_during_the_watch_rolls_back(world):
    world.at(world.clock.now + 120, lambda: world.set_alarm(world.cfg.observability.alarm_unhealthy))
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4 and "unhealthy-hosts" in outcome.message


def test_probe_and_unauthenticated_403s_do_not_roll_back(world):
    t0 = world.clock.now
    for i in range(20):
        world.log(at=t0 + 60 + i, status=403, user_agent="brainstorm-cutover-probe/run-other", run_id="run-other")
        world.log(at=t0 + 90 + i, status=403, caller="")
        world.log(at=t0 + 95 + i, status=403, caller="someone", route="/v1/chat/completions")  # not a mesh write
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 0, outcome.message
    f = outcome.watch.forbidden
    assert f["unauthenticated"] == 20 and f["probe"] >= 20 and "legitimate" not in f


def test_a_throttling_burst_is_survived(world):
    throttle = [client_error("ThrottlingException", "x") for _ in range(4)]
    engine, _ = world.cutover(faults={
        "ssm": {"get_parameter": list(throttle), "put_parameter": [None, None, *throttle]},
        "ecs": {"describe_services": list(throttle), "update_service": list(throttle)},
        "logs": {"filter_log_events": list(throttle)},
    })
    outcome = engine.run(YES)
    assert outcome.code == 0, outcome.message
    assert engine.aws.retries == 20 and world.mode() == "strict"


def test_throttling_beyond_the_retry_budget_fails_the_step_and_rolls_back(world):
    # 8 attempts is the budget: the forward redeploy gives up, the rollback's redeploy goes through.
    engine, _ = world.cutover(faults={"ecs": {"update_service": [client_error("ThrottlingException", "x")] * 8}})
    outcome = engine.run(YES)
    assert_restored(world, outcome)
    assert "redeploy failed: ClientError" in outcome.message and "ThrottlingException" in outcome.message


def test_throttling_that_never_ends_fails_loudly_with_exit_5(world):
    engine, _ = world.cutover(faults={"ecs": {"update_service": [client_error("ThrottlingException", "x")] * 99}})
    outcome = engine.run(YES)
    assert outcome.code == 5 and world.param()["Value"] == original(world), "the parameter was still restored"
    assert outcome.manual


# ---------------------------------------------------------------- lock


def test_a_concurrent_run_is_refused_with_who_holds_the_lock(world):
    world.scripts = [["IN_PROGRESS"] * 3 + ["COMPLETED"]]
    first, _ = world.cutover()
    seen = {}

    def second_run() -> None:
        other, _ = world.cutover()
        seen["outcome"] = other.run(YES)
    world.at(world.clock.now + 1, second_run)
    assert first.run(YES).code == 0
    refused = seen["outcome"]
    assert refused.code == 1 and refused.state == "unfinished_run"
    assert "is deploying" in refused.message and "arn:aws:sts" in refused.message, "says who and where"


def stale_lock(world, run_id: str, ttl: float = 3600) -> None:
    """A lock left by a dead process (same SSM, its own TTL)."""
    engine, _ = world.cutover()
    Lock(engine.aws, world.cfg.lock_parameter, ttl=ttl, clock=world.clock).acquire(run_id=run_id, operator="arn:old")


def test_break_lock_only_after_expiry(world):
    stale_lock(world, "stale")
    engine, _ = world.cutover()
    outcome = engine.run(Options(target="strict", yes=True, break_lock=True))
    assert outcome.state == "locked" and "expires at" in outcome.message
    world.clock.now += 3601
    engine, _ = world.cutover()
    assert engine.run(Options(target="strict", yes=True)).state == "locked"
    assert "--break-lock" in engine.run(Options(target="strict", yes=True)).message
    assert engine.run(Options(target="strict", yes=True, break_lock=True)).code == 0


def test_lock_expiry_is_judged_on_awss_clock_not_the_laptops(world):
    stale_lock(world, "stale")
    engine, _ = world.cutover()
    engine.clock = engine.lock.clock = lambda: world.clock.now + 5 * 3600  # a laptop 5 h fast
    outcome = engine.run(Options(target="strict", yes=True, break_lock=True))
    assert outcome.state == "locked", "AWS says the lock is young: a skewed laptop cannot break it"


# ---------------------------------------------------------------- crashes and recovery


def crash_after(engine, step: str, status: str = "done") -> None:
    real = engine.journal.save

    def save(journal) -> None:
        real(journal)
        last = journal.steps[-1]
        if last.step == step and last.status == status:
            raise Crash(f"killed after {step} {status}")
    engine.journal.save = save


AFTER = {"confirm": "flipping", "flip": "deploying", "redeploy": "probing", "probe": "probing", "proof": "watching",
         "watch": "done"}


@pytest.mark.parametrize("step", ("confirm", *FORWARD_STEPS))
def test_killed_after_each_step_status_tells_the_truth_and_rollback_restores(world, step):
    engine, _ = world.cutover()
    crash_after(engine, step)
    with pytest.raises(Crash):
        engine.run(YES)

    fresh, _ = world.cutover()  # another machine: nothing shared but AWS
    status = fresh.status()
    view = status.status
    assert view.run.state == AFTER[step] and view.run.last_step.step == step
    assert view.mode == ("advisory" if step == "confirm" else "strict")
    assert view.lock.body.run_id == status.run_id
    assert f"is {AFTER[step]} after {step}" in status.message

    outcome = fresh.rollback(Options())
    assert_restored(world, outcome)
    assert world.deployed_mode == "advisory" and outcome.config_mode == "advisory"
    # After the flip a task may have started (scale-out, replacement) with the new value even before
    # our redeploy: the rollback redeploys whenever the parameter had changed.
    assert world.rollouts == {"confirm": 0, "flip": 1}.get(step, 2)


@pytest.mark.parametrize("step", ("confirm", *FORWARD_STEPS[:4]))
def test_killed_after_each_step_resume_completes_the_run(world, step):
    engine, _ = world.cutover()
    crash_after(engine, step)
    with pytest.raises(Crash):
        engine.run(YES)
    fresh, _ = world.cutover()
    outcome = fresh.resume(Options(yes=True))
    assert outcome.code == 0, outcome.message
    assert world.mode() == "strict" and world.deployed_mode == "strict"
    assert world.lock() is None and world.journal()["state"] == DONE
    assert world.param()["Version"] == 2, "resume did not flip twice"


def test_a_run_killed_between_its_last_write_and_the_release_does_not_block_the_next(world):
    engine, _ = world.cutover()
    crash_after(engine, "finish")
    with pytest.raises(Crash):
        engine.run(YES)
    assert world.lock() is not None and world.journal()["state"] == DONE
    engine, _ = world.cutover()
    assert engine.run(Options(target="advisory", yes=True)).code == 0, "the finished run's lock guarded nothing"


def test_killed_in_the_middle_of_the_flip_is_recoverable(world):
    engine, _ = world.cutover(faults={"ssm": {"label_parameter_version": [Crash("killed after the write")]}})
    with pytest.raises(Crash):
        engine.run(YES)
    fresh, _ = world.cutover()
    view = fresh.status().status
    assert view.mode == "strict" and view.run.state == "flipping"
    assert (view.run.last_step.step, view.run.last_step.status) == ("flip", "started")
    assert_restored(world, fresh.rollback(Options()))


ROLLBACK_POINTS = [("rollback", "started"), ("restore", "done"), ("rollback-redeploy", "started"),
                   ("rollback-redeploy", "done"), ("rollback-probe", "done")]


@pytest.mark.parametrize("command", ["resume", "rollback"])
@pytest.mark.parametrize("point", ROLLBACK_POINTS, ids=lambda p: "-".join(p))
def test_killed_inside_the_rollback_the_next_process_finishes_the_rollback(world, point, command):
    world.scripts = [["FAILED"]]  # the forward deployment fails: rollback
    engine, _ = world.cutover()
    crash_after(engine, *point)
    with pytest.raises(Crash):
        engine.run(YES)
    assert world.journal()["state"] == "rolling_back"

    fresh, _ = world.cutover()
    refused = fresh.run(YES)
    assert refused.code == 1 and refused.state == "unfinished_run" and "rollback --env production" in \
        refused.next_commands[0], "a new mtls refuses and names the next command"
    fresh, _ = world.cutover()
    outcome = getattr(fresh, command)(Options(yes=True))
    assert_restored(world, outcome)
    assert outcome.state == "rolled_back" and outcome.config_mode == "advisory", "never strict, never done"
    assert world.deployed_mode == "advisory"
    done = [s["step"] for s in world.journal()["steps"] if s["status"] == "done"]
    assert "watch" not in done and "finish" not in done, "never the forward path again"


def test_ctrl_c_inside_the_rollback_leaves_a_rollback_to_finish(world):
    world.scripts = [["FAILED"], ["IN_PROGRESS"] * 3 + ["COMPLETED"]]
    engine, _ = world.cutover(interactive=True, answers="")

    def interrupt() -> None:
        raise KeyboardInterrupt
    world.at(world.clock.now + 2 * float(world.cfg.cutover.poll), interrupt)
    outcome = engine.run(YES)
    assert outcome.code == 5 and outcome.state == "rolling_back" and "rollback interrupted" in outcome.message
    assert world.lock() is not None and world.journal()["state"] == "rolling_back"
    fresh, _ = world.cutover()
    assert_restored(world, fresh.resume(Options(yes=True)))


def test_interrupted_watch_non_interactive_keeps_the_lock_and_says_how_to_go_on(world):
    def interrupt() -> None:
        raise KeyboardInterrupt
    world.at(world.clock.now + 300, interrupt)
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 1 and outcome.state == INTERRUPTED and "interrupted during watch" in outcome.message
    assert any("resume" in m for m in outcome.next_commands) and any("rollback" in m for m in outcome.next_commands)
    assert world.lock()["run_id"] == outcome.run_id and world.mode() == "strict"
    fresh, _ = world.cutover()
    resumed = fresh.resume(Options(yes=True))
    assert resumed.code == 0 and world.journal()["state"] == DONE and world.lock() is None


def test_interrupted_watch_interactive_can_roll_back(world):
    def interrupt() -> None:
        raise KeyboardInterrupt
    world.at(world.clock.now + 300, interrupt)
    engine, _ = world.cutover(interactive=True, answers="r\n")
    outcome = engine.run(Options(target="strict", yes=True))
    assert_restored(world, outcome)


def test_rollback_that_fails_exits_5_with_the_manual_commands(world):
    world.scripts = [["FAILED"], ["FAILED"]]
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 5 and outcome.state == ROLLBACK_FAILED
    assert "ROLLBACK FAILED" in outcome.message
    assert any("aws ssm put-parameter" in c for c in outcome.manual)
    assert any("--force-new-deployment" in c for c in outcome.manual)
    assert world.lock() is not None, "the lock stays so no one starts another cutover meanwhile"
    assert world.journal()["state"] == ROLLBACK_FAILED
    # The restore itself happened before the redeploy failed: the parameter is safe.
    assert world.param()["Value"] == original(world)
    # And once ECS behaves again, `rollback` finishes the job from any machine.
    fresh, _ = world.cutover()
    done = fresh.rollback(Options())
    assert done.code == 4 and world.deployed_mode == "advisory" and world.lock() is None


def test_rollback_with_nothing_on_record(world):
    engine, _ = world.cutover()
    rolled, resumed = engine.rollback(Options()), engine.resume(Options())
    assert (rolled.state, rolled.code) == ("nothing_to_roll_back", 0)
    assert (resumed.state, resumed.code) == ("nothing_to_resume", 0)


def test_typed_confirmation_must_name_the_environment(world):
    engine, _ = world.cutover(interactive=True, answers="yes\n")
    outcome = engine.run(Options(target="strict"))
    assert outcome.state == "not_confirmed" and outcome.code == 1
    assert_untouched(world)
    engine, _ = world.cutover(interactive=True, answers="production\n")
    assert engine.run(Options(target="strict")).code == 0 and world.mode() == "strict"


def test_report_reads_like_the_ship_log(world):
    from cutover.report import markdown, to_json
    world.log(at=world.clock.now - 600, text="[api/cold-start] mtls ready")
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    md = markdown(outcome)
    assert '| "mtls" (excl. [api/cold-start]) | 0 |' in md and "| /v1/agent/delegate | 0 |" in md
    assert "| flip | done |" in md and "| watch | done |" in md and "## Probes" in md
    assert "No mesh-write traffic from callers" in md, "a quiet window is called out"
    assert json.loads(to_json(outcome))["exit_code"] == 0


def test_rollback_from_another_machine_during_the_watch_takes_over_the_run(world):
    seen = {}

    def operator_rolls_back() -> None:
        other, _ = world.cutover()
        seen["rollback"] = other.rollback(Options())
    world.at(world.clock.now + 600, operator_rolls_back)
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert seen["rollback"].code == 4
    assert outcome.code == 1 and outcome.state == "taken_over", outcome.message
    assert world.journal()["state"] == ROLLED_BACK and world.mode() == "advisory" and world.lock() is None
    assert outcome.config_mode is None, "the first run did not finish: it asks for no config change"


def test_journal_write_failure_before_the_flip_changes_nothing(world):
    journal = world.cfg.journal_parameter
    calls = {"n": 0}

    def fail_second_journal_write(kwargs):
        if kwargs["Name"] == journal:
            calls["n"] += 1
            if calls["n"] == 2:  # "flip started"
                return client_error("AccessDeniedException", "PutParameter")
        return None
    engine, _ = world.cutover(faults={"ssm": {"put_parameter": [fail_second_journal_write] * 30}})
    outcome = engine.run(YES)
    assert world.param()["Version"] == 1 and world.rollouts == 0 and world.lock() is None
    assert outcome.code == 4 and "restore" in str(outcome.journal.steps)


def test_flip_keeps_the_parameter_type_and_tier(world):
    ssm = world.clients["ssm"]
    name = world.cfg.gateway.parameter_name
    ssm.put_parameter(Name=name, Value=world.param()["Value"], Type="String", Tier="Advanced", Overwrite=True)
    engine, _ = world.cutover()
    assert engine.run(YES).code == 0
    (meta,) = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert meta["Tier"] == "Advanced" and meta["Type"] == "String" and world.mode() == "strict"


def test_a_caller_field_that_is_never_set_makes_the_watch_blind_and_rolls_back(config_dir):
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace("  caller_field: caller ", "  caller_field: principal "))
    use_strategy(config_dir, "rolling")
    with mock_aws():
        world = make_world(load("production", config_dir))
        engine, _ = world.cutover()
        outcome = engine.run(YES)
        assert outcome.code == 4 and "the watch is blind" in outcome.message
        assert "no 'principal'" in outcome.message and "access_log.caller_field" in outcome.message
        assert world.mode() == "advisory" and world.lock() is None


def test_a_hundred_versions_with_a_labelled_oldest_do_not_block_the_flip_or_the_rollback(world):
    ssm = world.clients["ssm"]
    name = world.cfg.gateway.parameter_name
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["cutover-ancient-before"])
    value = world.param()["Value"]
    for _ in range(99):  # versions 2..100, all advisory
        ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
    world.scripts = [["FAILED"], ["COMPLETED"]]
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4, outcome.message
    assert world.param()["Version"] == 102 and world.mode() == "advisory"


def test_status_explains_a_lock_whose_run_changed_nothing(world):
    engine, _ = world.cutover()
    engine.lock.acquire(run_id="run-gating", operator="arn:aws:sts::1:assumed-role/ops/alice")
    message = engine.status().message
    assert "lock held by run run-gating (arn:aws:sts::1:assumed-role/ops/alice), which has not changed anything" in message


# ---------------------------------------------------------------- one watch from the flip (issue 12)


def test_a_legitimate_403_during_the_redeploy_wait_rolls_back_without_waiting_for_the_rollout(world):
    world.scripts = [["IN_PROGRESS"] * 40 + ["COMPLETED"], ["COMPLETED"]]  # a 10-minute forward rollout
    t_hit = world.clock.now + 60  # the first new task took traffic; the rollout is far from done
    world.at(t_hit, lambda: world.log(at=t_hit, status=403, caller="brainstorm-cli"))
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert_restored(world, outcome)
    assert "'brainstorm-cli' got 403" in outcome.message
    assert world.clock.now - t_hit <= world.cfg.cutover.poll + 1, "acted within one poll, mid-rollout"
    steps = [(s["step"], s["status"]) for s in world.journal()["steps"]]
    assert ("redeploy", "done") not in steps and ("probe", "started") not in steps, "never waited for the rollout"
    assert world.rollouts == 2, "the rollback's deployment superseded the one in flight"
    j = world.journal()
    assert j["flipped_at"] is not None and j["first_strict_task"] is not None and j["watch_started"] is None


def test_a_legitimate_403_during_the_probes_rolls_back(world):
    engine, _ = world.cutover()
    real = engine.probe_fn
    t = {}

    def slow_probe(spec, **kw):  # the caller's 403 lands while the probe round runs
        t["hit"] = world.clock.now
        world.log(at=world.clock.now, status=403, caller="brainstorm-cli", route="/v1/agent/task-runs")
        return real(spec, **kw)
    engine.probe_fn = slow_probe
    outcome = engine.run(YES)
    assert_restored(world, outcome)
    assert "'brainstorm-cli' got 403 on /v1/agent/task-runs" in outcome.message
    assert world.journal()["watch_started"] is None, "it never reached the window"


def test_the_window_counts_from_the_proof_and_the_watch_from_the_flip(world):
    world.scripts = [["IN_PROGRESS"] * 8 + ["COMPLETED"]]
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 0
    j = world.journal()
    assert j["flipped_at"] <= j["first_strict_task"] < j["watch_started"]
    assert j["watch_until"] - j["watch_started"] == 30 * 60
    assert outcome.watch.watched == pytest.approx(30 * 60, abs=1)


def test_a_403_timestamped_in_the_window_but_ingested_after_it_is_still_acted_on(world):
    engine, _ = world.cutover()
    def late() -> None:  # timestamped in the window's last seconds, ingested after it closed
        j = world.journal()
        world.log(at=j["watch_until"] - 2, status=403, caller="brainstorm-cli")
    hooks = {"armed": False}

    def arm(now: float) -> None:
        j = world.journal()
        if j and j.get("watch_until") and now >= j["watch_until"] + 30 and not hooks["armed"]:
            hooks["armed"] = True
            late()
    world.clock.hooks.append(arm)
    outcome = engine.run(YES)
    assert outcome.code == 4 and "'brainstorm-cli' got 403" in outcome.message, outcome.message
    assert world.mode() == "advisory"


# ---------------------------------------------------------------- the watch proves it can see (issue 9)


def test_a_task_whose_stream_shows_no_strict_403_is_named_and_rolled_back(world):
    world.silent_tasks = {"01" + "d" * 30}  # its lines never arrive (it read the old value, say)
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4 and f"task(s) 01{'d' * 30} show no strict 403" in outcome.message
    assert world.mode() == "advisory"


def test_after_a_rollback_the_tools_own_lines_do_not_turn_the_next_gate_red(world):
    world.scripts = [["COMPLETED"], ["COMPLETED"]]
    t = world.clock.now + 120
    world.at(t, lambda: world.log(at=t, status=403, caller="brainstorm-cli"))
    engine, _ = world.cutover()
    assert engine.run(YES).code == 4
    # The caller was the reason; it has been fixed since. The probes' and sentinel's lines remain.
    engine, _ = world.cutover()
    verdict = engine.gate()
    assert verdict.counts.own > 50 and verdict.green, verdict.reasons
    assert verdict.counts.patterns["mtls"] == 0 and verdict.counts.routes["/v1/agent/delegate"] == 1, \
        "only the caller's own line counts as route traffic"
