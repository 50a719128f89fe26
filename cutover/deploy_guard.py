"""The deploy guard: `make deploy ENV=...` runs it before `cdk deploy` (and `make import` before `cdk import`).

    .venv/bin/python -m cutover.deploy_guard --env production [--profile NAME] [--config-dir DIR]

It refuses, one line per problem naming the file and the key, when:
  - the config still holds a CHANGE-ME placeholder (envconfig.PLACEHOLDER; synth accepts them, a deploy must not);
  - the live gateway parameter differs from config's `gateway.document` in anything but the flag (drift):
    the deploy would overwrite the live document;
  - the live flag differs from config's: the deploy would change the mTLS mode with no gate, probe, watch or
    rollback (that is `python -m cutover mtls`'s job);
  - `account` is set in config and the credentials belong to another account.

The live read is one ssm:GetParameter on the gateway parameter through the boto3 chain (credentials
required, the same chain `cdk deploy` uses) in the config's region. A parameter that does not exist is no
drift (the deploy creates it). It never writes anything.

Exit codes: 0 nothing refused; 1 refused (the lines say why); 2 bad usage or config, or no credentials.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutover.exitcodes import ExitCode
from envconfig import DEFAULT_CONFIG_DIR, ConfigError, EnvConfig

# What to put in place of each placeholder (the keys this repository ships as CHANGE-ME).
FIXES = {
    "service.image": "set the image the running task definition uses (aws ecs describe-services, then "
                     "aws ecs describe-task-definition)",
    "service.certificate_arn": "set the ARN of the ACM certificate the live HTTPS listener uses "
                               "(aws elbv2 describe-listeners)",
    "cutover.probes.base_url": "set the gateway's public HTTPS URL (https://...)",
}


@dataclass(frozen=True)
class Problem:
    key: str
    problem: str
    fix: str

    def line(self, file: str) -> str:
        return f"{file}: {self.key}: {self.problem}; fix: {self.fix}"


def placeholder_problems(cfg: EnvConfig) -> list[Problem]:
    pull = f".venv/bin/python -m cutover config pull --env {cfg.environment} (review the diff, commit it)"
    out = []
    for key in cfg.placeholders:
        if key == "gateway.document" or key.startswith("gateway.document."):
            fix = f"adopt the live document: {pull}"
        else:
            fix = FIXES.get(key, "replace it with the real value")
        out.append(Problem(key, "still a CHANGE-ME placeholder (invented by this repository)", fix))
    return out


def live_problems(cfg: EnvConfig, live_text: str | None, version: int | None = None) -> list[Problem]:
    """Pure: what the live gateway document (None: the parameter does not exist) says about deploying cfg."""
    import yaml

    from cutover.adopt import DOCUMENT_KEY, FLAG_KEY, drift_keys, flag_mismatch

    if live_text is None:
        return []
    name = f"{cfg.gateway.parameter_name}" + (f" (v{version})" if version is not None else "")
    pull = f".venv/bin/python -m cutover config pull --env {cfg.environment}"
    try:
        live = yaml.safe_load(live_text)
    except yaml.YAMLError:
        live = None
    if not isinstance(live, dict):
        return [Problem(DOCUMENT_KEY, f"the live parameter {name} is not a YAML mapping: a deploy would replace it "
                        "with config's document", f"look at it first (aws ssm get-parameter --name "
                        f"{cfg.gateway.parameter_name}); adopt it with {pull} if it is right")]
    out = [Problem(d.key, f"{d.what}: drift from the live parameter {name}; a deploy would overwrite the live document",
                   f"adopt the live document with {pull} (review the diff), or change the live one on purpose first")
           for d in drift_keys(live, cfg.gateway.document)]
    flags = flag_mismatch(live, cfg.gateway.document)
    if flags:
        out.append(Problem(FLAG_KEY, f"live {flags[0]}, config {flags[1]}: a deploy would change the mTLS mode outside "
                           "the cutover tool (no gate, probes, watch or rollback)",
                           f"adopt the live mode with {pull}, or change the mode with "
                           f".venv/bin/python -m cutover mtls --env {cfg.environment}"))
    return out


def check_live(cfg: EnvConfig, aws: Any) -> tuple[list[Problem], list[str]]:
    """What the live account says about deploying cfg: problems, and the notes to print."""
    problems: list[Problem] = []
    caller = aws.caller_arn()
    account = caller.split(":")[4] if caller.count(":") >= 5 else ""
    notes = [f"credentials: {caller} (account {account or '?'}), region {cfg.region}"]
    if cfg.account and account != cfg.account:
        problems.append(Problem("account", f"the credentials are for account {account or '?'}, config says "
                                f"{cfg.account}", "use the credentials of the account this config describes"))
    param = aws.find_parameter(cfg.gateway.parameter_name)
    if param is None:
        notes.append(f"{cfg.gateway.parameter_name} does not exist in this account and region: nothing to "
                     "overwrite, the deploy creates it from config")
    else:
        notes.append(f"live {cfg.gateway.parameter_name} v{param.version} compared with gateway.document")
        problems += live_problems(cfg, param.value, param.version)
    return problems, notes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cutover.deploy_guard", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Refuse a deploy while config/<env>.yaml holds placeholders or differs from the live gateway "
                    "document (make deploy ENV=... runs this, then cdk deploy).",
        epilog="exit codes:\n  0  nothing refused\n  1  refused: one line per problem, naming the file and key\n"
               "  2  bad usage or config, or no AWS credentials")
    p.add_argument("--env", required=True, help="environment: a file in --config-dir")
    p.add_argument("--config-dir", type=Path, default=Path(os.environ.get("BRAINSTORM_CONFIG_DIR", DEFAULT_CONFIG_DIR)),
                   help="where <env>.yaml lives (default: $BRAINSTORM_CONFIG_DIR, as app.py, else config/)")
    p.add_argument("--profile", help="AWS profile (boto3 chain; default: the environment, as cdk deploy)")
    return p


def main(argv: list[str] | None = None, aws: Any = None) -> int:
    """`aws`: a cutover.aws.Aws (tests); without it, the boto3 chain in the config's region."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError, ProfileNotFound

    import envconfig
    from cutover.aws import error_code
    from cutover.mtls import shown_path

    args = build_parser().parse_args(argv)
    try:
        cfg = envconfig.load(args.env, args.config_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    file, stack = shown_path(cfg.source), cfg.stack_name
    problems = placeholder_problems(cfg)
    notes: list[str] = []
    unchecked: tuple[ExitCode, str] | None = None
    try:
        if aws is None:
            from cutover.aws import Aws

            aws = Aws.from_environment(region=cfg.region, profile=args.profile, sleep=time.sleep)
        live, notes = check_live(cfg, aws)
        problems += live
    except (NoCredentialsError, NoRegionError, ProfileNotFound) as exc:
        unchecked = (ExitCode.USAGE, f"AWS credentials: {exc}; fix: set AWS_PROFILE or pass --profile (the guard "
                     "compares config with the live account before any deploy)")
    except (BotoCoreError, ClientError) as exc:
        code = error_code(exc)
        unchecked = (ExitCode.FAILED, f"{type(exc).__name__}{' ' + code if code else ''}: {exc}; fix: the guard "
                     f"needs ssm:GetParameter on {cfg.gateway.parameter_name} (the operator policy grants it)")
    for note in notes:
        print(f"deploy guard: {note}")
    sys.stdout.flush()  # the notes, then the problems (stderr), then the RESULT line
    for p in problems:
        print(p.line(file), file=sys.stderr)
    if unchecked:
        print(f"{file}: gateway.document: not compared with the live parameter {cfg.gateway.parameter_name}: "
              f"{unchecked[1]}", file=sys.stderr)
    if problems or unchecked:
        code = ExitCode.FAILED if problems else unchecked[0]  # type: ignore[index]
        count = len(problems) + (1 if unchecked else 0)
        print(f"RESULT: refused (exit {int(code)}): {count} problem(s) in {file}: deploy of {stack} refused")
        return int(code)
    print(f"RESULT: ok (exit 0): {file} has no placeholders and agrees with the live gateway document: "
          f"{stack} may deploy")
    return int(ExitCode.DONE)


if __name__ == "__main__":
    sys.exit(main())
