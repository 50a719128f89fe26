"""cutover_core: the flag splice, the restore rule and the journal's state machine, the code the
tool and the restorer Lambda share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cutover_core.flag import FlagError, locate, read_mode, with_mode
from cutover_core.journal import (
    FINISHED,
    UNFINISHED,
    IllegalTransition,
    Journal,
    RestoreRecord,
    RunState,
    fit,
)
from cutover_core.restore import EXACT, FLAG_ONLY, NOTHING, plan_restore
from envconfig import load, render_document

ROOT = Path(__file__).resolve().parent.parent


def test_the_core_imports_with_the_standard_library_only():
    # -S: no site-packages at all, as in the Lambda runtime minus boto3.
    code = "import cutover_core.flag, cutover_core.journal, cutover_core.restore, cutover_core.lock"
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


VARIANTS = [
    "tls:\n  mtls:\n    meshWritesEnforcement: advisory\n",
    "---\n# c\ntls:   # t\n  mtls:\n\n    other: 1\n    meshWritesEnforcement: advisory   # advisory | strict\n  z: 2\n",
    "a:\n  mtls:\n    meshWritesEnforcement: strict\ntls:\n    mtls:\n        meshWritesEnforcement: 'advisory'\n",
    'tls:\n  "mtls":\n    "meshWritesEnforcement": "advisory"\n    routes:\n    - /v1/agent/x\n',
    "gateway: {name: x}\ntls:\n  mtls:\n    list:\n      - a: 1\n        meshWritesEnforcement: strict\n"
    "    meshWritesEnforcement: advisory\n",
    # quoted scalars with their escapes, on one line, are not mistaken for multi-line ones
    "note: 'production''s R20 test'\nq: \"a \\\"b\\\" c\"\ntls:\n  mtls:\n    meshWritesEnforcement: 'advisory'\n",
]


@pytest.mark.parametrize("text", VARIANTS)
@pytest.mark.parametrize("mode", ["advisory", "strict"])
def test_the_splice_agrees_with_a_yaml_parser_and_changes_only_the_flag(text, mode):
    out = with_mode(text, mode)
    before, after = yaml.safe_load(text), yaml.safe_load(out)
    before["tls"]["mtls"]["meshWritesEnforcement"] = mode
    assert after == before
    assert read_mode(out) == mode
    span = locate(text)
    assert out[:span.start] == text[:span.start] and out.endswith(text[span.end:])


def test_the_rendered_gateway_document_is_understood(config_dir):
    doc = render_document(load("production", config_dir).gateway.document)
    assert read_mode(doc) == "advisory" and read_mode(with_mode(doc, "strict")) == "strict"


@pytest.mark.parametrize("text, why", [
    ("tls: {mtls: {meshWritesEnforcement: strict}}\n", "not a block mapping"),
    ("tls:\n  mtls:\n    meshWritesEnforcement: a\n  mtls:\n    b: 1\n", "appears 2 times"),
    ("tls:\n  mtls:\n    meshWritesEnforcement: |\n      strict\n", "not a plain or quoted scalar"),
    ("tls:\n  mtls:\n    meshWritesEnforcement: &a strict\n", "not a plain or quoted scalar"),
    ("tls:\n\tmtls: 1\n", "tabs"),
    # a quoted scalar wrapped over two lines (as yaml.dump writes long ones): its text could hold keys
    ("note: 'a long\n  text: x'\ntls:\n  mtls:\n    meshWritesEnforcement: a\n", "multi-line quoted scalar"),
    ("other: 1\n", "not found"),
])
def test_what_cannot_be_placed_with_certainty_is_refused(text, why):
    with pytest.raises(FlagError, match=why):
        locate(text)


# ---------------------------------------------------------------- the restore rule

PREV = "gateway:\n  name: x\ntls:\n  mtls:\n    meshWritesEnforcement: advisory\n"
OURS = with_mode(PREV, "strict")
FOREIGN = OURS.replace("name: x", "name: y   # edited during the watch")


def rule(current, version, run_version=2):
    return plan_restore(current_value=current, current_version=version, previous_value=PREV, previous_version=1,
                        previous_mode="advisory", run_target="strict", run_version=run_version)


def test_our_version_gets_the_exact_previous_bytes_back():
    p = rule(OURS, 2)
    assert (p.rule, p.value, p.foreign_version) == (EXACT, PREV, None)


def test_a_foreign_version_keeps_every_byte_but_the_flag():
    p = rule(FOREIGN, 3)
    assert p.rule == FLAG_ONLY and p.foreign_version == 3
    assert p.value == FOREIGN.replace("meshWritesEnforcement: strict", "meshWritesEnforcement: advisory")


def test_a_lost_journal_entry_recognises_our_write_by_its_bytes():
    assert rule(OURS, 2, run_version=None).rule == EXACT
    assert rule(FOREIGN, 2, run_version=None).rule == FLAG_ONLY


def test_nothing_is_written_when_the_flag_is_already_back():
    assert rule(PREV, 3).rule == NOTHING
    assert rule(FOREIGN.replace("strict", "advisory"), 4).rule == NOTHING


# ---------------------------------------------------------------- the journal


def journal(**kw) -> Journal:
    return Journal(run_id="r", env="production", operator="arn:x", target="strict", previous_mode="advisory",
                   parameter="/p", started=1.0, **kw)


def test_the_state_machine_refuses_illegal_transitions():
    j = journal()
    for s in (RunState.DEPLOYING, RunState.PROBING, RunState.WATCHING, RunState.DONE):
        j.transition(s)
    with pytest.raises(IllegalTransition):
        j.transition(RunState.WATCHING)
    j.transition(RunState.ROLLING_BACK)
    with pytest.raises(IllegalTransition):
        j.transition(RunState.DONE)
    assert RunState.ROLLING_BACK in UNFINISHED and RunState.WATCH_CUT_SHORT in FINISHED


def test_the_journal_round_trips_and_ignores_a_newer_writers_keys():
    j = journal(previous_version=1, new_version=2, state=RunState.ROLLING_BACK,
                restore=RestoreRecord(rule=EXACT, by="restorer", at=5.0, from_version=2, to_version=3))
    j.record("flip", "done", 2.0, "v1 -> v2")
    data = j.to_dict()
    data["from_the_future"] = 1
    back = Journal.from_dict(data)
    assert back == j and back.state is RunState.ROLLING_BACK and back.restore.by == "restorer"


def test_a_long_story_still_fits_a_standard_parameter():
    j = journal(previous_version=1, new_version=2)
    for i in range(200):
        j.record(f"step-{i}", "done", float(i), "x" * 200)
    text = fit(j)
    assert len(text) <= 4096
    back = Journal.from_json(text)
    assert back.previous_version == 1 and back.new_version == 2
    assert back.steps[0].step == "step-0" and back.steps[-1].step == "step-199"
