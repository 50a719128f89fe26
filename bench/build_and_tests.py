"""9. Build and tests: CDK synth time per environment (a fresh process building that one stack,
cdk-nag included), `npx cdk synth` of the whole app, and the whole pytest suite (e2e included,
one run as `make test` runs it, 3 xdist workers; its outcome is recorded with the time), on this
machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from common import ROOT, save, summary

RUNS = 3
ONE = """
import sys, time
t = time.perf_counter()
from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks
from envconfig import load
from stacks.gateway_stack import GatewayStack
app = App(outdir=sys.argv[2])
GatewayStack(app, config=load(sys.argv[1]))
Validations.of(app).add_plugins(AwsSolutionsChecks(app))
app.synth()
print("SYNTH", time.perf_counter() - t)
"""


def timed(cmd: list[str], **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, **kw)
    return time.perf_counter() - t


def main() -> None:
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "PYTHONPATH": str(ROOT)}
    per_env = {}
    for name in ("production", "staging", "sandbox"):
        walls = [timed([sys.executable, "-c", ONE, name, f"/tmp/bench-cdk-{name}"], env=env) for _ in range(RUNS)]
        per_env[name] = summary(walls)
        print(f"synth {name}: median {per_env[name]['median']:.1f}s (fresh process, incl. jsii start-up)")
    whole = summary([timed(["npx", "cdk", "synth", "--quiet", "--output", "/tmp/bench-cdk-all"], env=env)
                     for _ in range(RUNS)])
    print(f"npx cdk synth (3 stacks): median {whole['median']:.1f}s")
    # The whole suite, e2e included, timed once. A failing test is recorded (exit code, the failed
    # tests, pytest's last line), not hidden and not allowed to lose the figures above.
    t = time.perf_counter()
    # As `make test` runs it: pyproject's addopts (3 xdist workers) included.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rf"],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    suite = time.perf_counter() - t
    lines = proc.stdout.strip().splitlines()
    failed = [ln.split(" ", 1)[1].split(" - ")[0] for ln in lines if ln.startswith("FAILED ")]
    print(f"pytest suite: {suite:.0f}s, exit {proc.returncode}: {lines[-1] if lines else ''}")
    save("build_and_tests", {"synth_per_env": per_env, "cdk_synth_all": whole, "pytest_seconds": suite,
                             "pytest_exit": proc.returncode, "pytest_summary": lines[-1] if lines else "",
                             "pytest_failed": failed})


if __name__ == "__main__":
    main()
