"""The legitimate-403 metric filter (a deployment alarm ECS rolls back on) and the cutover tool's
classifier (cutover.mtls.parse_access + classify_403) must call the same access-log lines legitimate.

How this is checked, and what is not:

- CloudWatch's side is a small evaluator below (`CloudWatchJsonPattern`) written from the documented
  JSON filter-pattern semantics (CloudWatch Logs user guide, "Filter and pattern syntax", JSON log
  events): `{ SELECTOR OP VALUE }`, `&&` binds tighter than `||`, parentheses; `*` as a wildcard only
  at the start and/or end of a string (`Ev*ent` is literal); `IS NULL` only for JSON null; `NOT EXISTS`
  only for an absent property; a selector that points to an object or array never matches (neither
  `=` nor `!=`). Where the documentation is silent the evaluator takes the strict reading: string
  comparisons apply to string and number values (numbers by their JSON text, as `{ $.latency = * }`
  matches a number in the guide), numeric comparisons only to JSON numbers, and neither to booleans,
  null or absent properties; a message must be a JSON object as a whole. The pattern is written so that
  its verdicts do not depend on those readings (both status spellings; explicit NOT EXISTS / IS NULL
  branches), and the evaluator is itself checked against the guide's own examples.
- That evaluator is not CloudWatch. The authority is CloudWatch's `TestMetricFilter` API, which needs an
  AWS account (there is none here). moto cannot stand in: it does not implement TestMetricFilter (it
  raises NotImplementedError, asserted below, so this test notices the day it does), and its
  FilterLogEvents ignores JSON patterns (it returns every event, also asserted). What moto can check is
  that PutMetricFilter accepts the pattern (the 1024-character limit) and stores it unchanged.
- Before relying on the alarm in production, run the table through the real API once:
  `aws logs test-metric-filter --filter-pattern '<pattern>' --log-event-messages ...`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from cutover import mtls
from cutover.mtls import LEGITIMATE, classify_403, parse_access
from envconfig import AccessLog, load
from stacks import observability
from stacks.observability import legitimate_mesh_write_403
from tests.test_stack import LEGITIMATE_403_PATTERN

FIELDS = AccessLog()

# ---------------------------------------------------------------------- the evaluator

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<lp>\() | (?P<rp>\)) | (?P<and>&&) | (?P<or>\|\|)
    | (?P<postfix>IS\s+NULL|NOT\s+EXISTS|IS\s+TRUE|IS\s+FALSE)
    | (?P<selector>\$(?:\.[A-Za-z0-9_-]+|\[\d+\])+)
    | (?P<op>!=|<=|>=|=|<|>)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<number>[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![^\s()&|]))
    | (?P<word>[^\s()&|"]+)
    )""", re.VERBOSE)
_MISSING = object()


@dataclass
class _Cmp:
    selector: str
    op: str
    value: Any        # str for string comparisons, float for numeric ones, None for postfix
    kind: str         # "string" | "number" | "postfix"


class CloudWatchJsonPattern:
    def __init__(self, pattern: str) -> None:
        text = pattern.strip()
        if not (text.startswith("{") and text.endswith("}")):
            raise ValueError("not a JSON filter pattern")
        self.tokens = self._tokenize(text[1:-1])
        self.pos = 0
        self.tree = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.pos]}")

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        out, i = [], 0
        while i < len(text):
            if text[i:].strip() == "":
                break
            m = _TOKEN.match(text, i)
            if not m or m.end() == i:
                raise ValueError(f"cannot read pattern at {text[i:]!r}")
            kind = m.lastgroup
            assert kind is not None
            out.append((kind, m.group(kind)))
            i = m.end()
        return out

    def _peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def _take(self, kind: str) -> str:
        if self._peek() != kind:
            raise ValueError(f"expected {kind} at token {self.pos}")
        self.pos += 1
        return self.tokens[self.pos - 1][1]

    def _or(self):
        node = self._and()
        while self._peek() == "or":
            self._take("or")
            node = ("or", node, self._and())
        return node

    def _and(self):
        node = self._term()
        while self._peek() == "and":
            self._take("and")
            node = ("and", node, self._term())
        return node

    def _term(self):
        if self._peek() == "lp":
            self._take("lp")
            node = self._or()
            self._take("rp")
            return node
        selector = self._take("selector")
        if self._peek() == "postfix":
            return _Cmp(selector, " ".join(self._take("postfix").split()), None, "postfix")
        op = self._take("op")
        kind = self._peek()
        if kind == "string":
            return _Cmp(selector, op, json.loads(self._take("string")), "string")
        if kind == "number" and op in ("=", "!=", "<", "<=", ">", ">="):
            return _Cmp(selector, op, float(self._take("number")), "number")
        return _Cmp(selector, op, self._take("word"), "string")

    # ------------------------------------------------------------------ evaluation

    def matches(self, message: str) -> bool:
        try:
            event = json.loads(message)
        except ValueError:
            return False
        return isinstance(event, dict) and self._eval(self.tree, event)

    def _eval(self, node, event: dict) -> bool:
        if isinstance(node, tuple):
            op, left, right = node
            return (self._eval(left, event) and self._eval(right, event)) if op == "and" else \
                   (self._eval(left, event) or self._eval(right, event))
        value = _resolve(event, node.selector)
        if node.kind == "postfix":
            return {"IS NULL": value is None, "NOT EXISTS": value is _MISSING,
                    "IS TRUE": value is True, "IS FALSE": value is False}[node.op]
        if value is _MISSING or value is None or isinstance(value, (bool, dict, list)):
            return False  # only value nodes (strings, numbers) are compared, with = and != alike
        if node.kind == "number":
            if not isinstance(value, (int, float)):
                return False
            return {"=": value == node.value, "!=": value != node.value, "<": value < node.value,
                    "<=": value <= node.value, ">": value > node.value, ">=": value >= node.value}[node.op]
        text = value if isinstance(value, str) else json.dumps(value)
        hit = _wildcard(node.value, text)
        return hit if node.op == "=" else (not hit if node.op == "!=" else False)


def _resolve(event: Any, selector: str) -> Any:
    node = event
    for name, index in re.findall(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]", selector):
        if name:
            if not isinstance(node, dict) or name not in node:
                return _MISSING
            node = node[name]
        else:
            if not isinstance(node, list) or int(index) >= len(node):
                return _MISSING
            node = node[int(index)]
    return node


def _wildcard(term: str, text: str) -> bool:
    if term == "*":
        return True
    starts, ends = term.startswith("*"), term.endswith("*")
    core = term[1 if starts else 0:len(term) - 1 if ends else len(term)]
    if starts and ends:
        return core in text
    if ends:
        return text.startswith(core)
    if starts:
        return text.endswith(core)
    return text == term  # a '*' in the middle is literal ("Ev*ent will only match the actual string Ev*ent")


# ---------------------------------------------------------------------- the evaluator vs the guide's examples

GUIDE_EVENT = json.dumps({
    "eventType": "UpdateTrail", "sourceIPAddress": "111.111.111.111", "arrayKey": ["value", "another value"],
    "objectList": [{"name": "a", "id": 1}, {"name": "b", "id": 2}], "SomeObject": None, "ThisFlag": True})
GUIDE_COMPOUND = json.dumps({
    "user": {"id": 1, "email": "John.Stiles@example.com"},
    "users": [{"id": 2, "email": "John.Doe@example.com"}, {"id": 3, "email": "Jane.Doe@example.com"}],
    "actions": ["GET", "PUT", "DELETE"], "coordinates": [[0, 1, 2], [4, 5, 6], [7, 8, 9]]})


@pytest.mark.parametrize("pattern, event, expected", [
    ('{ $.eventType = "UpdateTrail" }', GUIDE_EVENT, True),
    ("{ $.sourceIPAddress != 123.123.* }", GUIDE_EVENT, True),
    ('{ $.arrayKey[0] = "value" }', GUIDE_EVENT, True),
    ("{ $.objectList[1].id = 2 }", GUIDE_EVENT, True),
    ("{ $.SomeObject IS NULL }", GUIDE_EVENT, True),
    ("{ $.SomeOtherObject NOT EXISTS }", GUIDE_EVENT, True),
    ("{ $.ThisFlag IS TRUE }", GUIDE_EVENT, True),
    ('{ ($.user.id = 1) && ($.users[0].email = "John.Doe@example.com") }', GUIDE_COMPOUND, True),
    ('{ ($.user.id = 2 && $.users[0].email = "nonmatch") || $.actions[2] = "GET" }', GUIDE_COMPOUND, False),
    ('{ $.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = nonmatch && $.actions[2] = nomatch }',
     GUIDE_COMPOUND, True),
    ('{ ($.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = nonmatch) && $.actions[2] = nomatch }',
     GUIDE_COMPOUND, False),
    ('{ $.users = 1 }', json.dumps({"users": [1, 2, 3]}), False),     # selector on an array: no match ...
    ('{ $.users != 1 }', json.dumps({"users": [1, 2, 3]}), False),    # ... for = and != alike
    ('{ $.eventType = "*Trail" }', GUIDE_EVENT, True),
    ('{ $.eventType = "Update*" }', GUIDE_EVENT, True),
    ('{ $.eventType = "Up*ail" }', GUIDE_EVENT, False),                # middle '*' is literal
    ("{ $.latency = * }", json.dumps({"latency": 50}), True),          # the guide's metric-value example
])
def test_the_evaluator_follows_the_guides_examples(pattern, event, expected):
    assert CloudWatchJsonPattern(pattern).matches(event) is expected


# ---------------------------------------------------------------------- the table


def line(**fields: Any) -> str:
    return json.dumps(fields)


AGENT = "/v1/agent/delegate"
CLI = "brainstorm-cli/2.4.1"
PROBE_UA = "brainstorm-cutover-probe/run-1"

# (description, access-log line, is it a legitimate mesh-write 403?)
TABLE: list[tuple[str, str, bool]] = [
    ("legitimate: authenticated caller, no client cert", line(path=AGENT, status=403, caller="brainstorm-cli",
                                                              userAgent=CLI), True),
    ("legitimate on another mesh-write route", line(path="/v1/agent/task-runs/42", status=403, caller="svc-a",
                                                    userAgent="python-httpx/0.27"), True),
    ("legitimate without a user agent field", line(path=AGENT, status=403, caller="brainstorm-cli"), True),
    ("legitimate with a null user agent", line(path=AGENT, status=403, caller="x", userAgent=None), True),
    ("legitimate with an empty run id", line(path=AGENT, status=403, caller="x", userAgent=CLI, cutoverRunId=""),
     True),
    ("legitimate with a null run id", line(path=AGENT, status=403, caller="x", userAgent=CLI, cutoverRunId=None),
     True),
    ("legitimate, status as a string", line(path=AGENT, status="403", caller="brainstorm-cli", userAgent=CLI), True),
    ("legitimate, status as 403.0", line(path=AGENT, status=403.0, caller="brainstorm-cli", userAgent=CLI), True),
    ("legitimate: the probe marker is case-sensitive", line(path=AGENT, status=403, caller="x",
                                                            userAgent="Brainstorm-Cutover-Probe/1.0"), True),
    ("legitimate: probe name not at the start of the UA", line(path=AGENT, status=403, caller="x",
                                                               userAgent="curl/8 brainstorm-cutover-probe"), True),
    ("legitimate: a caller of one blank", line(path=AGENT, status=403, caller=" ", userAgent=CLI), True),
    ("legitimate: numeric caller id", line(path=AGENT, status=403, caller=1234, userAgent=CLI), True),
    ("legitimate: numeric caller id 0", line(path=AGENT, status=403, caller=0, userAgent=CLI), True),
    ("legitimate, extra fields around", line(ts="2026-11-29T03:57:02Z", level="info", path=AGENT, status=403,
                                             caller="brainstorm-cli", userAgent=CLI, latencyMs=3), True),
    ("probe: both marks (user agent and run id)", line(path=AGENT, status=403, caller="p", userAgent=PROBE_UA,
                                                      cutoverRunId="run-1"), False),
    ("sentinel: both marks, authenticated", line(path=AGENT, status=403, caller="cutover-sentinel",
                                                 userAgent="brainstorm-cutover-probe/run-2 sentinel",
                                                 cutoverRunId="run-2"), False),
    ("sentinel, status as a string", line(path=AGENT, status="403", caller="cutover-sentinel",
                                          userAgent="brainstorm-cutover-probe/run-2 sentinel", cutoverRunId="run-2"),
     False),
    # One mark alone is a caller: a hurt caller must never hide behind a look-alike.
    ("caller: the probe's user agent without the run id", line(path=AGENT, status=403, caller="probe",
                                                               userAgent=PROBE_UA), True),
    ("caller: the bare probe name, no slash", line(path=AGENT, status=403, caller="probe",
                                                   userAgent="brainstorm-cutover-probe"), True),
    ("caller: a harness named like the probe", line(path=AGENT, status=403, caller="brainstorm-cli",
                                                    userAgent="brainstorm-cutover-probe-harness/2.1",
                                                    cutoverRunId="r"), True),
    ("caller: a run id without the probe's user agent", line(path=AGENT, status=403, caller="brainstorm-cli",
                                                             userAgent=CLI, cutoverRunId="run-1795925624"), True),
    ("unauthenticated: empty caller", line(path=AGENT, status=403, caller="", userAgent=CLI), False),
    ("unauthenticated: no caller field", line(path=AGENT, status=403, userAgent=CLI), False),
    ("unauthenticated: null caller", line(path=AGENT, status=403, caller=None, userAgent=CLI), False),
    ("served: 200", line(path=AGENT, status=200, caller="brainstorm-cli", userAgent=CLI), False),
    ("served: 200 as a string", line(path=AGENT, status="200", caller="brainstorm-cli", userAgent=CLI), False),
    ("401 is not 403", line(path=AGENT, status=401, caller="brainstorm-cli"), False),
    ("500 is not 403", line(path=AGENT, status=500, caller="brainstorm-cli"), False),
    ("4030 is not 403", line(path=AGENT, status=4030, caller="brainstorm-cli"), False),
    ("status '403.0' as a string is not read as 403 by either", line(path=AGENT, status="403.0", caller="x"), False),
    ("other route", line(path="/v1/chat/completions", status=403, caller="brainstorm-cli", userAgent=CLI), False),
    ("prefix without the slash", line(path="/v1/agent", status=403, caller="brainstorm-cli"), False),
    ("a longer word is another route", line(path="/v1/agents/x", status=403, caller="brainstorm-cli"), False),
    ("routes are case-sensitive", line(path="/V1/agent/delegate", status=403, caller="brainstorm-cli"), False),
    ("mesh-write prefix in the middle", line(path="/proxy/v1/agent/x", status=403, caller="brainstorm-cli"), False),
    ("no path field", line(status=403, caller="brainstorm-cli", userAgent=CLI), False),
    ("null path", line(path=None, status=403, caller="brainstorm-cli"), False),
    ("no status field", line(path=AGENT, caller="brainstorm-cli", userAgent=CLI), False),
    ("null status", line(path=AGENT, status=None, caller="brainstorm-cli"), False),
    ("non-JSON access line", f"POST {AGENT} 403 caller=brainstorm-cli", False),
    ("timing line", "[api/cold-start] mtls handshake 12ms", False),
    ("empty line", "", False),
    ("broken JSON", '{"path": "/v1/agent/delegate", "status": 403, "caller": "x"', False),
    ("JSON string", json.dumps(f"{AGENT} 403"), False),
]

# Shapes where the two disagree, on purpose of neither: kept here so that a change to either side shows.
# (line, tool says legitimate, filter matches, why)
KNOWN_DIVERGENCES: list[tuple[str, bool, bool, str]] = [
    ("2026-11-29T03:57:02Z " + line(path=AGENT, status=403, caller="brainstorm-cli"), True, False,
     "the tool reads JSON from the first '{'; CloudWatch reads an event as JSON only when the whole message is. "
     "The gateway writes bare JSON lines through the awslogs driver, so production lines have no prefix."),
    (line(path=AGENT, status=403, caller=True), True, False,
     "a boolean caller: the tool stringifies it ('True'); CloudWatch compares strings and numbers only."),
    (json.dumps([{"path": AGENT, "status": 403, "caller": "x"}]), True, False,
     "an access object inside other JSON: the tool reads every object in an event (merged lines, text around "
     "it) so a hurt caller is never hidden by the event's shape; CloudWatch's JSON pattern needs a top-level "
     "object. The tool errs towards rolling back; the alarm is the backstop, not the judge."),
]


def tool_says_legitimate(message: str) -> bool:
    event = parse_access(message, FIELDS)
    return event is not None and classify_403(event) == LEGITIMATE


@pytest.fixture(scope="module")
def pattern() -> CloudWatchJsonPattern:
    return CloudWatchJsonPattern(_pattern_text())


def _pattern_text() -> str:
    return legitimate_mesh_write_403(FIELDS).log_pattern_string


def test_the_filter_is_the_one_the_stack_deploys():
    # tests/test_stack.py asserts the synthesized production template holds LEGITIMATE_403_PATTERN.
    assert _pattern_text() == LEGITIMATE_403_PATTERN
    assert load("production").access_log == FIELDS, "production uses the default field names"


def test_the_stack_spells_the_tools_markers_the_same_way():
    assert observability.MESH_WRITE_PREFIX == mtls.MESH_WRITE_PREFIX
    assert observability.PROBE_USER_AGENT == mtls.PROBE_USER_AGENT


@pytest.mark.parametrize("what, message, legitimate", TABLE, ids=[t[0] for t in TABLE])
def test_the_tool_and_the_metric_filter_agree(pattern, what, message, legitimate):
    assert tool_says_legitimate(message) is legitimate, f"tool: {what}"
    assert pattern.matches(message) is legitimate, f"filter: {what}"


def test_the_table_covers_every_class_the_tool_knows():
    classes = set()
    for _, message, _ in TABLE:
        event = parse_access(message, FIELDS)
        classes.add(None if event is None else classify_403(event))
    assert classes == {mtls.LEGITIMATE, mtls.PROBE, mtls.SENTINEL, mtls.UNAUTHENTICATED, None}


@pytest.mark.parametrize("message, tool, cloudwatch, why", KNOWN_DIVERGENCES, ids=["prefix", "bool-caller", "nested"])
def test_known_divergences_stay_known(pattern, message, tool, cloudwatch, why):
    assert (tool_says_legitimate(message), pattern.matches(message)) == (tool, cloudwatch), why


# ---------------------------------------------------------------------- what moto can and cannot check


@mock_aws
def test_moto_stores_the_pattern_but_cannot_evaluate_it():
    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName="/ecs/gw")
    text = _pattern_text()
    assert len(text) <= 1024, "CloudWatch's (and moto's) limit for a filter pattern"
    logs.put_metric_filter(logGroupName="/ecs/gw", filterName="legit", filterPattern=text, metricTransformations=[
        {"metricName": "LegitimateMeshWrite403", "metricNamespace": "ns", "metricValue": "1"}])
    (stored,) = logs.describe_metric_filters(logGroupName="/ecs/gw")["metricFilters"]
    assert stored["filterPattern"] == text
    with pytest.raises(NotImplementedError):  # the day moto implements it, use it here
        logs.test_metric_filter(filterPattern=text, logEventMessages=[TABLE[0][1]])
    # moto's FilterLogEvents does not apply JSON patterns: a 200 line comes back too.
    logs.create_log_stream(logGroupName="/ecs/gw", logStreamName="s")
    served = line(path=AGENT, status=200, caller="brainstorm-cli")
    logs.put_log_events(logGroupName="/ecs/gw", logStreamName="s",
                        logEvents=[{"timestamp": int(time.time() * 1000), "message": served}])
    events = logs.filter_log_events(logGroupName="/ecs/gw", filterPattern=text)["events"]
    assert [e["message"] for e in events] == [served]
