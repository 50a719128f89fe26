"""The mTLS recipe, pure: the flag's place in YAML, the gate's patterns, what a 403 means.

Nothing here talks to AWS or the network; the engine feeds it text and log events.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cutover_core.flag import MODE_PATH, FlagError, read_mode, with_mode
from envconfig import AccessLog, FutureCaller, Gate

PROBE_USER_AGENT = "brainstorm-cutover-probe"
PROBE_MARK = f"{PROBE_USER_AGENT}/"  # the user agent's prefix: brainstorm-cutover-probe/<run-id>
RUN_HEADER = "X-Cutover-Run"
MESH_WRITE_PREFIX = "/v1/agent/"


# ---------------------------------------------------------------- the flag inside YAML text


def spliced(text: str, mode: str, path: tuple[str, ...] = MODE_PATH) -> str:
    """with_mode, checked by a YAML parser: the result parses to the same document with only the
    flag changed, or FlagError. (cutover_core.flag is standard-library only for the Lambda; the tool
    has PyYAML, so it double-checks before it writes anything.)"""
    import yaml

    out = with_mode(text, mode, path)
    try:
        before, after = yaml.safe_load(text), yaml.safe_load(out)
        node = before
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = mode
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise FlagError(f"the document does not parse as YAML with {'.'.join(path)} where the splice found it "
                        f"({type(exc).__name__})") from None
    if after != before:
        raise FlagError(f"changing {'.'.join(path)} in place would change more than the flag; nothing written")
    return out


def write_config_mode(config_file: str | Path, mode: str) -> bool:
    """Write the new mode back into config/<env>.yaml so the next `cdk deploy` agrees with
    production. Returns False when the file already says so."""
    path = Path(config_file)
    text = path.read_text(encoding="utf-8")
    full = ("gateway", "document", *MODE_PATH)
    if read_mode(text, full) == mode:
        return False
    path.write_text(spliced(text, mode, full), encoding="utf-8")
    return True


# ---------------------------------------------------------------- the gate


def gate_filter_pattern(gate: Gate) -> str:
    """One server-side pre-filter covering every pattern and route (CloudWatch OR terms).

    Only a pre-filter: the counts are always computed in `GateCounts.add`, so a filter that the
    server ignores (moto) or widens cannot change the verdict.
    """
    terms = dict.fromkeys([*gate.patterns, *gate.routes])
    return " ".join(f'?"{t}"' for t in terms)


@dataclass
class GateCounts:
    gate: Gate
    fields: AccessLog = field(default_factory=AccessLog)
    patterns: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    excluded: int = 0
    own: int = 0      # lines of any cutover run's probes or sentinel: never bypass traffic
    scanned: int = 0

    def __post_init__(self) -> None:
        for p in self.gate.patterns:
            self.patterns[p] += 0
        for r in self.gate.routes:
            self.routes[r] += 0

    def add(self, message: str) -> None:
        self.scanned += 1
        if is_own_traffic(message, self.fields):
            self.own += 1  # after a rollback, the tool's own probes must not turn the next gate RED
            return
        for p in self.gate.patterns:
            if p not in message:
                continue
            if p == self.gate.broad_pattern and any(x in message for x in self.gate.broad_excludes):
                self.excluded += 1  # [api/cold-start] timing lines mention mtls but are not bypasses
                continue
            self.patterns[p] += 1
        for r in self.gate.routes:
            if r in message:
                self.routes[r] += 1

    @property
    def total(self) -> int:
        return sum(self.patterns.values()) + sum(self.routes.values())


@dataclass(frozen=True)
class GateVerdict:
    green: bool
    reasons: tuple[str, ...]
    counts: GateCounts
    callers: tuple[tuple[str, str], ...]  # (name, state) for the report


def shown_path(path: str | Path) -> str:
    """A path as an operator would type it: relative to the working directory when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(p)


def judge_gate(counts: GateCounts, callers: tuple[FutureCaller, ...], *, guard_alarms: tuple[str, ...],
               alarm_states: dict[str, str], deployments: list[dict], running: int, desired: int,
               promotion: str | None = None, config_file: str | None = None) -> GateVerdict:
    # Only bypass events make the gate RED. Route counts are context (the ship log's table):
    # callers that present an enrolled client cert are not affected by strict mode, and a
    # caller without one shows up as an mtls-advisory bypass line, which is counted above.
    reasons: list[str] = []
    for p, n in counts.patterns.items():
        if n:
            reasons.append(f"{n} log event(s) match {p!r} in the lookback window")
    states = []
    where = shown_path(config_file) if config_file else "config/<env>.yaml"
    for i, c in enumerate(callers):
        if c.enrolled:
            states.append((c.name, "enrolled"))
        elif c.acknowledged:
            states.append((c.name, f"acknowledged: {c.acknowledged}"))
        else:
            # The decision is the operator's: say exactly which key records it, and where.
            states.append((c.name, "NOT ENROLLED"))
            key = f"cutover.future_callers[{i}]"
            reasons.append(f"future caller {c.name!r} is neither enrolled nor acknowledged: set {key}.enrolled: true "
                           f"(it has a CAF client cert) or {key}.acknowledged: \"<why it is safe>\" in {where}")
    firing = [a for a in guard_alarms if alarm_states.get(a) == "ALARM"]
    if firing:
        reasons.append(f"guard alarm(s) already in ALARM: {', '.join(firing)} (the watch would be blind)")
    missing = [a for a in guard_alarms if a not in alarm_states]
    if missing:
        reasons.append(f"guard alarm(s) missing: {', '.join(missing)} (a guard that does not exist guards "
                       "nothing: deploy the stack, or fix observability.alarm_prefix)")
    rollout = deployments[0].get("rolloutState") if len(deployments) == 1 else None
    if len(deployments) != 1 or rollout != "COMPLETED":
        reasons.append(f"a deployment is in progress ({len(deployments)} deployment(s), rollout {rollout or 'mixed'})")
    if running < desired:
        reasons.append(f"running tasks {running} < desired {desired}")
    if promotion:
        reasons.append(promotion)
    return GateVerdict(green=not reasons, reasons=tuple(reasons), counts=counts, callers=tuple(states))


# ---------------------------------------------------------------- 403 classification


LEGITIMATE, PROBE, SENTINEL, UNAUTHENTICATED = "legitimate", "probe", "sentinel", "unauthenticated"
SENTINEL_MARK = "sentinel"  # in the user agent after the probe prefix: `brainstorm-cutover-probe/<run> sentinel`


@dataclass(frozen=True)
class AccessEvent:
    route: str
    status: int
    caller: str
    user_agent: str
    run_id: str

    @property
    def mesh_write(self) -> bool:
        return self.route.startswith(MESH_WRITE_PREFIX)

    @property
    def marked(self) -> bool:
        """The tool's own request (a probe or the sentinel of some run): it carries BOTH marks the
        tool always sends, the run header (logged in the run-id field) and the user agent
        `brainstorm-cutover-probe/<run>`. One mark alone is not enough: a caller's harness named
        `brainstorm-cutover-probe-...` or a client that happens to send X-Cutover-Run must still
        count as a caller, or a hurt caller would be invisible to the gate, the watch and the alarm."""
        return bool(self.run_id) and self.user_agent.startswith(PROBE_MARK)

    @property
    def sentinel(self) -> bool:
        return self.marked and SENTINEL_MARK in self.user_agent.split()


_DECODER = json.JSONDecoder()
_MAX_BRACES = 64  # per line, braces that open no JSON ("[req {id}] {...}"): read past, within reason


def parse_accesses(message: str, fields: AccessLog) -> list[AccessEvent]:
    """Every access-log JSON object in one log event, in order.

    One event is usually one line holding one object. But a logger can merge lines into one event,
    put text before the object (braces included) or after it (`{...} (12ms)`): a hurt caller's 403
    must be read in all of these, or the watch would be blind to it while the sentinel's own,
    well-formed lines still prove it can see."""
    out: list[AccessEvent] = []
    for line in message.splitlines() or [message]:
        pos, tries = line.find("{"), 0
        while pos >= 0 and tries < _MAX_BRACES:
            try:
                data, end = _DECODER.raw_decode(line, pos)
            except (ValueError, RecursionError):  # deep nesting is not an access line either
                tries += 1  # only failures count: a line of many objects is read to its end
                pos = line.find("{", pos + 1)
                continue
            event = _access(data, fields)
            if event is not None:
                out.append(event)
                pos = line.find("{", end)
            else:
                pos = line.find("{", pos + 1)
    return out


def parse_access(message: str, fields: AccessLog) -> AccessEvent | None:
    """The first access-log event in a log event; None for anything else (app logs, timing lines)."""
    events = parse_accesses(message, fields)
    return events[0] if events else None


def _access(data: object, fields: AccessLog) -> AccessEvent | None:
    if not isinstance(data, dict) or fields.route_field not in data:
        return None
    try:
        status = int(data.get(fields.status_field, 0))
    except (TypeError, ValueError):
        return None
    return AccessEvent(
        route=str(data.get(fields.route_field) or ""),
        status=status,
        caller=_text(data.get(fields.caller_field)),
        user_agent=str(data.get(fields.user_agent_field) or ""),
        run_id=str(data.get(fields.run_id_field) or ""),
    )


def _text(value: object) -> str:
    """A field as text; absent, null, empty and false are no value (a caller id 0 is a caller)."""
    return "" if value is None or value is False or value == "" else str(value)


def is_own_traffic(message: str, fields: AccessLog) -> bool:
    """An access line of the tool's own probes or sentinel (any run): both marks (AccessEvent.marked).
    Other text is never the tool's: its probes carry no API key and the sentinel is only sent under
    strict, so neither causes an advisory bypass line."""
    # Only an event that is exactly one marked JSON object: any other text in it (a bypass warning
    # merged in, whatever the separator) must be counted, so such an event is not excluded.
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        return False
    event = _access(data, fields)
    return event is not None and event.marked


def classify_403(event: AccessEvent) -> str | None:
    """For a mesh-write 403: who got it. None when the event is not a mesh-write 403."""
    if not (event.mesh_write and event.status == 403):
        return None
    if event.marked:
        return SENTINEL if event.sentinel else PROBE  # ours (any run's): expected under strict
    if not event.caller:
        return UNAUTHENTICATED  # no API key: noise, it would have been refused anyway
    return LEGITIMATE
