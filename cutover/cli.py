"""`python -m cutover ...`: argparse, the one factory, and the one place errors become exit codes.

Heavy imports (boto3, the engine, the sandbox with moto) happen inside the commands, so `--help`
stays fast and never imports moto or the CDK.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from cutover.sandbox.scenarios import SCENARIOS
from envconfig import DEFAULT_CONFIG_DIR, ConfigError, parse_duration

EPILOG = """\
exit codes:
  0  done, or nothing to do          3  gate RED: nothing changed
  1  anything else (see message)     4  rolled back: production is on the previous version
  2  bad usage or config: no AWS write happened
  5  ROLLBACK FAILED: production may be half-changed; the exact manual commands are printed

examples:
  python -m cutover mtls --strict --sandbox              rehearse locally (no AWS account needed)
  python -m cutover gate --env production                the 24 h pre-cutover gate, read-only
  python -m cutover mtls --strict --env production --dry-run
  python -m cutover mtls --strict --env production       asks you to type the env name
  python -m cutover status --env production              live mode, drift, active run
  python -m cutover rollback --env production            restore the pre-cutover version

AWS access uses the standard boto3 chain (--profile, env credentials, AWS_ENDPOINT_URL).
"""


class UsageError(Exception):
    """Bad flags or inputs found before any AWS call: exit 2."""


def _duration(text: str) -> float:
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument("--env", help="environment: a file in config/ (default: production; sandbox with --sandbox)")
    g.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR, help="where <env>.yaml lives")
    g.add_argument("--json", action="store_true", help="print one JSON result on stdout (human output -> stderr)")
    g.add_argument("--report", metavar="PATH", help="markdown report path (default: reports/<run-id>.md)")
    g.add_argument("--profile", help="AWS profile (boto3 chain)")
    g.add_argument("--region", help="AWS region (default: the config's)")
    g.add_argument("--sandbox", action="store_true",
                   help="run against a local world: moto + a real mTLS gateway on 127.0.0.1")
    g.add_argument("--scenario", default="clean", choices=list(SCENARIOS),
                   help="sandbox scenario (default: clean)")
    g.add_argument("--yes", action="store_true", help="do not ask for confirmation (needed when not on a terminal)")
    g.add_argument("--break-lock", action="store_true", help="take over a lock whose expiry has passed")

    timing = argparse.ArgumentParser(add_help=False)
    t = timing.add_argument_group("timing")
    t.add_argument("--watch", type=_duration, metavar="DURATION", help="watch window (default: config, 30m)")
    t.add_argument("--poll", type=_duration, metavar="DURATION", help="poll interval (default: config, 15s)")

    parser = argparse.ArgumentParser(
        prog="python -m cutover",
        description="Cut brainstorm-router's mesh-write routes over to strict mTLS, safely: gate, flip "
                    "tls.mtls.meshWritesEnforcement, redeploy, probe, watch, and roll back by itself when "
                    "a legitimate caller gets a 403.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    m = sub.add_parser("mtls", parents=[common, timing], formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="the whole runbook: lock, preflight, gate, confirm, flip, redeploy, probe, watch",
                       description="lock -> preflight -> gate -> confirm -> flip -> redeploy -> probe -> watch -> "
                                   "finish; any failure after the flip rolls back to the exact previous "
                                   "parameter version.", epilog=EPILOG)
    mode = m.add_mutually_exclusive_group(required=True)
    mode.add_argument("--strict", dest="target", action="store_const", const="strict",
                      help="advisory -> strict (gated, watched)")
    mode.add_argument("--advisory", dest="target", action="store_const", const="advisory",
                      help="the deliberate way back: no gate; still redeploys, probes and reports")
    m.add_argument("--dry-run", action="store_true", help="preflight, gate and the plan; change nothing")

    sub.add_parser("gate", parents=[common], help="the pre-cutover gate alone (read-only): the ship log's table")
    sub.add_parser("probe", parents=[common], help="probe the mesh-write routes against the live mode")
    sub.add_parser("status", parents=[common], help="live mode, version, deployments, lock, active run, drift")
    sub.add_parser("resume", parents=[common, timing], help="continue an interrupted run from its journal in AWS")
    sub.add_parser("rollback", parents=[common], help="restore the pre-cutover version of the active or last run")
    return parser


# ---------------------------------------------------------------- the factory


def _check_files(cfg: Any) -> None:
    p = cfg.cutover.probes
    for key, path in (("client_cert", p.client_cert), ("client_key", p.client_key), ("ca_bundle", p.ca_bundle)):
        if path and not Path(path).is_file():
            raise ConfigError(cfg.source, f"cutover.probes.{key}", f"file not found: {path}",
                              "point it at the enrolled probe certificate files on this machine")


def build(args: argparse.Namespace, cfg: Any, ui: Any) -> Any:
    """Everything real, wired once: boto3 clients, wall clock, real sleep, real probes."""
    from cutover.aws import Aws
    from cutover.engine import Cutover
    from cutover.probes import ProbeSpec, run_probes

    spec = ProbeSpec.from_config(cfg)
    aws = Aws.from_environment(region=args.region or cfg.region, profile=args.profile, sleep=time.sleep)
    return Cutover(cfg, aws=aws, clock=time.time, sleep=time.sleep, probe=run_probes, probe_spec=spec, ui=ui)


def run_command(args: argparse.Namespace, ui: Any, out: Any) -> int:
    import envconfig as config_mod
    from cutover.engine import Options
    from cutover.report import probe_rows, table, to_json, write_report

    env = args.env or ("sandbox" if args.sandbox else "production")
    cfg = config_mod.load(env, args.config_dir)
    interactive = ui.interactive
    if args.command in ("mtls", "resume") and not (args.yes or interactive or getattr(args, "dry_run", False)):
        raise UsageError("not on a terminal: pass --yes to confirm (or --dry-run to see the plan)")

    with ExitStack() as stack:
        if args.sandbox:
            from cutover.sandbox.world import process_environment, sandbox_world  # imports moto: only here

            world = stack.enter_context(sandbox_world(cfg, scenario=args.scenario, ui=ui))
            stack.enter_context(process_environment(world.env))  # until the factory takes world.env
            cfg = world.cfg
        elif args.command in ("mtls", "probe", "resume", "rollback") and not getattr(args, "dry_run", False):
            _check_files(cfg)
        engine = build(args, cfg, ui)
        opts = Options(target=getattr(args, "target", "strict") or "strict", dry_run=getattr(args, "dry_run", False),
                       yes=args.yes, watch=getattr(args, "watch", None), poll=getattr(args, "poll", None),
                       break_lock=args.break_lock)

        if args.command == "gate":
            verdict = engine.gate()
            ui.gate(verdict)
            if args.json:
                from cutover.engine import Outcome
                o = Outcome(code=0 if verdict.green else 3, state="gate", message="", env=env, gate=verdict)
                out.write(to_json(o) + "\n")
            return 0 if verdict.green else 3
        if args.command == "probe":
            from cutover.engine import Outcome

            _, mode = engine.live()
            results = engine.run_probes(mode, f"probe-{int(time.time())}")
            ok = all(r.ok for r in results)
            ui.info(f"live mode: {mode}\n" + table(["Route", "Probe", "Expect", "Got", "Result"], probe_rows(results)))
            ui.info(f"RESULT: {'ok' if ok else 'MISMATCH'}: the gateway {'behaves' if ok else 'does NOT behave'} as {mode}")
            if args.json:
                out.write(to_json(Outcome(code=0 if ok else 1, state="probe", message=mode, env=env, probes=results)) + "\n")
            return 0 if ok else 1

        outcome = {"mtls": engine.run, "resume": engine.resume, "rollback": lambda o: engine.rollback(o),
                   "status": lambda o: engine.status()}[args.command](opts)

        if args.command == "status":
            s = outcome.status
            ui.info(f"mode: {s['mode']} ({s['parameter']} v{s['version']}); config file: {s['config_file_mode']}"
                    + ("  ** DRIFT **" if s["drift"] else ""))
            deps = ", ".join(f"{d['status']} {d['rolloutState']} {d['running']}/{d['desired']}" for d in s["deployments"])
            ui.info(f"service: {s['running']}/{s['desired']} running; deployments: {deps}")
            ui.info(f"lock: {s['lock']['run_id'] + ' by ' + s['lock']['operator'] if s['lock'] else 'free'}"
                    + (" (expired)" if s["lock_expired"] else ""))
            r = s["run"]
            ui.info("last run: none" if r is None else
                    f"last run: {r['run_id']} -> {r['target']}: {r['state']}, last step "
                    f"{(r['last_step'] or {}).get('step')} {(r['last_step'] or {}).get('status')}")
        elif outcome.journal is not None or outcome.gate is not None:
            default = Path("reports") / f"cutover-{outcome.run_id or env}.md"
            outcome.report_path = write_report(outcome, args.report or default)
        ui.info("")
        ui.info(f"RESULT: {outcome.state} (exit {outcome.code}): {outcome.message}")
        for line in outcome.manual:
            ui.info(f"  $ {line}")
        if outcome.config_written and args.sandbox:
            ui.info(f"wrote the new mode into the sandbox's copy {outcome.config_written} "
                    "(the repository's config/sandbox.yaml is untouched)")
        elif outcome.config_written:
            ui.info(f"wrote the new mode into {outcome.config_written}: commit it so `cdk deploy` agrees")
        if outcome.report_path:
            ui.info(f"report: {outcome.report_path}")
        if args.json:
            out.write(to_json(outcome) + "\n")
        return outcome.code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # bad flags: argparse prints usage and exits 2 (before any heavy import)
    from cutover.report import ConsoleUi
    interactive = sys.stdin.isatty() and not os.environ.get("CI")
    ui = ConsoleUi(sys.stderr if args.json else sys.stdout, interactive=interactive)
    try:
        return run_command(args, ui, sys.stdout)
    except (ConfigError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: check `python -m cutover status` (the journal in AWS says what happened)",
              file=sys.stderr)
        return 1
    except Exception as exc:  # the last resort: say what, where, and what state we know
        from botocore.exceptions import NoCredentialsError, NoRegionError, ProfileNotFound

        from cutover.aws import error_code

        if isinstance(exc, (NoCredentialsError, ProfileNotFound, NoRegionError)):
            # Raised by the first (read-only) call, so nothing was written.
            print(f"error: AWS credentials: {exc}; fix: set AWS_PROFILE or pass --profile (or rehearse with "
                  "--sandbox)", file=sys.stderr)
            return 2

        code = error_code(exc)
        print(f"error: {type(exc).__name__}{' ' + code if code else ''}: {exc}\n"
              "       run `python -m cutover status` to see what state production is in.", file=sys.stderr)
        return 1
