from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

# The shipped production and staging configs leave the future-caller decision to the operator, so
# their gate is RED (tests/test_engine.py checks that). Tests that drive a cutover through the gate
# use a copy in which an operator has recorded that decision, exactly as the gate's message asks.
FIXTURE_ACK = 'acknowledged: "test fixture: the operator acknowledged this caller"'


def acknowledge_future_callers(path: Path) -> None:
    """Record `acknowledged` under every caller that has neither an enrollment nor an acknowledgement."""
    text = path.read_text(encoding="utf-8")
    new, n = re.subn(r"^( +)enrolled: false\n(?!\1acknowledged:)", rf"\g<0>\1{FIXTURE_ACK}\n", text, flags=re.M)
    assert n, f"no undecided future caller in {path}"
    path.write_text(new, encoding="utf-8")


def shipped_copy(tmp_path: Path) -> Path:
    """config/ as shipped, except that its undecided callers are acknowledged."""
    dst = tmp_path / "config"
    shutil.copytree(ROOT / "config", dst)
    for env in ("production", "staging"):
        acknowledge_future_callers(dst / f"{env}.yaml")
    return dst


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A private copy of config/ that a test may edit or break: callers acknowledged, and a
    made-up real probe URL (the tool refuses to act with a CHANGE-ME one)."""
    dst = shipped_copy(tmp_path)
    for env in ("production", "staging"):
        path = dst / f"{env}.yaml"
        path.write_text(path.read_text().replace("base_url: CHANGE-ME-gateway-https-url",
                                                 f"base_url: https://api.{env}.brainstorm-router.example.com"))
    return dst


def use_strategy(config_dir: Path, strategy: str, env: str = "production") -> None:
    """Rewrite `service.deployment` of a config copy: the engine tests on moto play rolling
    deployments (moto has no service deployments); the canary tests script them."""
    import re

    path = config_dir / f"{env}.yaml"
    text = path.read_text()
    block = "  deployment:\n    strategy: rolling\n" if strategy == "rolling" else None
    assert block, "only rolling is rewritten here"
    path.write_text(re.sub(r"  deployment:\n(?:    .*\n|\s*#.*\n)+", block, text, count=1))


def default_sigint() -> None:
    """Popen(preexec_fn=...): a child that gets Ctrl-C (SIGINT) must not inherit an ignored SIGINT.
    A shell starts background jobs (`make test &`, nohup) with SIGINT ignored, and Python keeps it
    ignored, so the child would never see the KeyboardInterrupt the test sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def world(config_dir):
    """moto with the production config playing rolling deployments and a fake clock (tests/fakes.py)."""
    from moto import mock_aws

    from envconfig import load
    from tests.fakes import make_world

    use_strategy(config_dir, "rolling")
    with mock_aws():
        yield make_world(load("production", config_dir))


def until(predicate, timeout: float = 30, every: float = 0.02):
    """Poll `predicate` until it returns something truthy (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(every)


@pytest.fixture
def recorded_aws(monkeypatch, tmp_path):
    """moto, credentials from the environment (no profile, no endpoint), the working directory in
    tmp_path, and a record of every AWS operation the tool makes (`cutover.aws.Aws._call`)."""
    import boto3
    from moto import mock_aws

    import cutover.aws

    monkeypatch.chdir(tmp_path)
    for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "BRAINSTORM_CONFIG_DIR", "CI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    calls: list[str] = []
    real = cutover.aws.Aws._call

    def record(self, client, op, **kwargs):
        calls.append(op)
        return real(self, client, op, **kwargs)

    monkeypatch.setattr(cutover.aws.Aws, "_call", record)
    with mock_aws():
        yield boto3.client("ssm", region_name="us-east-1"), calls
