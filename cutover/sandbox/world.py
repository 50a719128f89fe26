"""`--sandbox`: build a faithful local world, hand the real tool a config pointing at it, and
tear everything down afterwards (success, failure, Ctrl-C or SIGTERM).

The world (see docs/sandbox.md): moto's server on 127.0.0.1 (SSM, ECS, Logs, CloudWatch, STS)
in an AWS account of its own, provisioned from the config; a real TLS gateway (an ALB stand-in in
mTLS passthrough mode in front of tasks that read the gateway parameter when they start); an ECS
stand-in that deploys (rolling or ECS-native canary) when ECS is asked for a new deployment and
answers the service-deployment and task APIs; a metric filter + alarm on legitimate mesh-write
403s; steady caller traffic. The cutover itself is *not* reimplemented here: the unchanged tool
runs against this world through boto3.

The world never touches os.environ: `world.env` holds what a boto3 client of the tool needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cutover.mtls import read_mode
from cutover.sandbox.alarms import LegitimateWriteFilter, deployment_alarm_names
from cutover.sandbox.awsserver import AwsServer, ecs_response_class
from cutover.sandbox.dbpool import PoolModel
from cutover.sandbox.ecs import GROUPS, EcsStandIn, Plan
from cutover.sandbox.gateway import Behaviour, Front, GatewaySettings, LogShipper
from cutover.sandbox.pki import Pki, make_pki
from cutover.sandbox.provision import provision
from cutover.sandbox.scenarios import SCENARIOS, STRATEGIES
from cutover.sandbox.traffic import Traffic, post
from envconfig import EnvConfig, Sentinel, load

# Environment variables that would point a boto3 client elsewhere than `world.env` says.
ENV_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
OPERATOR = "sandbox-operator"


@dataclass
class SandboxWorld:
    """A running world. `cfg` points at it; `env` is what the tool's boto3 clients need."""

    cfg: EnvConfig
    endpoint: str
    env: dict[str, str]
    front_url: str
    test_url: str | None
    scenario: str
    strategy: str
    account: str
    directory: Path           # the world's private temp dir (keys!): removed when the world ends
    config_dir: Path          # holds <env>.yaml pointing at this world (for a tool in another process)
    pki: Pki
    front: Front
    ecs: EcsStandIn
    traffic: Traffic
    shipper: LogShipper
    metric_filter: LegitimateWriteFilter
    plan: Plan
    api_keys: dict[str, str]  # bearer token -> caller
    parameter_changes: list[tuple[float, int, str]] = field(default_factory=list)  # (time, version, mode)
    flipped: threading.Event = field(default_factory=threading.Event)  # the parameter became strict
    admin_url: str | None = None  # the admin endpoint (serve mode)
    restorer_results: list[dict] = field(default_factory=list)  # what each restorer invocation returned
    unenrolled_gate: threading.Event | None = None  # set: the unenrolled caller starts (operator-vanishes)
    driven: bool = False  # a driver decides when the operator-vanishes caller starts
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def client(self, name: str) -> Any:
        """A boto3 client of this world (explicit endpoint and credentials, nothing from os.environ)."""
        if name not in self._clients:
            self._clients[name] = _client(name, self.env)  # a fresh session: clients are not shared across threads
        return self._clients[name]

    def on_deployment_event(self, callback: Callable[[dict], None]) -> None:
        """Call `callback(event)` for every `ECS Deployment State Change` event (EventBridge's shape)."""
        self.ecs.on_event(callback)

    @property
    def events(self) -> list[dict]:
        return list(self.ecs.events)

    def key_of(self, caller: str) -> str:
        return next(k for k, c in self.api_keys.items() if c == caller)

    def pool_stats(self) -> dict[str, dict[str, Any]]:
        """Per running task, its database pool's counters (empty when no pool is modelled)."""
        return {t.id: t.db.stats() for t in self.front.tasks if t.db is not None}

    def state(self) -> dict[str, Any]:
        """Everything the admin endpoint reports (JSON-ready)."""
        ecs = self.ecs.state()
        return {
            "scenario": self.scenario, "strategy": self.strategy, "endpoint": self.endpoint,
            "front_url": self.front_url, "test_url": self.test_url, "account": self.account,
            "parameter_changes": [[round(t, 3), v, m] for t, v, m in self.parameter_changes],
            "flip_at": next((t for t, _, m in self.parameter_changes if m == "strict"), None),
            **ecs,
            "routed": [{"listener": lst, "target_group": tg, "requests": n}
                       for (lst, tg), n in sorted(self.front.routed.items())],
            "traffic": self.traffic.summary(),
            "legitimate_403_alarm": self.metric_filter.state(),
        }


def _session(env: dict[str, str]) -> Any:
    import boto3

    return boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                 region_name=env["AWS_DEFAULT_REGION"])


def _client(name: str, env: dict[str, str], session: Any = None) -> Any:
    return (session or _session(env)).client(name, endpoint_url=env["AWS_ENDPOINT_URL"])


def deployment_settings(cfg: EnvConfig, strategy: str | None) -> dict[str, Any]:
    """The deployment strategy and its numbers, in configured minutes.

    The one adapter to `service.deployment` (added to the config by the CDK work): it reads the
    section when it exists and falls back to the sandbox's defaults when it does not. Durations in
    the config are seconds (envconfig's `Seconds`); ECS's API speaks minutes."""
    dep = getattr(cfg.service, "deployment", None)

    def minutes(*names: str, default: float) -> float:
        for n in names:
            v = getattr(dep, n, None)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v) if n.endswith("_minutes") else float(v) / 60
        return default

    chosen = strategy or getattr(dep, "strategy", None) or "rolling"
    if chosen not in STRATEGIES:
        raise ValueError(f"unknown strategy {chosen!r}: use one of {', '.join(STRATEGIES)}")
    percent = getattr(dep, "canary_percent", None)
    return {
        "strategy": chosen,
        "canary_percent": 100.0 if chosen == "blue_green" else float(percent) if percent else 10.0,
        "canary_bake_minutes": 0.0 if chosen == "blue_green" else minutes(
            "canary_bake_minutes", "canary_bake", "canary_bake_time", default=5.0),
        "bake_minutes": minutes("bake_time_minutes", "bake_time", "bake", default=30.0),
    }


def _seed_history(shipper: LogShipper, scenario: str, now: float) -> None:
    """24 h of history like the ship log's, in the stream of a task long gone: cold-start timing
    lines that mention mtls (excluded by the gate) and, in one scenario, real advisory bypass events."""
    import uuid

    stream = f"gateway/gateway/{uuid.uuid4().hex}"
    ms = int(now * 1000)
    timing = [(ms - h * 3_600_000, f"[api/cold-start] mtls context ready in {40 + h}ms") for h in range(1, 11)]
    shipper.put_now(stream, timing)
    if scenario == "bypass-traffic":
        bypass = [(ms - h * 3_600_000 - 60_000, "WARN [mtls-advisory] mesh write without client certificate: "
                   "caller=brainstorm-cli path=/v1/agent/delegate (requireMtls=false)") for h in (2, 5, 9)]
        shipper.put_now(stream, bypass)


def _world_service(cfg: EnvConfig, strategy: str, settings: dict[str, Any], test_url: str | None) -> Any:
    """The service section the tool sees: the strategy this world plays, with its numbers (so the
    tool and the stand-in read the same ones, as the stack and the tool do in AWS)."""
    from envconfig import Deployment, Seconds

    if strategy == "rolling":
        dep = Deployment(strategy="rolling")
    else:
        canary = strategy == "canary"
        dep = Deployment(strategy=strategy,  # type: ignore[arg-type]
                         canary_percent=settings["canary_percent"] if canary else None,
                         canary_bake=Seconds(round(settings["canary_bake_minutes"]) * 60) if canary else None,
                         bake=Seconds(max(1, round(settings["bake_minutes"])) * 60),
                         test_listener_port=int(test_url.rsplit(":", 1)[-1]) if test_url else None)
    return dataclasses.replace(cfg.service, deployment=dep)


def _world_yaml(cfg: EnvConfig, world_cfg: EnvConfig, strategy: str) -> str:
    """The config file a tool in another process reads: the original, pointed at this world."""
    data = yaml.safe_load(Path(cfg.source).read_text(encoding="utf-8"))
    p = world_cfg.cutover.probes
    probes = data.setdefault("cutover", {}).setdefault("probes", {})
    probes.update(base_url=p.base_url, client_cert=p.client_cert, client_key=p.client_key, ca_bundle=p.ca_bundle)
    assert p.sentinel is not None
    probes["sentinel"] = {"caller": p.sentinel.caller, "api_key_file": p.sentinel.api_key_file}
    data.setdefault("database", {})["pool_size"] = world_cfg.database.pool_size  # a rehearsal may override it
    d = world_cfg.service.deployment
    data.setdefault("service", {})["deployment"] = {
        k: (f"{int(v // 60)}m" if k in ("canary_bake", "bake") else v)
        for k, v in dataclasses.asdict(d).items() if v is not None}
    return ("# Written by the sandbox world for one run: it points at 127.0.0.1 and dies with the world.\n"
            + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1 << 16))


def _make_account(access: dict[str, str]) -> str:
    """A fresh moto account for this world: its own IAM user and access key, so its resources are
    kept apart from any other world (or test) in the same process."""
    from moto.iam.models import iam_backends

    account = f"{secrets.randbelow(9 * 10**11) + 10**11}"
    iam = iam_backends[account]["aws"]
    iam.create_user(None, OPERATOR, path="/")
    key = iam.create_access_key(OPERATOR)
    access.update(id=key.access_key_id, secret=key.secret_access_key)
    return account


def _forget_account(account: str) -> None:
    from moto.backends import get_backend

    for service in ("ssm", "ecs", "logs", "cloudwatch", "sts", "iam", "ec2"):
        with contextlib.suppress(Exception):
            get_backend(service).pop(account, None)  # type: ignore[arg-type]


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM ends the process without running `finally`: turn it into SystemExit while the
    world lives (only where nobody else handles SIGTERM), so the private keys are removed."""
    installed = False
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        def on_term(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)
        signal.signal(signal.SIGTERM, on_term)
        installed = True
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def process_environment(env: dict[str, str]) -> Iterator[None]:
    """For the CLI until its factory takes `world.env`: point this process's boto3 chain at the
    world and put everything back after. The world itself never calls this."""
    values: dict[str, str | None] = {**env, **dict.fromkeys(ENV_UNSET)}
    saved = {k: os.environ.get(k) for k in values}

    def apply(v: dict[str, str | None]) -> None:
        for k, x in v.items():
            if x is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = x
    try:
        apply(values)
        yield
    finally:
        apply(saved)


@contextmanager
def sandbox_world(cfg: EnvConfig, *, scenario: str = "clean", ui: Any, strategy: str | None = None,
                  rollout_step: float | None = None, plan: dict[str, Any] | None = None,
                  admin: bool = False, pool_hold: float | None = None) -> Iterator[SandboxWorld]:
    """Build the world, yield it, tear it all down. `plan`: overrides of `ecs.Plan` (e.g. a
    faster time scale for tests: {"seconds_per_minute": 0.05}). `pool_hold`: model each task's
    database pool (`database.pool_size` connections, each served request holding one for
    `pool_hold` seconds, 504 at `service.request_timeout`); None (default): no pool modelled."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: use one of {', '.join(SCENARIOS)}")
    if not cfg.source or not Path(cfg.source).is_file():
        raise ValueError("the world needs the config's source file (it writes a copy pointing at itself)")
    settings_d = deployment_settings(cfg, strategy)
    chosen = settings_d.pop("strategy")
    t0 = time.monotonic()
    with ExitStack() as stack:
        stack.enter_context(_terminate_as_exit())
        tmp = Path(tempfile.mkdtemp(prefix="cutover-sandbox-"))  # 0700: it holds private keys
        stack.callback(shutil.rmtree, tmp, True)

        access: dict[str, str] = {}
        account = _make_account(access)
        stack.callback(_forget_account, account)
        server = AwsServer()
        server.start()
        stack.callback(server.stop)
        env = {"AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": access["id"],
               "AWS_SECRET_ACCESS_KEY": access["secret"], "AWS_DEFAULT_REGION": cfg.region}
        session = _session(env)
        clients = {n: _client(n, env, session) for n in ("ssm", "ecs", "logs", "cloudwatch", "sts")}

        alarms = deployment_alarm_names(cfg)
        p = Plan(strategy="rolling" if chosen == "rolling" else "canary", alarm_names=alarms,
                 fail_first=scenario == "rollout-fails", **settings_d)
        if rollout_step is not None:
            p = dataclasses.replace(p, step=rollout_step)
        if plan:
            p = dataclasses.replace(p, **plan)
        ecs_strategy = {"rolling": "ROLLING", "canary": "CANARY", "blue_green": "BLUE_GREEN"}[chosen]
        dep_config: dict[str, Any] = {
            "maximumPercent": 200, "minimumHealthyPercent": 100, "strategy": ecs_strategy,
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        }
        if p.strategy == "canary":
            dep_config.update(bakeTimeInMinutes=round(p.bake_minutes),
                              alarms={"alarmNames": list(alarms), "enable": True, "rollback": True})
            if chosen == "canary":
                dep_config["canaryConfiguration"] = {"canaryPercent": p.canary_percent,
                                                     "canaryBakeTimeInMinutes": round(p.canary_bake_minutes)}
        made = provision(cfg, clients, deployment_configuration=dep_config)

        pki = make_pki(tmp, ["cutover-probe", "sandbox-agents"])
        sentinel = cfg.cutover.probes.sentinel or Sentinel(caller="cutover-sentinel", api_key_env="unused")
        key_file = tmp / "sentinel.key"
        api_keys = {f"key-{secrets.token_hex(8)}": caller for caller in ("sandbox-agents", "brainstorm-cli")}
        sentinel_key = f"key-{secrets.token_hex(16)}"
        api_keys[sentinel_key] = sentinel.caller
        key_file.write_text(sentinel_key + "\n", encoding="utf-8")
        key_file.chmod(0o600)

        shipper = LogShipper(clients["logs"], cfg.observability.log_group_name)
        stack.callback(shipper.close)
        metric_filter = LegitimateWriteFilter(cfg, clients["cloudwatch"], period=60 * p.seconds_per_minute)
        stack.callback(metric_filter.stop)
        shipper.on_ingest.append(metric_filter.ingest)
        _seed_history(shipper, scenario, time.time())

        def read_parameter() -> str:
            return clients["ssm"].get_parameter(Name=cfg.gateway.parameter_name)["Parameter"]["Value"]

        behaviour = Behaviour(verify_chain=scenario != "untrusted-cert", key_before_mtls=scenario != "blind-watch")
        db_pool = None if pool_hold is None else PoolModel(
            size=cfg.database.pool_size, hold=pool_hold, timeout=float(cfg.service.request_timeout))
        settings = GatewaySettings(routes=cfg.cutover.gate.routes, api_keys=api_keys, read_parameter=read_parameter,
                                   ca=pki.ca, shipper=shipper, fields=cfg.access_log, behaviour=behaviour,
                                   db_pool=db_pool)
        front = Front(pki, GROUPS)
        if db_pool is not None:  # slow (pooled) answers: the ALB's idle timeout bounds the listener's wait, as in the stack
            front.target_timeout = float(cfg.service.idle_timeout_seconds)
        stack.callback(front.stop)
        if p.strategy == "canary":
            front.add_listener("test", {GROUPS[0]: 100.0})
        from moto.ecs.models import ecs_backends

        backend = ecs_backends[account][cfg.region]
        svc = backend.services[f"{cfg.service.cluster_name}:{cfg.service.service_name}"]
        messages: list[str] = []
        ecs = EcsStandIn(front=front, settings=settings, service=svc, task_definition=made["task_definition"],
                         account=account, region=cfg.region, plan=p, cloudwatch=clients["cloudwatch"],
                         deployment_config=dep_config, log=messages.append)
        server.ecs_response = ecs_response_class(ecs)
        ecs.start()
        stack.callback(ecs.close)

        world_flipped = threading.Event()
        caller_later = threading.Event()  # operator-vanishes: the caller comes once the deployment bakes
        changes: list[tuple[float, int, str]] = []
        stop_watch = threading.Event()

        def watch_parameter() -> None:  # the world's own view of the flip (not the tool's)
            last = None
            while not stop_watch.wait(0.1):
                with contextlib.suppress(Exception):
                    prm = clients["ssm"].get_parameter(Name=cfg.gateway.parameter_name)["Parameter"]
                    if prm["Version"] != last:
                        last = prm["Version"]
                        mode = read_mode(prm["Value"])
                        changes.append((time.time(), int(prm["Version"]), mode))
                        if mode == "strict":
                            world_flipped.set()
        watcher = threading.Thread(target=watch_parameter, name="sandbox-flip-watch", daemon=True)
        watcher.start()
        stack.callback(watcher.join, 5)
        stack.callback(stop_watch.set)

        traffic = Traffic(front.url, pki, cfg.cutover.gate.routes,
                          keys={c: k for k, c in api_keys.items()},
                          unenrolled_from=world_flipped if scenario == "unenrolled-caller" else
                          caller_later if scenario == "operator-vanishes" else None)
        stack.callback(traffic.stop)

        # The tool gets the world's own copy of the config (so writing the new mode back never
        # touches the repository's file) pointing at this world's gateway, certificates and key.
        config_dir = tmp / "config"
        config_dir.mkdir()
        config_copy = config_dir / f"{cfg.environment}.yaml"
        probe = pki.clients["cutover-probe"]
        probes = dataclasses.replace(
            cfg.cutover.probes, base_url=front.url, client_cert=probe.cert, client_key=probe.key,
            ca_bundle=pki.ca_cert,
            sentinel=dataclasses.replace(sentinel, api_key_file=str(key_file), api_key_env=None))
        test_url = front.listeners["test"].url if "test" in front.listeners else None
        world_cfg = dataclasses.replace(cfg, source=str(config_copy),
                                        service=_world_service(cfg, chosen, settings_d, test_url),
                                        cutover=dataclasses.replace(cfg.cutover, probes=probes))
        config_copy.write_text(_world_yaml(cfg, world_cfg, chosen), encoding="utf-8")

        world = SandboxWorld(cfg=world_cfg, endpoint=server.endpoint, env=env, front_url=front.url, test_url=test_url,
                             scenario=scenario, strategy=chosen, account=account, directory=tmp, config_dir=config_dir,
                             pki=pki, front=front, ecs=ecs, traffic=traffic, shipper=shipper,
                             metric_filter=metric_filter, plan=p, api_keys=api_keys, parameter_changes=changes,
                             flipped=world_flipped)
        world._clients.update(clients)
        world.restorer_results = _wire_restorer(world, cfg)
        world.unenrolled_gate = caller_later
        if scenario == "operator-vanishes":
            # The caller shows up once production traffic has moved and the deployment bakes, unless
            # a driver (cutover/sandbox/vanish.py) lets it in itself, right after killing the tool.
            def on_stage(_dep: str, stage: str) -> None:
                if stage == "BAKE_TIME" and not world.driven:
                    caller_later.set()
            ecs.on_stage(on_stage)
            if chosen == "rolling":  # no bake in a rolling deployment: the caller comes once it is done
                ecs.on_event(lambda ev: caller_later.set()
                             if ev["detail"]["eventName"] == "SERVICE_DEPLOYMENT_COMPLETED" and not world.driven
                             else None)
        if admin:
            from cutover.sandbox.admin import AdminServer

            adm = AdminServer(world)
            stack.callback(adm.stop)
            world.admin_url = adm.url
        # Live traffic has reached the log group, as a live gateway's would have (no fixed sleep).
        shipper.shipped.wait(10)
        listeners = f"gateway {front.url}" + (f", test listener {test_url}" if test_url else "")
        ui.info(f"sandbox: scenario {scenario}, strategy {chosen}; moto at {server.endpoint}; {listeners} -> "
                f"{len(front.tasks)} tasks ({', '.join(t.mode for t in front.tasks)}); private files in {tmp}; "
                f"ready in {time.monotonic() - t0:.1f}s")
        try:
            yield world
        finally:
            traffic.stop()
            route = cfg.cutover.gate.routes[0]
            status = post(traffic.host, traffic.port, traffic.plain, route, key=world.key_of("brainstorm-cli"),
                          agent="brainstorm-cli/0.9")
            for m in messages:
                ui.warn(m)
            ui.info(f"sandbox: after the run the tasks run {', '.join(t.mode for t in front.tasks) or 'nothing'}; "
                    f"POST {route} without a client cert (caller brainstorm-cli) -> {status}"
                    + {403: " (refused: what strict does to a caller without a cert)",
                       200: " (served: advisory)"}.get(status, ""))


def _wire_restorer(world: SandboxWorld, cfg: EnvConfig) -> list[dict]:
    """EventBridge's rule and the restorer Lambda (restorer/handler.py, the code the stack deploys),
    invoked asynchronously on this service's deployment events, as in AWS."""
    from restorer.handler import Settings, restore

    settings = Settings(gateway_parameter=cfg.gateway.parameter_name, journal_parameter=cfg.journal_parameter,
                        lock_parameter=cfg.lock_parameter, service_arn=world.ecs.service_arn,
                        cluster_name=cfg.service.cluster_name, service_name=cfg.service.service_name)
    results: list[dict] = []

    def invoke(event: dict) -> None:
        clients = {"ssm": _client("ssm", world.env), "ecs": _client("ecs", world.env)}
        try:
            results.append(restore(event, settings, clients, now=time.time))
        except Exception as exc:  # EventBridge would retry, then the DLQ
            results.append({"action": "failed", "message": f"{type(exc).__name__}: {exc}"})

    world.on_deployment_event(lambda event: threading.Thread(target=invoke, args=(event,), name="sandbox-restorer",
                                                             daemon=True).start())
    return results


def load_world_config(config_dir: Path, env: str = "sandbox") -> EnvConfig:
    """The world's config as another process reads it (used by tests to prove the copy agrees)."""
    return load(env, config_dir)
