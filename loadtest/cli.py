"""python -m loadtest: R20's load profile, open model, against a real URL or the sandbox.

    python -m loadtest --url https://api.example.com --api-key-env BR_LOADTEST_KEY --yes
    python -m loadtest --sandbox --pool 50                  # rehearsal: the local world, pool 50
    python -m loadtest --sandbox --pool 200 --stage 10rps:90s --stage 5rps:60s

Writes docs/load-test/<name>-<profile>-<UTC time>.md (the ship log's table first) and the raw
records next to it (.jsonl). Exit codes: 0 the run finished (whatever it measured), 1 it could not
run, 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import shlex
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from envconfig import DEFAULT_CONFIG_DIR, PROJECT_ROOT, ConfigError, parse_duration
from loadtest import report
from loadtest.client import Target, UsageError, auth_headers, read_api_key, sender, tls_context
from loadtest.schedule import R20_PROFILE, OpenModelRunner, Stage, parse_stage
from loadtest.stats import ship_log_table, summarize

DEFAULT_OUT = PROJECT_ROOT / "docs" / "load-test"
# Each served request holds a pooled connection this long in the sandbox: pool 50 / 28 s = 1.8
# requests/s per task, ~3.6 across 2 tasks, R20's "~3-4 RPS" ceiling; pool 200 / 28 s = 7.1 per
# task, above the 10 RPS R20 offered across 2 tasks.
DEFAULT_HOLD = 28.0


def _duration(text: str) -> float:
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _stage(text: str) -> Stage:
    try:
        return parse_stage(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Open-model load test (constant arrival rate, like k6's constant-arrival-rate): requests "
                    "leave on schedule whatever the latency. Default profile: the ship log's R20, 10 RPS x 90 s "
                    "then 5 RPS x 60 s. Writes the ship log's table (Test, RPS, Duration, Total, Failure, p50, "
                    "p95) as markdown under docs/load-test/, with the raw records as JSON lines.",
        epilog="exit codes: 0 the run finished (whatever it measured); 1 it could not run; 2 bad usage")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="the gateway's base URL, e.g. https://api.brainstorm-router.example.com")
    where.add_argument("--sandbox", action="store_true",
                       help="start the local sandbox world (127.0.0.1) with a modelled database pool and load it: "
                            "a rehearsal of the mechanism, not a measurement of production")
    p.add_argument("--stage", action="append", type=_stage, metavar="RATErps:DURATION",
                   help="a constant-rate stage, repeatable, in order (default: 10rps:90s then 5rps:60s)")
    p.add_argument("--timeout", type=_duration, default=60.0, metavar="DURATION",
                   help="per request, connect to last byte (default 60s, k6's default)")
    p.add_argument("--method", default="POST", type=str.upper, help="HTTP method (default POST)")
    p.add_argument("--route", default="/v1/chat/completions", help="path after the base URL (default %(default)s)")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", help="request body (default '{}'); send what your API accepts")
    body.add_argument("--body-file", type=Path, help="read the request body from a file")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="extra header, repeatable")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key")
    key.add_argument("--api-key-file", metavar="PATH", help="file holding the API key")
    p.add_argument("--api-key-header", default="Authorization",
                   help="header for the key (default Authorization: Bearer KEY; any other header gets the bare key)")
    p.add_argument("--ca-bundle", metavar="PEM", help="CA bundle for server verification (default: system store)")
    p.add_argument("--client-cert", metavar="PEM", help="client certificate for mTLS")
    p.add_argument("--client-key", metavar="PEM", help="its private key")
    p.add_argument("--max-in-flight", type=int, metavar="N",
                   help="concurrency cap, k6's maxVUs (default: highest rate x timeout x 1.2 + 10); a request due "
                        "at the cap is dropped and counted, never sent late")
    p.add_argument("--tasks", type=int, metavar="N", help="tasks behind the URL, to state the ceiling per task")
    p.add_argument("--name", help="file-name prefix (default: sandbox-pool<N>, or the URL's host)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where to write (default docs/load-test/)")
    p.add_argument("--yes", action="store_true", help="needed with --url: this sends real load to that URL")
    sb = p.add_argument_group("sandbox (with --sandbox)")
    sb.add_argument("--pool", type=int, metavar="N", help="DATABASE_POOL_SIZE per task (default: database.pool_size "
                    "of the sandbox config)")
    sb.add_argument("--hold", type=_duration, default=DEFAULT_HOLD, metavar="DURATION",
                    help=f"how long each served request holds a pooled connection (default {DEFAULT_HOLD:g}s)")
    sb.add_argument("--env", default="sandbox", help="config the world is built from (default sandbox)")
    sb.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR, help=argparse.SUPPRESS)
    return p


class _Ui:
    """What the sandbox world prints (its ui protocol), on stderr."""

    def info(self, text: str) -> None:
        print(f"         {text}", file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        print(f"[  WARN] {text}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class _Setup:
    target: Target
    info: report.RunInfo
    world: Any = None


def _body(args: argparse.Namespace) -> bytes:
    if args.body_file is not None:
        if not args.body_file.is_file():
            raise UsageError(f"--body-file {args.body_file}: no such file")
        return args.body_file.read_bytes()
    return (args.body if args.body is not None else "{}").encode()


def _headers(args: argparse.Namespace) -> dict[str, str]:
    out = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {h!r}: write 'NAME: VALUE'")
        if name.strip().lower() == args.api_key_header.lower():
            raise UsageError(f"--header {name.strip()}: pass the key with --api-key-env or --api-key-file, "
                             "never on the command line")
        out[name.strip()] = value.strip()
    return out


def _command(argv: list[str]) -> str:
    """How to rerun it from a fresh clone (make sets up the venv)."""
    return "make loadtest ARGS=" + shlex.quote(" ".join(shlex.quote(a) for a in argv))


@contextlib.contextmanager
def _sandbox(args: argparse.Namespace, common: dict[str, Any], started: str, argv: list[str]) -> Iterator[_Setup]:
    from cutover.sandbox.world import sandbox_world
    from envconfig import load

    cfg = load(args.env, args.config_dir)
    if args.pool is not None:
        if args.pool < 1:
            raise UsageError("--pool must be at least 1")
        cfg = dataclasses.replace(cfg, database=dataclasses.replace(cfg.database, pool_size=args.pool))
    with sandbox_world(cfg, scenario="clean", ui=_Ui(), pool_hold=args.hold) as world:
        world.traffic.stop()  # the world's own callers would take pooled connections too: only this load calls
        agent = world.pki.clients["sandbox-agents"]
        ctx = tls_context(ca_bundle=world.pki.ca_cert, client_cert=agent.cert, client_key=agent.key)
        # The key stays in process memory: the world generated it, nothing is written or printed.
        headers = {**common["headers"], **auth_headers(world.key_of("sandbox-agents"), args.api_key_header)}
        target = Target(url=world.front_url, method=args.method, route=args.route, body=common["body"],
                        headers=headers, timeout=args.timeout, context=ctx)
        tasks = len(world.front.tasks)
        pool, hold = cfg.database.pool_size, args.hold
        info = report.RunInfo(
            name=args.name or f"sandbox-pool{pool}", started=started, command=_command(argv),
            target=f"sandbox {world.front_url}", request=f"{args.method} {args.route}", timeout=args.timeout,
            tls="the world's CA; enrolled client certificate (sandbox-agents) and its API key",
            max_in_flight=common["max_in_flight"], tasks=tasks,
            sandbox={"pool_size": pool, "hold": hold, "timeout": float(cfg.service.request_timeout),
                     "tasks": tasks, "ceiling_rps": tasks * pool / hold if hold else math.inf})
        yield _Setup(target, info, world)


def _real(args: argparse.Namespace, common: dict[str, Any], started: str, argv: list[str]) -> _Setup:
    key = read_api_key(env=args.api_key_env, file=args.api_key_file)
    ctx = tls_context(ca_bundle=args.ca_bundle, client_cert=args.client_cert, client_key=args.client_key)
    headers = {**common["headers"], **auth_headers(key, args.api_key_header)}
    target = Target(url=args.url, method=args.method, route=args.route, body=common["body"], headers=headers,
                    timeout=args.timeout, context=ctx)
    host = urlsplit(args.url).hostname or "target"
    tls = ("CA bundle " + args.ca_bundle if args.ca_bundle else "system trust store") + (
        "; client certificate " + args.client_cert if args.client_cert else "; no client certificate")
    tls += "; API key from " + (f"${args.api_key_env}" if args.api_key_env else args.api_key_file or "nowhere (none)")
    info = report.RunInfo(name=args.name or host, started=started, command=_command(argv), target=args.url,
                          request=f"{args.method} {args.route}", timeout=args.timeout, tls=tls,
                          max_in_flight=common["max_in_flight"], tasks=args.tasks)
    return _Setup(target, info)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    stages = tuple(args.stage or R20_PROFILE)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    try:
        if not args.sandbox and (args.pool is not None or args.env != "sandbox"):
            raise UsageError("--pool and --env belong to --sandbox")
        if args.sandbox and (args.api_key_env or args.api_key_file or args.client_cert or args.ca_bundle):
            raise UsageError("--sandbox brings its own CA, client certificate and API key: drop the TLS and key options")
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        max_in_flight = args.max_in_flight or math.ceil(max(s.rate for s in stages) * args.timeout * 1.2) + 10
        if max_in_flight < 1:
            raise UsageError("--max-in-flight must be at least 1")
        if args.url and not args.yes:
            plan = ", ".join(s.label for s in stages)
            raise UsageError(f"this sends {plan} ({sum(s.planned for s in stages)} requests) to {args.url}: "
                             "add --yes to mean it")
        common = {"body": _body(args), "headers": _headers(args), "max_in_flight": max_in_flight}
        with contextlib.ExitStack() as stack:
            setup = (stack.enter_context(_sandbox(args, common, started, argv)) if args.sandbox
                     else _real(args, common, started, argv))
            return _run(setup, stages, args.out_dir)
    except UsageError as exc:
        print(f"python -m loadtest: error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"python -m loadtest: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("python -m loadtest: interrupted, nothing written", file=sys.stderr)
        return 1


def _run(setup: _Setup, stages: tuple[Stage, ...], out_dir: Path) -> int:
    send = sender(setup.target)
    total = sum(s.planned for s in stages)
    print(f"         load: {', '.join(s.label for s in stages)} ({total} requests, open model) -> "
          f"{setup.target.method} {setup.target.url}{setup.target.path}; timeout {setup.target.timeout:g}s",
          file=sys.stderr, flush=True)
    runner = OpenModelRunner(send, max_in_flight=setup.info.max_in_flight,
                             progress=lambda line: print(f"         {line}", file=sys.stderr, flush=True))
    t0 = time.monotonic()
    records = runner.run(stages)
    setup.info.peak_in_flight = runner.peak_in_flight
    if setup.world is not None and setup.info.sandbox is not None:
        setup.info.sandbox["pools"] = setup.world.pool_stats()
    summaries = summarize(records, stages)
    md, raw = report.write(out_dir, setup.info, stages, summaries, records)
    print(ship_log_table(summaries))
    print(f"         done in {time.monotonic() - t0:.0f}s; report {md}; raw records {raw}", file=sys.stderr)
    return 0
