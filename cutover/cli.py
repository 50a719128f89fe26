"""`python -m cutover ...`: argparse, the factory call, rendering, and the one place errors become
exit codes. The engine returns typed outcomes; this module prints them and writes the files
(the report, config/<env>.yaml).

Heavy imports (boto3, the engine, the sandbox with moto) happen inside the commands, so `--help`
stays fast and never imports moto or the CDK.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from cutover.exitcodes import ExitCode, table_rows
from cutover.sandbox.scenarios import SCENARIOS, STRATEGIES
from envconfig import DEFAULT_CONFIG_DIR, ConfigError, parse_duration, timing_problem

DURATION_FLAGS = ("--watch", "--poll")


def _exit_lines(codes: tuple[int, ...] | None = None) -> str:
    return "\n".join(f"  {c}  {m}" for c, m in table_rows() if codes is None or c in codes)


EPILOG = f"""\
exit codes:
{_exit_lines()}

examples:
  python -m cutover mtls --strict --sandbox              rehearse locally (no AWS account needed)
  python -m cutover gate --env production                the 24 h pre-cutover gate, read-only
  python -m cutover mtls --strict --env production --dry-run
  python -m cutover mtls --strict --env production       asks you to type the env name
  python -m cutover status --env production              live mode, drift, active run, next command
  python -m cutover rollback --env production            restore the previous mode (the restore rule)

AWS access uses the standard boto3 chain (--profile, env credentials, AWS_ENDPOINT_URL).
"""


class UsageError(Exception):
    """Bad flags or inputs found before any AWS call: exit 2."""


def _duration(text: str) -> float:
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _join_negative_durations(argv: list[str]) -> list[str]:
    """`--poll -1s` would read as an unknown flag `-1s`; join it so `--poll -1s` and `--poll=-1s`
    both reach the duration check and get the same message."""
    out: list[str] = []
    it = iter(range(len(argv)))
    for i in it:
        if argv[i] in DURATION_FLAGS and i + 1 < len(argv) and re.match(r"^-\d", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            next(it, None)
        else:
            out.append(argv[i])
    return out


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument("--env", help="environment: a file in --config-dir (default: production; sandbox with --sandbox)")
    g.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR, help="where <env>.yaml lives (default: "
                   "config/ of this repository)")
    g.add_argument("--json", action="store_true", help="print one JSON result on stdout (human output -> stderr)")
    g.add_argument("--profile", help="AWS profile (boto3 chain)")
    g.add_argument("--region", help="AWS region (default: the config's)")
    g.add_argument("--sandbox", action="store_true",
                   help="run against a local world: moto + a real mTLS gateway on 127.0.0.1 (no AWS account)")

    report = argparse.ArgumentParser(add_help=False)
    report.add_argument("--report", metavar="PATH",
                        help="markdown report path (default: reports/cutover-<run-id>.md; gate: reports/gate-<env>.md)")

    # `rollback` asks nothing (it is the way back), so it takes --break-lock without --yes.
    locking = argparse.ArgumentParser(add_help=False)
    locking.add_argument_group("acting on production").add_argument(
        "--break-lock", action="store_true",
        help="take over a lock whose expiry (on AWS's clock) has passed; never overrides an unfinished run")
    acting = argparse.ArgumentParser(add_help=False, parents=[locking])
    acting.add_argument("--yes", action="store_true",
                        help="do not ask for confirmation (needed when not on a terminal)")

    timing = argparse.ArgumentParser(add_help=False)
    t = timing.add_argument_group("timing")
    t.add_argument("--watch", type=_duration, metavar="DURATION", help="watch window (default: config, 30m)")
    t.add_argument("--poll", type=_duration, metavar="DURATION", help="poll interval (default: config, 15s; >= 1s)")
    t.add_argument("--short-watch", action="store_true",
                   help="accept a watch below the runbook's 30m floor outside the sandbox, on purpose")
    t.add_argument("--no-sentinel", action="store_true",
                   help="run without the sentinel caller: the report records the watch as unverified")

    parser = argparse.ArgumentParser(
        prog="python -m cutover",
        description="Cut brainstorm-router's mesh-write routes over to strict mTLS, safely: gate, flip "
                    "tls.mtls.meshWritesEnforcement, redeploy, probe, watch, and roll back by itself when "
                    "a legitimate caller gets a 403.",
        epilog=EPILOG, formatter_class=raw)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, parents: list, help: str, description: str, codes: tuple[int, ...]) -> Any:
        return sub.add_parser(name, parents=parents, help=help, formatter_class=raw,
                              description=description, epilog=f"exit codes:\n{_exit_lines((*codes, 2))}")

    m = command("mtls", [common, report, acting, timing],
                "the whole runbook: lock, preflight, gate, confirm, flip, redeploy, probe, watch",
                "lock -> preflight -> gate -> confirm -> flip -> redeploy -> probe -> watch -> finish. From the flip\n"
                "on the watch reads the access log; a legitimate caller's 403, a failed deployment or wrong\n"
                "probes roll back to the previous mode. Refuses while the last run is unfinished.",
                (0, 1, 3, 4, 5))
    mode = m.add_mutually_exclusive_group(required=True)
    mode.add_argument("--strict", dest="target", action="store_const", const="strict",
                      help="advisory -> strict (gated, watched)")
    mode.add_argument("--advisory", dest="target", action="store_const", const="advisory",
                      help="the deliberate way back: no gate; still redeploys, probes and reports")
    m.add_argument("--dry-run", action="store_true", help="preflight, gate and the plan; change nothing")
    m.add_argument("--skip-staging", metavar="REASON",
                   help="go strict without a recent finished strict cutover of the environment this one is promoted "
                        "after (cutover.promotion); the reason is recorded in the journal and the report")
    m.add_argument("--scenario", choices=list(SCENARIOS),
                   help="with --sandbox: the world to rehearse against (default: clean): " +
                        "; ".join(f"{k}: {v}" for k, v in SCENARIOS.items()))
    m.add_argument("--strategy", choices=STRATEGIES,
                   help="with --sandbox: the deployment strategy the world's ECS plays (default: the config's)")
    m.add_argument("--rollout-step", type=float, metavar="SECONDS",
                   help="with --sandbox: seconds per task replacement in a rolling deployment (a slow rollout)")

    command("gate", [common, report], "the pre-cutover gate alone (read-only): the ship log's table",
            "One pass over the last 24 h of the gateway's log group with every bypass pattern, the\n"
            "future-caller list, the guard alarms (present and not in ALARM) and the service's state.",
            (0, 3))
    command("probe", [common], "probe the mesh-write routes against the live mode (read-only)",
            "The curl-equivalent probes of the runbook against whatever mode is live now.", (0, 1))
    command("status", [common, report], "live mode, version, deployments, lock, last run, drift, next command",
            "Where production and the last run stand, from any machine. Read-only.", (0,))
    command("resume", [common, report, acting, timing], "continue the unfinished run from its journal in AWS",
            "Continues the last run from its journal: the forward path where it stopped (it never flips\n"
            "twice), an unfinished rollback, or the rest of a watch that was cut short.", (0, 1, 4, 5))
    command("rollback", [common, report, locking], "restore the previous mode of the active or last run",
            "Puts the previous mode back (the exact previous bytes when the live version is the run's own\n"
            "write; only the flag when someone else wrote after it), redeploys and probes. Asks nothing:\n"
            "it is the way back.", (0, 1, 4, 5))

    # `config pull` (cutover/adopt.py): adopt the live gateway document before any deploy.
    cfg = command("config", [], "adopt what is live into config/<env>.yaml (config pull)",
                  "config pull: read the live gateway parameter and write it into config/<env>.yaml as\n"
                  "gateway.document (the flag byte for byte, the rest key for key, every other byte of the\n"
                  "file kept), after showing the unified diff. Run it before the first deploy.", (0, 1))
    pull = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION").add_parser(
        "pull", parents=[common], formatter_class=raw, help="write the live gateway document into config/<env>.yaml",
        description="Reads the live gateway config parameter (ssm:GetParameter only), shows the unified diff\n"
                    "of config/<env>.yaml and writes it after confirmation. Never writes to AWS.",
        epilog=f"exit codes:\n{_exit_lines((0, 1, 2))}")
    pull.add_argument("--dry-run", action="store_true", help="show the diff; write nothing")
    pull.add_argument("--yes", action="store_true", help="write without asking (needed when not on a terminal)")
    return parser


# ---------------------------------------------------------------- helpers


def _check_files(cfg: Any) -> None:
    """What the tool will touch on this machine and on the wire, checked before any AWS call."""
    for key in cfg.placeholders:
        if key.startswith("cutover.probes."):
            raise ConfigError(cfg.source, key, "still a CHANGE-ME placeholder: the probes would hit nothing",
                              "set the gateway's real HTTPS URL (and the probe certificate) before acting")
    p = cfg.cutover.probes
    for key, path in (("client_cert", p.client_cert), ("client_key", p.client_key), ("ca_bundle", p.ca_bundle)):
        if path and not Path(path).is_file():
            raise ConfigError(cfg.source, f"cutover.probes.{key}", f"file not found: {path}",
                              "point it at the enrolled probe certificate files on this machine")


def _sentinel_key(args: argparse.Namespace, cfg: Any) -> str | None:
    """The sentinel's API key, from the environment variable or file the config names (never YAML).
    Outside the sandbox a strict run without one is refused unless --no-sentinel says so."""
    if getattr(args, "no_sentinel", False) or getattr(args, "target", "strict") == "advisory" \
            or getattr(args, "dry_run", False):
        return None
    s = cfg.cutover.probes.sentinel
    required = not args.sandbox and cfg.environment != "sandbox"
    fix_off = "or pass --no-sentinel (the report then records the watch as unverified)"
    if s is None:
        if required:
            raise ConfigError(cfg.source, "cutover.probes.sentinel", "missing: nothing would prove the watch can see "
                              "a hurt caller", f"add caller and api_key_env (README: the sentinel), {fix_off}")
        return None
    if s.api_key_file:
        path = Path(s.api_key_file)
        key = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        where, fix = f"file {s.api_key_file}", f"put the sentinel's API key in {s.api_key_file}"
    else:
        key = os.environ.get(s.api_key_env or "", "").strip()
        where, fix = f"${s.api_key_env}", f"export {s.api_key_env}=<the sentinel's API key>"
    if not key and required:
        raise ConfigError(cfg.source, "cutover.probes.sentinel", f"{where} holds no API key", f"{fix}, {fix_off}")
    return key or None


def _check_timing(args: argparse.Namespace, cfg: Any) -> None:
    if not hasattr(args, "watch"):
        return
    c = cfg.cutover
    watch = args.watch if args.watch is not None else c.watch
    poll = args.poll if args.poll is not None else c.poll
    problem = timing_problem(watch=watch, poll=poll, overlap=c.overlap, redeploy_timeout=c.redeploy_timeout,
                             lock_ttl=c.lock_ttl, sandbox=args.sandbox or cfg.environment == "sandbox",
                             short_watch_ok=args.short_watch)
    if problem:
        from_flag = problem.key in ("watch", "poll") and getattr(args, problem.key, None) is not None
        where = f"--{problem.key}" if from_flag else f"{cfg.source}: cutover.{problem.key}"
        raise UsageError(f"{where}: {problem.problem}; fix: {problem.fix}")


def _check_report_path(path: str | None) -> None:
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"--report {path}: is a directory; fix: name a file, e.g. {p / 'cutover.md'}")
    parent = p.parent if str(p.parent) else Path(".")
    existing = next((d for d in (parent, *parent.parents) if d.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UsageError(f"--report {path}: {existing} is not a writable directory; fix: choose another path")


def _write_config(ui: Any, cfg: Any, mode: str, *, sandbox: bool) -> str | None:
    """Make config/<env>.yaml agree with production. Production is already settled here, so a
    local file problem is a warning with the fix, never a failed cutover."""
    from cutover.mtls import write_config_mode

    try:
        if cfg.source and write_config_mode(cfg.source, mode):
            where = (f"the sandbox's copy {cfg.source} (the repository's config/ is untouched)" if sandbox
                     else f"{cfg.source}: commit it so `cdk deploy` agrees")
            ui.info(f"wrote meshWritesEnforcement: {mode} into {where}")
            return cfg.source
    except (OSError, ValueError) as exc:
        ui.warn(f"could not write {cfg.source} ({exc}); set gateway.document.tls.mtls.meshWritesEnforcement: "
                f"{mode} there by hand so `cdk deploy` agrees with production")
    return None


def _render_status(ui: Any, outcome: Any, file_mode: str) -> None:
    from cutover.lockstore import iso

    s = outcome.status
    ui.info(f"mode: {s.mode} ({s.parameter} v{s.version}); config file: {file_mode}"
            + ("  ** DRIFT **" if file_mode != s.mode else ""))
    deps = ", ".join(f"{d['status']} {d['rolloutState']} {d['running']}/{d['desired']}" for d in s.deployments)
    ui.info(f"service: {s.running}/{s.desired} running; deployments: {deps}; strategy {s.strategy}")
    if s.service_deployment:
        sd = s.service_deployment
        head = " ".join(x for x in (sd["status"], sd["stage"]) if x)
        if sd["status"] == "SUCCESSFUL":  # finished: the requested weights of its shift no longer describe traffic
            ui.info(f"service deployment: {head}; the newest revision serves all traffic")
        else:
            ui.info(f"service deployment: {head}; traffic on the newest revision: production "
                    f"{sd['production_weight_new']:g}%, test {sd['test_weight_new']:g}%")
    lock = s.lock
    ui.info("lock: free" if lock is None else
            f"lock: run {lock.body.run_id} by {lock.body.operator}, expires {iso(lock.expires)}"
            + (" (expired)" if lock.expired else ""))
    r = s.run
    if r is None:
        ui.info("last run: none")
    else:
        last = r.last_step
        ui.info(f"last run: {r.run_id} {r.previous_mode} -> {r.target}: {r.state}, last step "
                f"{last.step + ' ' + last.status if last else '-'}")
        if r.first_strict_task:
            ui.info(f"first strict task took traffic: {iso(r.first_strict_task)}")
        if r.watch_started:
            ui.info(f"watch window began: {iso(r.watch_started)} (watching from the flip, "
                    f"{iso(r.flipped_at or r.started)})")
        if r.restore is not None:
            ui.info(f"restore: {r.restore.rule} by the {r.restore.by} at {iso(r.restore.at)}")


# ---------------------------------------------------------------- the command


def run_command(args: argparse.Namespace, ui: Any, out: Any) -> int:
    if args.command == "config":  # `config pull`: reads the live parameter, writes config/<env>.yaml
        from cutover.adopt import pull
        return pull(args, ui, out)
    import envconfig
    from cutover.engine import Options, Outcome
    from cutover.factory import build
    from cutover.mtls import read_mode
    from cutover.report import probe_rows, table, to_json, write_report

    for flag in ("scenario", "strategy", "rollout_step"):
        if getattr(args, flag, None) is not None and not args.sandbox:
            name = "--" + flag.replace("_", "-")
            raise UsageError(f"{name} only applies to the sandbox; fix: add --sandbox, or drop {name}")
    env = args.env or ("sandbox" if args.sandbox else "production")
    cfg = envconfig.load(env, args.config_dir)
    _check_timing(args, cfg)
    report_arg = getattr(args, "report", None)
    _check_report_path(report_arg)
    dry_run = getattr(args, "dry_run", False)
    if args.command in ("mtls", "resume") and not (args.yes or ui.interactive or dry_run):
        raise UsageError("not on a terminal: pass --yes to confirm" +
                         (" (or --dry-run to see the plan)" if args.command == "mtls" else
                          f" (`python -m cutover status{' --sandbox' if args.sandbox else ''}` shows what resume "
                          "would continue)"))

    hint_suffix = " --sandbox" if args.sandbox else ""
    with ExitStack() as stack:
        endpoint_env = None
        if args.sandbox:
            from cutover.sandbox.world import sandbox_world  # imports moto: only here

            world = stack.enter_context(sandbox_world(cfg, scenario=getattr(args, "scenario", None) or "clean", ui=ui,
                                                      strategy=getattr(args, "strategy", None),
                                                      rollout_step=getattr(args, "rollout_step", None)))
            cfg, endpoint_env = world.cfg, world.env
            if getattr(args, "scenario", None) == "operator-vanishes" and args.command == "mtls":
                from cutover.sandbox.vanish import play

                extra = [f"--{k}={v}s" for k, v in (("watch", args.watch), ("poll", args.poll)) if v is not None]
                return play(world, ui, extra_args=extra)
        elif args.command in ("mtls", "probe") and not dry_run:
            _check_files(cfg)
        sentinel = _sentinel_key(args, cfg) if args.command in ("mtls", "resume") else None
        engine = build(cfg, ui=ui, profile=args.profile, region=args.region, endpoint_env=endpoint_env,
                       sentinel_key=sentinel)
        if args.command in ("resume", "rollback") and not args.sandbox:
            last = engine.journal.load()  # read-only: probe files matter only if there is a run to act on
            if last is not None and last.previous_version is not None:
                _check_files(cfg)
        opts = Options(target=getattr(args, "target", None) or "strict", dry_run=dry_run,
                       yes=getattr(args, "yes", False), watch=getattr(args, "watch", None),
                       poll=getattr(args, "poll", None), break_lock=getattr(args, "break_lock", False),
                       skip_staging=getattr(args, "skip_staging", None))

        if args.command == "gate":
            verdict = engine.gate()
            ui.gate(verdict)
            code = ExitCode.DONE if verdict.green else ExitCode.GATE_RED
            outcome = Outcome(env=env, gate=verdict).end(
                code, "gate_green" if verdict.green else "gate_red",
                "gate GREEN" if verdict.green else "gate RED: " + "; ".join(verdict.reasons))
        elif args.command == "probe":
            _, mode = engine.live()
            results = engine.run_probes(mode, f"probe-{int(time.time())}")
            ok = all(r.ok for r in results)
            ui.info(f"live mode: {mode}\n" + table(["Route", "Probe", "Expect", "Got", "Result"], probe_rows(results)))
            outcome = Outcome(env=env, probes=results).end(
                ExitCode.DONE if ok else ExitCode.FAILED, "probe_ok" if ok else "probe_mismatch",
                f"the gateway {'behaves' if ok else 'does NOT behave'} as {mode}")
        else:
            outcome = {"mtls": engine.run, "resume": engine.resume, "rollback": engine.rollback,
                       "status": lambda _o: engine.status()}[args.command](opts)

        file_mode = None
        if args.command == "status":
            file_mode = read_mode(Path(cfg.source).read_text(encoding="utf-8"),
                                  ("gateway", "document", "tls", "mtls", "meshWritesEnforcement"))
            _render_status(ui, outcome, file_mode)
            if file_mode != outcome.status.mode:
                outcome.message += f"; DRIFT: {cfg.source} says {file_mode}"
        if outcome.config_mode and not dry_run:
            _write_config(ui, cfg, outcome.config_mode, sandbox=args.sandbox)

        report_path = None
        writes = args.command in ("mtls", "resume", "rollback", "gate") and (outcome.journal or outcome.gate)
        if writes or report_arg:
            default = (Path("reports") / f"gate-{env}.md" if args.command == "gate"
                       else Path("reports") / f"cutover-{outcome.run_id or env}.md")
            try:
                report_path = write_report(outcome, report_arg or default, sandbox=args.sandbox)
            except OSError as exc:  # never let the report change the outcome
                ui.warn(f"could not write the report to {report_arg or default}: {exc}")

        ui.info("")
        ui.info(f"RESULT: {outcome.state} (exit {int(outcome.code)}): {outcome.message}")
        for line in outcome.manual:
            ui.info(f"  $ {line}")
        for line in outcome.next_commands:
            ui.info(f"  next: {line}{hint_suffix if ' --env ' in line else ''}")
        if report_path:
            ui.info(f"report: {report_path}")
        if args.json:
            extra = {"config_file_mode": file_mode, "drift": file_mode != outcome.status.mode} if file_mode else None
            out.write(to_json(outcome, status_extra=extra) + "\n")
        return int(outcome.code)


def _on_sigterm(signum: int, frame: Any) -> None:
    from cutover.engine import Terminated

    raise Terminated()


def _failed(args: argparse.Namespace, code: ExitCode, state: str, error: str, hint: str = "") -> int:
    """Every ending has its RESULT line (stdout), or its one JSON document with --json; the error
    itself goes to stderr as one line (two with a hint)."""
    print(f"error: {error}" + (f"\n       {hint}" if hint else ""), file=sys.stderr)
    if getattr(args, "json", False):
        import json

        print(json.dumps({"exit_code": int(code), "outcome": state, "message": error}, indent=2))
    else:
        print(f"RESULT: {state} (exit {int(code)}): {error}")
    return int(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_negative_durations(list(sys.argv[1:] if argv is None else argv)))
    from cutover.report import ConsoleUi
    interactive = sys.stdin.isatty() and not os.environ.get("CI")
    ui = ConsoleUi(sys.stderr if args.json else sys.stdout, interactive=interactive)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)  # like Ctrl-C, without a prompt
    status_hint = "run `python -m cutover status` to see what state production is in."
    try:
        return run_command(args, ui, sys.stdout)
    except ConfigError as exc:
        return _failed(args, ExitCode.USAGE, "config_error", str(exc))
    except UsageError as exc:
        return _failed(args, ExitCode.USAGE, "usage_error", str(exc))
    except KeyboardInterrupt:
        return _failed(args, ExitCode.FAILED, "interrupted",
                       "interrupted: the journal in AWS says what happened", status_hint)
    except Exception as exc:  # the last resort: say what, where, and what state we know
        from botocore.exceptions import NoCredentialsError, NoRegionError, ProfileNotFound

        from cutover.aws import error_code

        if isinstance(exc, ProfileNotFound):
            return _failed(args, ExitCode.USAGE, "usage_error",
                           f"AWS profile: {exc}; fix: use a profile from `aws configure list-profiles`, or drop "
                           "--profile/AWS_PROFILE to use other credentials (or rehearse with --sandbox)")
        if isinstance(exc, (NoCredentialsError, NoRegionError)):
            # Raised by the first (read-only) call, so nothing was written.
            return _failed(args, ExitCode.USAGE, "usage_error",
                           f"AWS credentials: {exc}; fix: set AWS_PROFILE or pass --profile (or rehearse with "
                           "--sandbox)")
        code = error_code(exc)
        return _failed(args, ExitCode.FAILED, "error", f"{type(exc).__name__}{' ' + code if code else ''}: {exc}",
                       status_hint)
    finally:
        signal.signal(signal.SIGTERM, previous)
