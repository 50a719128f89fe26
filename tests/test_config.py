"""config/<env>.yaml: every kind of bad input is one line naming the file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

import envconfig as config
from envconfig import ConfigError, load, parse_duration


def edit(config_dir: Path, env: str, old: str, new: str) -> None:
    path = config_dir / f"{env}.yaml"
    text = path.read_text()
    assert old in text, f"fixture text {old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def error_for(config_dir: Path, env: str = "production") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(env, config_dir)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    assert message.startswith(str(config_dir / f"{env}.yaml")), message
    assert "fix:" in message
    return info.value


def test_every_shipped_environment_loads_with_ship_log_values():
    envs = {c.environment: c for c in config.load_all()}
    assert set(envs) == {"production", "staging", "sandbox"}
    prod = envs["production"]
    assert prod.region == "us-east-1"
    assert prod.service.cluster_name == "brainstorm-router-production"
    assert prod.service.service_name == "brainstorm-router-production-fargate"
    assert prod.service.desired_count == 2 and prod.scaling.min_tasks == 2
    assert prod.database.pool_size == 200
    assert prod.gateway.mode == "advisory"
    assert prod.cutover.watch == 30 * 60 and prod.cutover.gate.lookback == 24 * 3600


def test_missing_key(config_dir):
    edit(config_dir, "production", "  cpu: 1024\n", "")
    err = error_for(config_dir)
    assert err.key == "service.cpu" and err.problem == "missing key"


def test_wrong_type(config_dir):
    edit(config_dir, "production", "desired_count: 2", "desired_count: two")
    err = error_for(config_dir)
    assert err.key == "service.desired_count" and "expected int" in err.problem


def test_boolean_is_not_a_count(config_dir):
    edit(config_dir, "production", "desired_count: 2", "desired_count: yes")
    assert error_for(config_dir).key == "service.desired_count"


def test_unknown_key_suggests_the_close_one(config_dir):
    edit(config_dir, "production", "  pool_size: 200", "  pool_sise: 200")
    err = error_for(config_dir)
    assert err.key == "database.pool_sise" and err.problem == "unknown key"
    assert "pool_size" in err.fix


def test_bad_enum_value(config_dir):
    edit(config_dir, "production", "meshWritesEnforcement: advisory", "meshWritesEnforcement: enforce")
    err = error_for(config_dir)
    assert err.key == "gateway.document.tls.mtls.meshWritesEnforcement"
    assert "advisory, strict" in err.fix


def test_yaml_syntax_error_names_the_line(config_dir):
    edit(config_dir, "production", "  cpu: 1024\n", "  cpu: [1024\n")
    err = error_for(config_dir)
    assert "YAML syntax error at line" in err.problem


def test_unknown_environment_lists_known_ones(config_dir):
    with pytest.raises(ConfigError) as info:
        load("prod", config_dir)
    assert "unknown environment 'prod'" in str(info.value)
    assert "production, sandbox, staging" in str(info.value)


def test_bad_duration(config_dir):
    edit(config_dir, "production", "  watch: 30m", "  watch: thirty minutes")
    assert error_for(config_dir).key == "cutover.watch"


def test_the_pool_fix_never_suggests_a_max_tasks_below_min_tasks(config_dir):
    edit(config_dir, "production", "  pool_size: 200", "  pool_size: 900")  # 900 x 8 peak tasks + 100 > 2000
    err = error_for(config_dir)
    assert "max_tasks to" not in err.fix, "1 task would be below min_tasks 2"
    assert "pool_size to 237" in err.fix  # (2000 - 100) // (4 x 200 %)


def test_pool_that_could_exhaust_the_database_is_refused_with_numbers_and_options(config_dir):
    edit(config_dir, "production", "  max_tasks: 4", "  max_tasks: 6")
    err = error_for(config_dir)
    assert err.key == "database.pool_size"
    # 200 x (6 x 200%) + 100 reserved = 2500 > 2000
    assert "= 2500 > max_connections 2000" in err.problem
    assert "RDS Proxy" in err.fix and "max_tasks to 4" in err.fix


def test_request_scaling_target_is_derived_from_the_measured_capacity():
    """R20: ~3-4 RPS across 2 tasks at pool 50 is ~1.75/s (~105/min) per task at saturation; the
    old hand-written 180/min per target could never be reached before saturation."""
    for cfg in config.load_all():
        c = cfg.scaling.capacity
        assert c.rps_per_task == 1.75 and c.headroom_percent == 30 and "R20" in c.source
        assert cfg.scaling.requests_per_target_per_minute == 73  # floor(1.75 x 60 x 0.7 = 73.5)
        assert cfg.scaling.requests_per_target_per_minute < c.rps_per_task * 60, "below saturation"


def test_a_new_measurement_changes_the_target(config_dir):
    """3.5/s per task with 20 % headroom -> floor(3.5 x 60 x 0.8) = 168/min (the stack uses this value;
    test_stack checks both request policies carry the derived 73 of the shipped configs)."""
    edit(config_dir, "production", "rps_per_task: 1.75", "rps_per_task: 3.5")
    edit(config_dir, "production", "headroom_percent: 30", "headroom_percent: 20")
    assert load("production", config_dir).scaling.requests_per_target_per_minute == 168


@pytest.mark.parametrize("old,new,key,says", [
    ("rps_per_task: 1.75", "rps_per_task: 0", "scaling.capacity.rps_per_task", "ONE task"),
    ("rps_per_task: 1.75", "rps_per_task: 0.01", "scaling.capacity.rps_per_task", "per SECOND"),
    ("headroom_percent: 30", "headroom_percent: 0", "scaling.capacity.headroom_percent", "below the ceiling"),
    ("headroom_percent: 30", "headroom_percent: 95", "scaling.capacity.headroom_percent", "10..90"),
    ("    headroom_percent: 30\n", "", "scaling.capacity.headroom_percent", "add 'headroom_percent"),
])
def test_capacity_problems_name_the_key_and_the_fix(config_dir, old, new, key, says):
    edit(config_dir, "production", old, new)
    err = error_for(config_dir)
    assert err.key == key and says in str(err)


def test_capacity_needs_a_source(config_dir):
    path = config_dir / "production.yaml"
    lines = [('    source: ""' if line.startswith("    source:") else line) for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    err = error_for(config_dir)
    assert err.key == "scaling.capacity.source" and "which measurement" in err.fix


def test_the_hand_written_request_target_is_refused_with_what_replaced_it(config_dir):
    edit(config_dir, "production", "  scale_out_cooldown_seconds: 60",
         "  requests_per_target_per_minute: 180\n  scale_out_cooldown_seconds: 60")
    err = error_for(config_dir)
    assert err.key == "scaling.requests_per_target_per_minute" and err.problem == "no longer set by hand"
    assert "derived from scaling.capacity" in err.fix


def test_environment_name_must_match_file(config_dir):
    edit(config_dir, "staging", "environment: staging", "environment: production")
    assert error_for(config_dir, "staging").key == "environment"


@pytest.mark.parametrize("old, new, key", [
    ("    lookback: 24h", "    lookback: 1s", "cutover.gate.lookback"),
    ('    patterns: ["mtls-advisory", "requireMtls", "clientCert", "X-Amzn-Mtls", "mtls"]', "    patterns: []",
     "cutover.gate.patterns"),
    ('    patterns: ["mtls-advisory", "requireMtls", "clientCert", "X-Amzn-Mtls", "mtls"]', '    patterns: ["mtls"]',
     "cutover.gate.patterns"),
    ("    lookback: 24h", "    lookback: 24h\n    lookback: 1s", "lookback"),   # YAML would keep the last one
])
def test_config_that_would_switch_the_gate_off_is_refused(config_dir, old, new, key):
    edit(config_dir, "production", old, new)
    err = error_for(config_dir)
    assert err.key == key, err


def test_a_yaml_merge_key_is_refused_with_what_to_do(config_dir):
    edit(config_dir, "production", "  poll: 15s", "  <<: {poll: 15s}")
    err = error_for(config_dir)
    assert err.key == "<<" and err.fix == "write the keys out in full"


def test_a_duplicate_key_anywhere_is_refused_with_its_line(config_dir):
    edit(config_dir, "production", "  poll: 15s", "  poll: 15s\n  poll: 1s")
    err = error_for(config_dir)
    assert err.key == "poll" and "duplicate key at line" in err.problem and err.fix == "keep one of them"


def test_a_file_copied_from_another_environment_says_so_before_anything_else(config_dir):
    """The copy's own errors (here: a placeholder-free key it lacks) would only send the operator astray."""
    (config_dir / "qa.yaml").write_text((config_dir / "staging.yaml").read_text().replace("  poll:", "  pol:"))
    err = error_for(config_dir, "qa")
    assert (err.key, err.problem, err.fix) == ("environment", "says 'staging' but the file is qa.yaml",
                                               "set environment: qa")


@pytest.mark.parametrize("route", ["v1/agent/delegate", "/v1/agent/ delegate", "/"])
def test_gate_routes_must_be_paths(config_dir, route):
    edit(config_dir, "production", "routes: [/v1/agent/delegate,", f"routes: [{route!r},")
    err = error_for(config_dir)
    assert err.key == "cutover.gate.routes[0]" and "e.g. /v1/agent/delegate" in err.fix


def test_retention_must_be_a_cloudwatch_value(config_dir):
    edit(config_dir, "production", "log_retention_days: 90", "log_retention_days: 91")
    assert error_for(config_dir).key == "observability.log_retention_days"


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("15s", 15), ("24h", 86400),
                                          ("1h30m", 5400), (45, 45), ("250ms", 0.25)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "m", "-5", True])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


# ---------------------------------------------------------------- service.request_timeout and service.deployment


def test_deployment_settings_the_tool_reads():
    prod = load("production").service
    assert prod.request_timeout == 60 and isinstance(prod.request_timeout, config.Seconds)
    d = prod.deployment
    assert (d.strategy, d.canary_percent, d.canary_bake, d.bake, d.test_listener_port) == ("canary", 10, 300, 1800, 8443)
    assert isinstance(d.canary_bake, config.Seconds) and isinstance(d.bake, config.Seconds)
    assert d.bake >= load("production").cutover.watch
    assert (prod.deregistration_delay_seconds, prod.stop_timeout_seconds, prod.idle_timeout_seconds) == (70, 70, 70)
    assert load("sandbox").service.deployment.strategy == "rolling"


@pytest.mark.parametrize("old, new, key, problem", [
    ("strategy: canary ", "strategy: linear ", "service.deployment.strategy", "'linear' is not allowed"),
    ("canary_percent: 10 ", "canary_percent: 60 ", "service.deployment.canary_percent", "60 is out of range"),
    ("canary_percent: 10 ", "canary_percent: 0 ", "service.deployment.canary_percent", "0 is out of range"),
    ("canary_percent: 10 ", "canary_percent: 2.55 ", "service.deployment.canary_percent", "2.55 is out of range"),
    ("canary_bake: 5m ", "canary_bake: 90s ", "service.deployment.canary_bake", "1m30s is not a whole number"),
    ("canary_bake: 5m ", "canary_bake: 0s ", "service.deployment.canary_bake", "0s is out of range"),
    ("bake: 30m   ", "bake: 30m30s ", "service.deployment.bake", "30m30s is not a whole number of minutes"),
    ("bake: 30m   ", "bake: 25h ", "service.deployment.bake", "25h is out of range"),
    ("test_listener_port: 8443", "test_listener_port: 443", "service.deployment.test_listener_port",
     "443 cannot be the test listener's port"),
    ("test_listener_port: 8443", "test_listener_port: 70000", "service.deployment.test_listener_port",
     "70000 cannot be"),
    ("    test_listener_port: 8443", "", "service.deployment.test_listener_port", "missing key (strategy canary"),
    ("request_timeout: 60s", "request_timeout: 1.5s", "service.request_timeout", "not a whole positive number"),
    ("request_timeout: 60s", "request_timeout: 111s", "service.request_timeout",
     "1m51s + 10s shutdown margin = 121s > Fargate's 120s stopTimeout maximum"),
])
def test_bad_deployment_settings_are_one_line_with_the_fix(config_dir, old, new, key, problem):
    edit(config_dir, "production", old, new)
    err = error_for(config_dir)
    assert err.key == key and problem in err.problem, str(err)


def test_canary_keys_on_a_rolling_environment_are_refused(config_dir):
    edit(config_dir, "sandbox", "    strategy: rolling\n", "    strategy: rolling\n    canary_percent: 10\n")
    err = error_for(config_dir, "sandbox")
    assert err.key == "service.deployment.canary_percent" and "only applies to strategy canary" in err.problem


def test_blue_green_needs_no_canary_keys_but_refuses_them(config_dir):
    edit(config_dir, "staging", "strategy: canary", "strategy: blue_green")
    err = error_for(config_dir, "staging")
    assert err.key == "service.deployment.canary_percent" and "not blue_green" in err.problem
    assert "remove it, or set strategy: canary" in err.fix


def test_the_bake_may_equal_the_watch_and_tiny_sandbox_numbers_load(config_dir):
    edit(config_dir, "production", "bake: 30m   ", "bake: 30m   ")
    assert load("production", config_dir).service.deployment.bake_minutes == 30
    edit(config_dir, "sandbox", "    strategy: rolling\n", "    strategy: canary\n    canary_percent: 10\n"
         "    canary_bake: 1m\n    bake: 1m\n    test_listener_port: 8443\n")
    d = load("sandbox", config_dir).service.deployment
    assert (d.canary_bake_minutes, d.bake_minutes) == (1, 1)


# ---------------------------------------------------------------- CHANGE-ME placeholders


def test_the_loader_knows_the_placeholder_marker_and_names_the_keys_that_hold_it():
    """Invented values are marked, not hidden: production and staging load (synth needs them to) and say
    which keys are still placeholders; the sandbox world replaces what it needs and has none."""
    invented = ("service.image", "service.certificate_arn", "gateway.document.placeholder", "cutover.probes.base_url")
    for env in ("production", "staging"):
        cfg = load(env)
        assert cfg.placeholders == invented, env
        assert cfg.service.image.startswith(config.PLACEHOLDER) and config.PLACEHOLDER == "CHANGE-ME"
    assert load("sandbox").placeholders == ()


def test_placeholders_anywhere_are_found_with_their_yaml_key_path(config_dir):
    edit(config_dir, "sandbox", "  client_key: /etc/brainstorm/cutover/probe-client.key",
         "  client_key: CHANGE-ME-probe-key")
    edit(config_dir, "sandbox", "    - name: test-harnesses", "    - name: CHANGE-ME-caller")
    edit(config_dir, "sandbox", "          - /v1/agent/sub-agents", "          - CHANGE-ME-route")
    edit(config_dir, "sandbox", "  image: public.ecr.aws/brainstorm/router:r20", "  image: router:CHANGE-ME")
    assert load("sandbox", config_dir).placeholders == (
        "gateway.document.tls.mtls.meshWriteRoutes[1]", "cutover.future_callers[1].name",
        "cutover.probes.client_key"), "a marker in the middle of a value is not a placeholder"


def test_a_placeholder_is_still_checked_like_any_value(config_dir):
    edit(config_dir, "production", "  desired_count: 2", "  desired_count: CHANGE-ME")
    err = error_for(config_dir)
    assert err.key == "service.desired_count" and "expected int" in err.problem


@pytest.mark.parametrize("text", ["30m30m", "9" * 400, "\uff11\uff15s", "nan", "inf", "-1s", "1x", ""])
def test_durations_that_are_not_durations_are_refused(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("key, value, says", [("redeploy_timeout", "0s", "shorter than any ECS deployment"),
                                              ("overlap", "0s", "shorter than one poll")])
def test_timing_that_would_break_the_watch_is_refused(config_dir, key, value, says):
    path = config_dir / "production.yaml"
    text = path.read_text()
    import re
    path.write_text(re.sub(rf"(?m)^  {key}: \S+", f"  {key}: {value}", text, count=1))
    with pytest.raises(ConfigError, match=says):
        load("production", config_dir)
