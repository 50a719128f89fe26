"""config/<env>.yaml -> frozen dataclasses, validated at load.

One loader for both the CDK app and the cutover tool, so the stack and the tool can never
disagree about names. Every problem is reported as one line naming the file, the key path and
the fix (ConfigError); the CLI turns it into exit code 2 before any AWS call.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from cutover_core.flag import MODE_PATH, MODES

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG_DIR = PROJECT_ROOT / "config"

Mode = Literal["advisory", "strict"]
assert typing.get_args(Mode) == MODES
Strategy = Literal["rolling", "canary", "blue_green"]
GATE_LOOKBACK_FLOOR = 24 * 3600  # seconds: the runbook's gate looks back 24 h


class ConfigError(Exception):
    """A config problem, already phrased as one line: '<file>: <key>: <problem>; fix: <hint>'."""

    def __init__(self, file: str | Path, key: str, problem: str, fix: str) -> None:
        self.file, self.key, self.problem, self.fix = str(file), key, problem, fix
        super().__init__(f"{file}: {key or '<top level>'}: {problem}; fix: {fix}")


class Seconds(float):
    """A duration written as '30m', '15s', '24h', '1h30m' or a bare number of seconds."""


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.ASCII)
_DURATION_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?d)?(?:\d+(?:\.\d+)?h)?(?:\d+(?:\.\d+)?m)?(?:\d+(?:\.\d+)?s)?"
                             r"(?:\d+(?:\.\d+)?ms)?", re.ASCII)
_LONGEST = 366 * 86400  # nothing this tool waits for is longer than a year
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float) -> Seconds:
    """'1h30m' -> 5400.0. Raises ValueError with the accepted forms."""
    if isinstance(text, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(text, (int, float)):
        if not 0 <= text <= _LONGEST:  # also NaN and infinity
            raise ValueError(f"{text!r} is not a duration (0 to 366 days)")
        return Seconds(text)
    s = str(text).strip().replace(" ", "")
    if re.fullmatch(r"\d{1,12}(\.\d{1,9})?", s, re.ASCII):
        value = float(s)
    elif s and len(s) <= 40 and _DURATION_WHOLE.fullmatch(s):  # each unit once, largest first
        value = sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(s))
    else:
        raise ValueError(f"{str(text)[:40]!r} is not a duration (use e.g. 30m, 15s, 24h, 1h30m)")
    if not 0 <= value <= _LONGEST:
        raise ValueError(f"{str(text)[:40]!r} is not a duration this tool can wait for (at most 366d)")
    return Seconds(value)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"


# ---------------------------------------------------------------- timing: one rule for config and CLI

WATCH_FLOOR = Seconds(30 * 60)   # the runbook's window: "monitor for the first 30 minutes"
MIN_POLL, MAX_POLL = Seconds(1), Seconds(300)


@dataclass(frozen=True)
class TimingProblem:
    key: str       # watch | poll (the config key under cutover., the CLI flag --<key>)
    problem: str
    fix: str


def timing_problem(*, watch: float, poll: float, overlap: float, redeploy_timeout: float, lock_ttl: float,
                   sandbox: bool, short_watch_ok: bool) -> TimingProblem | None:
    """Durations that make no sense, refused the same way for config/<env>.yaml and the flags."""
    f = format_duration
    if poll < MIN_POLL:
        return TimingProblem("poll", f"{poll:g}s is below {f(MIN_POLL)}: a busy loop against AWS",
                             "poll every few seconds, e.g. 15s")
    if poll > MAX_POLL:
        return TimingProblem("poll", f"{f(poll)} is above {f(MAX_POLL)}: a hurt caller would wait that long",
                             "poll at most every 5m, e.g. 15s")
    if overlap < poll:
        return TimingProblem("overlap", f"{f(overlap)} is shorter than one poll ({f(poll)}): a late event could be "
                             "missed between polls", f"re-read at least one poll, e.g. {f(max(poll * 8, 120))}")
    if redeploy_timeout < 30:
        return TimingProblem("redeploy_timeout", f"{f(redeploy_timeout)} is shorter than any ECS deployment",
                             "allow at least a few minutes, e.g. 30m")
    if watch < poll:
        return TimingProblem("watch", f"{f(watch)} is shorter than one poll ({f(poll)})",
                             f"watch at least {f(WATCH_FLOOR)} (the runbook's window)")
    if not sandbox and watch < WATCH_FLOOR and not short_watch_ok:
        return TimingProblem("watch", f"{f(watch)} is below the runbook's {f(WATCH_FLOOR)} window",
                             f"watch {f(WATCH_FLOOR)}, or pass --short-watch to accept a shorter window on purpose")
    plan = redeploy_timeout + watch + overlap + redeploy_timeout
    if plan > lock_ttl:
        return TimingProblem("watch", f"redeploy {f(redeploy_timeout)} + watch {f(watch)} + drain {f(overlap)} + "
                             f"rollback redeploy {f(redeploy_timeout)} = {f(plan)} exceeds cutover.lock_ttl "
                             f"{f(lock_ttl)}", "shorten the watch or raise cutover.lock_ttl")
    return None


# ---------------------------------------------------------------- placeholders

# A value this repository could not know (the live image, certificate, URL, gateway document) is
# written as a string starting with this marker. The loader accepts it, so `cdk synth` works without
# credentials (CI); the deploy guard (`make deploy`, cutover/deploy_guard.py) refuses it, naming the key.
PLACEHOLDER = "CHANGE-ME"


def is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PLACEHOLDER)


def placeholder_keys(value: Any, key: str = "") -> tuple[str, ...]:
    """The YAML key paths (`service.image`, `gateway.document.placeholder`, `x[0].y`) whose value is a
    placeholder, in file order. Walks a loaded EnvConfig (its fields are the YAML keys) or plain data."""
    if is_placeholder(value):
        return (key,)
    prefix = f"{key}." if key else ""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple(k for f in dataclasses.fields(value) if f.name != "source"
                     for k in placeholder_keys(getattr(value, f.name), f"{prefix}{f.name}"))
    if isinstance(value, dict):
        return tuple(k for name, v in value.items() for k in placeholder_keys(v, f"{prefix}{name}"))
    if isinstance(value, (list, tuple)):
        return tuple(k for i, v in enumerate(value) for k in placeholder_keys(v, f"{key}[{i}]"))
    return ()


def render_document(document: dict) -> str:
    """The exact text stored in the gateway config parameter (the gateway reads YAML).

    One renderer for the stack, the sandbox and the tests, so they never disagree byte-wise."""
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Network:
    vpc_cidr: str
    availability_zones: tuple[str, ...]
    nat_gateways: int


@dataclass(frozen=True)
class Deployment:
    """How ECS replaces tasks. `rolling` keeps the circuit breaker; `canary` and `blue_green` use
    ECS-native traffic shifting (deployment controller ECS) between two target groups, with the old
    (blue) tasks kept running for `bake` after production traffic has moved."""

    strategy: Strategy
    canary_percent: float | None = None    # canary only: share of production traffic on the new tasks first
    canary_bake: Seconds | None = None     # canary only: how long that share bakes (whole minutes)
    bake: Seconds | None = None            # canary/blue_green: ECS bakeTimeInMinutes (whole minutes)
    test_listener_port: int | None = None  # canary/blue_green: HTTPS port that reaches only the new tasks

    @property
    def traffic_shifting(self) -> bool:
        return self.strategy != "rolling"

    @property
    def bake_minutes(self) -> int | None:
        return None if self.bake is None else int(self.bake // 60)

    @property
    def canary_bake_minutes(self) -> int | None:
        return None if self.canary_bake is None else int(self.canary_bake // 60)


# Fargate stops a container with SIGKILL at most 120 s after SIGTERM (the stopTimeout maximum). The
# gateway gets its longest request plus this margin to finish and exit after the last one.
FARGATE_MAX_STOP_TIMEOUT = 120
SHUTDOWN_MARGIN = 10
PRODUCTION_LISTENER_PORT = 443


@dataclass(frozen=True)
class Service:
    cluster_name: str
    service_name: str
    image: str
    container_port: int
    cpu: int
    memory_mib: int
    desired_count: int
    health_check_path: str
    health_check_grace_seconds: int
    certificate_arn: str
    request_timeout: Seconds      # the gateway's longest request (R20: p50 12-22 s, p95 timeouts)
    deployment: Deployment

    # Issue 11 §3: a task that leaves the ALB must be allowed to finish what it is serving. ECS
    # first drains the target (deregistration delay), then sends SIGTERM and waits stopTimeout.
    @property
    def deregistration_delay_seconds(self) -> int:
        return int(self.request_timeout) + SHUTDOWN_MARGIN

    @property
    def stop_timeout_seconds(self) -> int:
        return int(self.request_timeout) + SHUTDOWN_MARGIN

    @property
    def idle_timeout_seconds(self) -> int:
        # The ALB closes a connection that sends no bytes for this long: a non-streamed LLM answer
        # at the request timeout must not be cut by the load balancer first (its default is 60 s).
        return int(self.request_timeout) + SHUTDOWN_MARGIN


@dataclass(frozen=True)
class Capacity:
    """A measured ceiling of ONE task, with where it comes from. The request-count scaling target
    is derived from it, never written by hand: a target above the ceiling never scales out."""

    rps_per_task: float     # requests per second one task sustains before failures grow
    source: str             # the measurement: which run, when, at what pool size and task count
    headroom_percent: int   # scale out this far below the ceiling (scaling reacts in minutes)


@dataclass(frozen=True)
class Scaling:
    min_tasks: int
    max_tasks: int
    cpu_target_percent: int
    memory_target_percent: int
    capacity: Capacity
    scale_out_cooldown_seconds: int
    scale_in_cooldown_seconds: int

    @property
    def requests_per_target_per_minute(self) -> int:
        """The ALBRequestCountPerTarget target (requests per target per minute): the measured
        ceiling per minute less the headroom, rounded down. R20: 1.75/s x 60 x 70 % = 73."""
        c = self.capacity
        return math.floor(c.rps_per_task * 60 * (100 - c.headroom_percent) / 100 + 1e-9)


@dataclass(frozen=True)
class Database:
    pool_size: int
    max_connections: int
    reserved_connections: int


@dataclass(frozen=True)
class Gateway:
    parameter_name: str
    document: dict[str, Any]

    @property
    def mode(self) -> str:
        node: Any = self.document
        for key in MODE_PATH:
            node = node[key]
        return node


@dataclass(frozen=True)
class Observability:
    log_group_name: str
    log_retention_days: int
    alarm_prefix: str
    alb_5xx_per_minute: int
    p95_latency_ms: int
    unhealthy_hosts: int

    # Names are derived, never written twice: the stack creates these alarms and the cutover
    # gate refuses to start while any of them is in ALARM.
    @property
    def alarm_5xx(self) -> str:
        return f"{self.alarm_prefix}-alb-5xx"

    @property
    def alarm_unhealthy(self) -> str:
        return f"{self.alarm_prefix}-unhealthy-hosts"

    @property
    def alarm_p95(self) -> str:
        return f"{self.alarm_prefix}-p95-latency"

    @property
    def alarm_legitimate_403(self) -> str:
        # 403 on /v1/agent/* for an authenticated caller that is not the cutover tool's own probe or
        # sentinel: the same class as cutover.mtls.classify_403's LEGITIMATE.
        return f"{self.alarm_prefix}-legitimate-mesh-write-403"

    @property
    def guard_alarms(self) -> tuple[str, ...]:
        return (self.alarm_5xx, self.alarm_unhealthy, self.alarm_p95)

    @property
    def deployment_alarms(self) -> tuple[str, ...]:
        # ECS rolls a deployment back when any of these goes to ALARM during it (and its bake).
        return (self.alarm_legitimate_403, self.alarm_5xx, self.alarm_unhealthy)


@dataclass(frozen=True)
class AccessLog:
    route_field: str = "path"
    status_field: str = "status"
    caller_field: str = "caller"
    user_agent_field: str = "userAgent"
    run_id_field: str = "cutoverRunId"


@dataclass(frozen=True)
class Gate:
    lookback: Seconds
    patterns: tuple[str, ...]
    broad_pattern: str
    broad_excludes: tuple[str, ...]
    routes: tuple[str, ...]


@dataclass(frozen=True)
class FutureCaller:
    name: str
    enrolled: bool
    acknowledged: str | None = None


@dataclass(frozen=True)
class Sentinel:
    """An authenticated caller the tool controls: its API key is read from an environment
    variable or a file (never written in YAML), and the gateway is expected to log `caller`."""

    caller: str
    api_key_env: str | None = None
    api_key_file: str | None = None


PROBE_KINDS = ("no-cert", "forged-header", "untrusted-cert", "enrolled-cert", "sentinel")


@dataclass(frozen=True)
class ProbeRequest:
    """What a probe sends. The default cannot create anything if a gateway accepted it: probes
    carry no API key (401 after mTLS), and the body has none of the fields a mesh write needs
    (400 after authentication), which matters for the sentinel, the one probe with a key."""

    method: str = "POST"
    body: str = '{"cutoverProbe": true}'
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Probes:
    base_url: str
    client_cert: str
    client_key: str
    ca_bundle: str | None = None
    per_task: int = 3
    timeout: Seconds = Seconds(10)
    sentinel: Sentinel | None = None
    request: ProbeRequest = field(default_factory=ProbeRequest)
    # Per-kind overrides of `request` (keys: PROBE_KINDS), e.g. a GET for the enrolled probe.
    requests: dict[str, Any] = field(default_factory=dict)

    def request_for(self, kind: str) -> ProbeRequest:
        over = self.requests.get(kind)
        return self.request if over is None else dataclasses.replace(self.request, **over)


@dataclass(frozen=True)
class Promotion:
    """Staged promotion: a strict cutover of this environment needs a finished (watched) strict
    cutover of `after` no older than `max_age`, read from that environment's journal."""

    after: str
    max_age: Seconds


@dataclass(frozen=True)
class CutoverSettings:
    gate: Gate
    future_callers: tuple[FutureCaller, ...]
    probes: Probes
    watch: Seconds
    poll: Seconds
    overlap: Seconds
    redeploy_timeout: Seconds
    lock_ttl: Seconds
    promotion: Promotion | None = None

    def journal_of(self, env: str) -> str:
        """Another environment's journal parameter (the SSM naming convention)."""
        return f"/brainstorm-router/{env}/cutover/journal"


@dataclass(frozen=True)
class EnvConfig:
    environment: str
    region: str
    network: Network
    service: Service
    scaling: Scaling
    database: Database
    gateway: Gateway
    observability: Observability
    cutover: CutoverSettings
    access_log: AccessLog = field(default_factory=AccessLog)
    account: str | None = None
    source: str = field(default="", compare=False)  # the file it came from (not a YAML key)

    # SSM naming convention: /brainstorm-router/<env>/<component>/<name>. The cutover tool's own
    # state sits next to the gateway config so one IAM prefix covers both.
    @property
    def ssm_prefix(self) -> str:
        return self.gateway.parameter_name.rsplit("/gateway/", 1)[0]

    @property
    def lock_parameter(self) -> str:
        return f"{self.ssm_prefix}/cutover/lock"

    @property
    def journal_parameter(self) -> str:
        return f"{self.ssm_prefix}/cutover/journal"

    @property
    def stack_name(self) -> str:
        return f"BrainstormRouter-{self.environment}"

    @property
    def placeholders(self) -> tuple[str, ...]:
        """Keys still holding a CHANGE-ME placeholder: allowed at synth, refused by the deploy guard."""
        return placeholder_keys(self)

    @property
    def peak_tasks(self) -> int:
        # A forced redeploy runs up to maximumPercent (200%) of the tasks at once, so at full
        # scale-out the database sees twice max_tasks pools for the length of a deployment.
        return self.scaling.max_tasks * MAX_HEALTHY_PERCENT // 100

    @property
    def peak_connections(self) -> int:
        return self.database.pool_size * self.peak_tasks + self.database.reserved_connections


MAX_HEALTHY_PERCENT = 200
# Keys that were replaced by a derivation: the loader says what took their place.
RETIRED_KEYS = {
    "scaling.requests_per_target_per_minute":
        "remove it: the ALBRequestCountPerTarget target is derived from scaling.capacity "
        "(rps_per_task x 60 x (100 - headroom_percent) %), a measured per-task ceiling with its source",
}
HEADROOM_PERCENT = (10, 90)
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
                      2192, 2557, 2922, 3288, 3653)
MIN_HEALTHY_PERCENT = 100


# ---------------------------------------------------------------- the generic builder


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is Seconds:
        return "duration (e.g. 30m, 15s)"
    if origin is Literal:
        return " | ".join(map(str, typing.get_args(tp)))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _got(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "nothing (null)"}.get(
        type(value), type(value).__name__)


def _build(tp: Any, value: Any, key: str, file: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _build(args[0], value, key, file)
    if tp is Seconds:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(file, key, str(exc), "write a duration such as 30m, 15s or 24h") from None
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(file, key, f"{value!r} is not allowed",
                              f"use one of: {', '.join(map(str, allowed))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected a list, got {_got(value)}", "write a YAML list")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_build(item, v, f"{key}[{i}]", file) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a mapping, got {_got(value)}", "write a YAML mapping")
        return value
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, key, file)
    # Plain scalars. bool is an int in Python; a YAML 'yes' must not pass as a count.
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ConfigError(file, key, f"expected {_type_name(tp)}, got {_got(value)} ({value!r})",
                          f"write {_a(_type_name(tp))} value")
    return value


def _not_yaml(cls: Any, name: str) -> bool:
    return cls is EnvConfig and name == "source"  # the file it came from, not a key (scaling.capacity has one)


def _build_dataclass(cls: Any, data: Any, key: str, file: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(file, key, f"expected a mapping, got {_got(data)}", "write a YAML mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if not _not_yaml(cls, f.name)]
    prefix = f"{key}." if key else ""
    for k in data:
        if f"{prefix}{k}" in RETIRED_KEYS:
            raise ConfigError(file, f"{prefix}{k}", "no longer set by hand", RETIRED_KEYS[f"{prefix}{k}"])
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(names)}"
            raise ConfigError(file, f"{prefix}{k}", "unknown key", f"remove it or rename it ({hint})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if _not_yaml(cls, f.name):
            continue
        if f.name not in data:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise ConfigError(file, f"{prefix}{f.name}", "missing key",
                              f"add '{f.name}: <{_type_name(hints[f.name])}>'")
        kwargs[f.name] = _build(hints[f.name], data[f.name], f"{prefix}{f.name}", file)
    return cls(**kwargs)


# ---------------------------------------------------------------- semantic checks


def _check(cfg: EnvConfig, file: str) -> None:
    doc: Any = cfg.gateway.document
    walked = "gateway.document"
    for part in MODE_PATH:
        if not isinstance(doc, dict) or part not in doc:
            raise ConfigError(file, f"{walked}.{part}", "missing key",
                              f"the gateway document must hold {'.'.join(MODE_PATH)}")
        doc, walked = doc[part], f"{walked}.{part}"
    if doc not in MODES:
        raise ConfigError(file, walked, f"{doc!r} is not allowed", f"use one of: {', '.join(MODES)}")
    if cfg.observability.log_retention_days not in LOG_RETENTION_DAYS:
        raise ConfigError(file, "observability.log_retention_days",
                          f"{cfg.observability.log_retention_days} is not a CloudWatch retention",
                          f"use one of: {', '.join(map(str, LOG_RETENTION_DAYS))}")
    s = cfg.scaling
    if s.min_tasks < 1 or s.max_tasks < s.min_tasks:
        raise ConfigError(file, "scaling.max_tasks", f"min_tasks={s.min_tasks}, max_tasks={s.max_tasks}",
                          "need 1 <= min_tasks <= max_tasks")
    if not s.min_tasks <= cfg.service.desired_count <= s.max_tasks:
        raise ConfigError(file, "service.desired_count", f"{cfg.service.desired_count} is outside "
                          f"scaling [{s.min_tasks}, {s.max_tasks}]", "keep min_tasks <= desired_count <= max_tasks")
    for name, pct in (("cpu_target_percent", s.cpu_target_percent),
                      ("memory_target_percent", s.memory_target_percent)):
        if not 10 <= pct <= 95:
            raise ConfigError(file, f"scaling.{name}", f"{pct} is out of range", "use 10..95")
    _check_capacity(cfg, file)
    gate = cfg.cutover.gate
    # The runbook's gate: zero mTLS-advisory bypass events in 24 h. Config that would switch it off
    # quietly (a short look-back, no patterns) is refused; the sandbox may look back less.
    if gate.lookback < GATE_LOOKBACK_FLOOR and cfg.environment != "sandbox":
        raise ConfigError(file, "cutover.gate.lookback", f"{format_duration(gate.lookback)} is shorter than the "
                          f"runbook's {format_duration(GATE_LOOKBACK_FLOOR)}", "use 24h (or longer)")
    if "mtls-advisory" not in gate.patterns:
        raise ConfigError(file, "cutover.gate.patterns", "does not hold \"mtls-advisory\"", "the gate exists to "
                          "count the gateway's mtls-advisory bypass events: list it (and any others you need)")
    if not gate.routes:
        raise ConfigError(file, "cutover.gate.routes", "empty", "list the mesh-write routes, e.g. /v1/agent/delegate")
    for i, route in enumerate(cfg.cutover.gate.routes):
        # A route is matched as a term in the access logs: a typo here hides a caller from the gate.
        if not route.startswith("/") or any(ch.isspace() for ch in route) or len(route) < 2:
            raise ConfigError(file, f"cutover.gate.routes[{i}]", f"{route!r} is not a route",
                              "write the path as the gateway logs it, e.g. /v1/agent/delegate")
    db = cfg.database
    if db.pool_size < 1:
        raise ConfigError(file, "database.pool_size", f"{db.pool_size} is not a pool size", "use a positive integer")
    if cfg.peak_connections > db.max_connections:
        # Scaling out (and the 200% surge of a deployment at full scale) must never be what
        # exhausts the database: refuse to synthesize a fleet that could.
        need = cfg.peak_connections
        fit_tasks = max((db.max_connections - db.reserved_connections) // db.pool_size
                        * 100 // MAX_HEALTHY_PERCENT, 0)
        fit_pool = max((db.max_connections - db.reserved_connections) // cfg.peak_tasks, 0)
        raise ConfigError(
            file, "database.pool_size",
            f"pool_size {db.pool_size} x {cfg.peak_tasks} peak tasks (max_tasks {s.max_tasks} at "
            f"{MAX_HEALTHY_PERCENT}% during a deployment) + {db.reserved_connections} reserved = {need} "
            f"> max_connections {db.max_connections}",
            (f"lower scaling.max_tasks to {fit_tasks}, or " if fit_tasks >= s.min_tasks else "")
            + (f"lower database.pool_size to {fit_pool}, or " if fit_pool >= 1 else "")
            + "raise database.max_connections (a bigger DB class), or put RDS Proxy in front of the database")
    c = cfg.cutover
    problem = timing_problem(watch=c.watch, poll=c.poll, overlap=c.overlap, redeploy_timeout=c.redeploy_timeout,
                             lock_ttl=c.lock_ttl, sandbox=cfg.environment == "sandbox", short_watch_ok=False)
    if problem:
        raise ConfigError(file, f"cutover.{problem.key}", problem.problem, problem.fix)
    if cfg.cutover.probes.per_task < 1:
        raise ConfigError(file, "cutover.probes.per_task", "must be at least 1", "use 3 (the runbook's value)")
    for kind, over in cfg.cutover.probes.requests.items():
        key = f"cutover.probes.requests.{kind}"
        if kind not in PROBE_KINDS:
            raise ConfigError(file, key, "unknown probe kind", f"use one of: {', '.join(PROBE_KINDS)}")
        if not isinstance(over, dict) or set(over) - {"method", "body", "headers"}:
            raise ConfigError(file, key, "expected a mapping of method, body, headers", "e.g. {method: GET, body: ''}")
    promo = cfg.cutover.promotion
    if promo is not None and promo.after == cfg.environment:
        raise ConfigError(file, "cutover.promotion.after", "an environment cannot be promoted from itself",
                          "name the environment that goes first, e.g. staging")
    sentinel = cfg.cutover.probes.sentinel
    if sentinel is not None and (sentinel.api_key_env is None) == (sentinel.api_key_file is None):
        raise ConfigError(file, "cutover.probes.sentinel", "needs exactly one of api_key_env, api_key_file",
                          "name the environment variable or the file that holds the sentinel's API key")
    for i, c in enumerate(cfg.cutover.future_callers):
        if c.acknowledged is not None and not c.acknowledged.strip():
            raise ConfigError(file, f"cutover.future_callers[{i}].acknowledged", "empty reason",
                              "write why this caller is safe, or remove the key")
    if cfg.gateway.parameter_name.rsplit("/gateway/", 1)[0] == cfg.gateway.parameter_name:
        raise ConfigError(file, "gateway.parameter_name", "does not follow the naming convention",
                          f"use /brainstorm-router/{cfg.environment}/gateway/config")
    _check_service(cfg, file)


def _check_capacity(cfg: EnvConfig, file: str) -> None:
    """scaling.capacity: a real measurement, and a target that scales out before the ceiling."""
    c = cfg.scaling.capacity
    key = "scaling.capacity"
    if not c.rps_per_task > 0:
        raise ConfigError(file, f"{key}.rps_per_task", f"{c.rps_per_task:g} is not a capacity",
                          "write the measured requests per second ONE task sustains (R20: 1.75)")
    if not c.source.strip():
        raise ConfigError(file, f"{key}.source", "empty", "say which measurement the number comes from "
                          "(run, date, pool size, tasks), e.g. a docs/load-test/ report")
    low, high = HEADROOM_PERCENT
    if not low <= c.headroom_percent <= high:
        raise ConfigError(file, f"{key}.headroom_percent", f"{c.headroom_percent} is out of range",
                          f"use {low}..{high}: target tracking needs minutes to add a task, so the target must "
                          "sit below the ceiling (30 scales out at 70 % of it)")
    if cfg.scaling.requests_per_target_per_minute < 1:
        raise ConfigError(file, f"{key}.rps_per_task", f"{c.rps_per_task:g}/s less {c.headroom_percent}% headroom is "
                          "under one request per minute: no usable ALBRequestCountPerTarget target",
                          "check the unit: requests per SECOND per task")


def _whole_minutes(value: Seconds, key: str, file: str, *, low: int, high: int, example: str) -> None:
    if value % 60:
        raise ConfigError(file, key, f"{format_duration(value)} is not a whole number of minutes "
                          "(ECS counts bake times in minutes)", f"write whole minutes, e.g. {example}")
    if not low <= value // 60 <= high:
        raise ConfigError(file, key, f"{format_duration(value)} is out of range",
                          f"use {low}..{high} minutes, e.g. {example}")


def _check_service(cfg: EnvConfig, file: str) -> None:
    """request_timeout and deployment: the numbers the stack and the cutover tool both read."""
    svc = cfg.service
    rt = svc.request_timeout
    longest = FARGATE_MAX_STOP_TIMEOUT - SHUTDOWN_MARGIN
    if rt <= 0 or rt != int(rt):
        raise ConfigError(file, "service.request_timeout", f"{rt:g}s is not a whole positive number of seconds",
                          "write the gateway's request timeout in whole seconds, e.g. 60s")
    if rt > longest:
        raise ConfigError(
            file, "service.request_timeout",
            f"{format_duration(rt)} + {SHUTDOWN_MARGIN}s shutdown margin = {int(rt) + SHUTDOWN_MARGIN}s "
            f"> Fargate's {FARGATE_MAX_STOP_TIMEOUT}s stopTimeout maximum: a task stopped by a redeploy "
            "or a rollback would be killed mid-request",
            f"lower the gateway's request timeout to {longest}s or less (and service.request_timeout with it)")
    d = svc.deployment
    key = "service.deployment"
    canary_only = {"canary_percent": d.canary_percent, "canary_bake": d.canary_bake}
    shifting_only = {"bake": d.bake, "test_listener_port": d.test_listener_port}
    for name, value in canary_only.items():
        if d.strategy != "canary" and value is not None:
            raise ConfigError(file, f"{key}.{name}", f"only applies to strategy canary, not {d.strategy}",
                              "remove it, or set strategy: canary")
    for name, value in shifting_only.items():
        if d.strategy == "rolling" and value is not None:
            raise ConfigError(file, f"{key}.{name}", "only applies to strategy canary or blue_green, not rolling",
                              "remove it, or set strategy: canary")
    if d.strategy == "rolling":
        return
    needed = {**(canary_only if d.strategy == "canary" else {}), **shifting_only}
    for name, value in needed.items():
        if value is None:
            kind = {"canary_percent": "number", "test_listener_port": "int"}.get(name, "duration")
            raise ConfigError(file, f"{key}.{name}", f"missing key (strategy {d.strategy} needs it)",
                              f"add '{name}: <{kind}>' under service.deployment")
    if d.strategy == "canary":
        assert d.canary_percent is not None and d.canary_bake is not None
        p = d.canary_percent
        if not 0 < p <= 50 or round(p * 10) != p * 10:
            raise ConfigError(file, f"{key}.canary_percent", f"{p:g} is out of range",
                              "use a share of production traffic above 0 and at most 50, in steps of 0.1 (e.g. 10)")
        _whole_minutes(d.canary_bake, f"{key}.canary_bake", file, low=1, high=1440, example="5m")
    assert d.bake is not None and d.test_listener_port is not None
    _whole_minutes(d.bake, f"{key}.bake", file, low=0, high=1440, example="30m")
    if d.bake < cfg.cutover.watch:
        # The tool watches through the bake: ECS must not retire the old tasks (the instant undo)
        # before the watch window is over.
        need = -(-int(cfg.cutover.watch) // 60)
        raise ConfigError(file, f"{key}.bake", f"{format_duration(d.bake)} is shorter than cutover.watch "
                          f"({format_duration(cfg.cutover.watch)}): the old tasks would be gone before the watch ends",
                          f"set bake to at least {need}m, or shorten cutover.watch")
    port = d.test_listener_port
    if not 1 <= port <= 65535 or port == PRODUCTION_LISTENER_PORT:
        raise ConfigError(file, f"{key}.test_listener_port", f"{port} cannot be the test listener's port",
                          f"use its own port in 1..65535, not {PRODUCTION_LISTENER_PORT} (the production "
                          "listener), e.g. 8443")


# ---------------------------------------------------------------- loading


def known_environments(config_dir: Path = DEFAULT_CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in Path(config_dir).glob("*.yaml"))


def config_path(env: str, config_dir: Path = DEFAULT_CONFIG_DIR) -> Path:
    if not Path(config_dir).is_dir():
        raise ConfigError(config_dir, "--config-dir", "no such directory",
                          f"point --config-dir at the folder holding <env>.yaml (default: {DEFAULT_CONFIG_DIR})")
    path = Path(config_dir) / f"{env}.yaml"
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", env) or not path.is_file():
        known = ", ".join(known_environments(config_dir)) or "none"
        raise ConfigError(path, "--env", f"unknown environment {env!r}",
                          f"use one of: {known} (files in {config_dir})")
    return path


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, line: int, *, merge: bool = False) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.merge = key, line, merge


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load keeps the last of two equal keys without a word: a second `lookback:` or
    `meshWritesEnforcement:` would silently win. Refuse them."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` would let keys override unseen
                raise DuplicateKey("<<", key_node.start_mark.line + 1, merge=True)
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise DuplicateKey(key, key_node.start_mark.line + 1)
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                pass
        return super().construct_mapping(node, deep)


def parse(text: str, file: str, *, expect_env: str | None = None) -> EnvConfig:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKey as exc:
        if exc.merge:
            raise ConfigError(file, "<<", f"a YAML merge key at line {exc.line}: its keys could silently override or "
                              "be overridden", "write the keys out in full") from None
        raise ConfigError(file, str(exc.key), f"duplicate key at line {exc.line}: YAML would silently keep only the "
                          "last one", "keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        start = getattr(exc, "context_mark", None)  # where the unclosed construct began, if any
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if start is not None and mark is not None and start.line != mark.line:
            context = getattr(exc, "context", None) or "a construct"
            where = (f"line {start.line + 1}, column {start.column + 1} ({context.removeprefix('while ')} "
                     f"opened there; noticed at line {mark.line + 1})")
        raise ConfigError(file, "", f"YAML syntax error at {where}: {problem}",
                          "fix the YAML at that line (indentation, quotes, colons)") from None
    if expect_env is not None and isinstance(data, dict) and data.get("environment") != expect_env:
        # First: a file copied from another environment is wrong as a whole; its other errors are noise.
        said = data.get("environment")
        raise ConfigError(file, "environment", f"says {said!r} but the file is {Path(file).name}" if said is not None
                          else "missing key", f"set environment: {expect_env}")
    cfg = _build_dataclass(EnvConfig, data if data is not None else {}, "", file)
    _check(cfg, file)
    return dataclasses.replace(cfg, source=file)


def load(env: str, config_dir: Path = DEFAULT_CONFIG_DIR) -> EnvConfig:
    path = config_path(env, config_dir)
    return parse(path.read_text(encoding="utf-8"), str(path), expect_env=env)


def load_all(config_dir: Path = DEFAULT_CONFIG_DIR) -> list[EnvConfig]:
    return [load(env, config_dir) for env in known_environments(config_dir)]
