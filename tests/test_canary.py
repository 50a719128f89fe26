"""ECS-native canary on moto with a fake clock: the service deployment is scripted (moto implements
no service-deployment APIs); everything else is moto. Production's config deploys canary 10 %."""

from __future__ import annotations

import pytest
from moto import mock_aws

from cutover.engine import Options
from envconfig import load
from tests.fakes import ScriptedCanary, canary_script, make_world

YES = Options(target="strict", yes=True)


@pytest.fixture
def world(config_dir):
    with mock_aws():
        w = make_world(load("production", config_dir))
        assert w.cfg.service.deployment.strategy == "canary"
        w.canary = ScriptedCanary(w)
        yield w


def v1(world) -> str:
    return world.clients["ssm"].get_parameter(Name=f"{world.cfg.gateway.parameter_name}:1")["Parameter"]["Value"]


def test_a_clean_canary_probes_green_through_the_test_listener_and_watches_through_the_bake(world):
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 0, outcome.message
    assert world.mode() == "strict" and world.deployed_mode == "strict" and world.lock() is None
    j = world.journal()
    assert j["strategy"] == "canary" and j["service_deployment"].endswith("/sd1")
    forward = [u for u in world.probed_urls]
    assert forward and all(u.endswith(":8443") for u in forward), "probes reach only the new revision"
    assert world.canary.deployments[0]["status"] == "SUCCESSFUL", "the watch lasted until ECS finished the bake"
    assert j["first_strict_task"] is not None, "when production traffic first reached strict tasks"
    assert world.rollouts == 1 and world.canary.stops == 0


def test_a_legitimate_403_in_the_canary_stops_the_deployment_first_and_redeploys_nothing(world):
    t_hit = world.clock.now + 3 * 60
    world.at(t_hit, lambda: world.log(at=t_hit, status=403, caller="brainstorm-cli"))
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4, outcome.message
    assert world.canary.stops == 1 and world.rollouts == 1, "StopServiceDeployment(ROLLBACK), no new deployment"
    assert world.param()["Value"] == v1(world) and world.deployed_mode == "advisory"
    steps = [(s["step"], s["status"]) for s in world.journal()["steps"]]
    assert steps.index(("stop-deployment", "done")) < steps.index(("restore", "done")), \
        "callers are served again before anything else is done"
    assert outcome.rollback_probes and all(r.ok for r in outcome.rollback_probes)
    assert not any(u.endswith(":8443") for u in world.probed_urls[-1:]), "verified through production"
    assert world.clock.now - t_hit <= 3 * world.cfg.cutover.poll


def test_a_canary_that_moves_past_its_share_before_the_probes_pass_is_stopped(world):
    world.canary.scripts = [[("TEST_TRAFFIC_SHIFT", 0, 100, "IN_PROGRESS"),
                             *[("PRODUCTION_TRAFFIC_SHIFT", 100, 100, "IN_PROGRESS")] * 50]]
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4 and "before its probes passed (canary limit 10%)" in outcome.message
    assert world.canary.stops == 1 and world.mode() == "advisory" and world.deployed_mode == "advisory"


def test_ecs_rolling_back_on_its_own_during_the_bake_is_followed_by_the_restore(world):
    world.canary.scripts = [canary_script(canary_polls=3, bake_polls=5)[:-1]
                            + [("BAKE_TIME", 0, 0, "ROLLBACK_SUCCESSFUL")]]
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4 and "ROLLBACK_SUCCESSFUL" in outcome.message and "alarm" in outcome.message
    assert world.canary.stops == 0 and world.rollouts == 1, "already rolled back by ECS: nothing to stop"
    assert world.param()["Value"] == v1(world) and world.lock() is None


def test_rolling_back_a_finished_canary_redeploys_because_the_old_tasks_are_gone(world):
    engine, _ = world.cutover()
    assert engine.run(YES).code == 0
    fresh, out = world.cutover()
    outcome = fresh.rollback(Options())
    assert outcome.code == 4, outcome.message
    assert "the old revision is gone" in out.getvalue()
    assert world.rollouts == 2 and world.deployed_mode == "advisory" and world.mode() == "advisory"


def test_a_stop_that_fails_does_not_skip_the_restore(world):
    from tests.fakes import client_error

    t_hit = world.clock.now + 3 * 60
    world.at(t_hit, lambda: world.log(at=t_hit, status=403, caller="brainstorm-cli"))
    world.canary.stop_service_deployment = lambda **kw: (_ for _ in ()).throw(  # refused, every time
        client_error("InvalidParameterException", "StopServiceDeployment"))
    engine, out = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4, outcome.message
    assert world.param()["Value"] == v1(world), "restored although the stop failed"
    assert "could not stop the service deployment" in out.getvalue() and world.rollouts == 2
