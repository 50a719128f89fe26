"""The only boto3 layer: small typed calls, one retry policy, a call counter.

Retries live here and only here: throttling and transient errors are retried with jittered
exponential backoff through tenacity with an *injected* sleep (tests pass a fake one), and
botocore's own retries are off so the two never multiply.
"""

from __future__ import annotations

import email.utils
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
    "RequestLimitExceeded", "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure",
    "InternalServerError", "ServerException", "RequestTimeout", "RequestTimeoutException",
    "LimitExceededException",
})


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code") in TRANSIENT_CODES
    return isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError))


def error_code(exc: BaseException) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


SSM_MAX_VERSIONS = 100


@dataclass(frozen=True)
class Parameter:
    name: str
    value: str
    version: int
    type: str
    tier: str = "Standard"
    modified: float | None = None     # LastModifiedDate, on AWS's clock
    server_time: float | None = None  # the Date of AWS's reply: AWS's clock now


def _server_time(resp: dict) -> float | None:
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not date:
        return None
    try:
        return email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return None


class Aws:
    """Typed wrappers over the five clients the tool needs."""

    def __init__(self, clients: dict[str, Any], *, sleep: Callable[[float], None],
                 attempts: int = 8, max_backoff: float = 20.0) -> None:
        self.ssm, self.ecs, self.logs = clients["ssm"], clients["ecs"], clients["logs"]
        self.cloudwatch, self.sts = clients["cloudwatch"], clients["sts"]
        self.calls: Counter[str] = Counter()
        self.retries = 0
        self._retrying = dict(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=0.5, max=max_backoff),
            stop=stop_after_attempt(attempts),
            sleep=sleep,
            reraise=True,
            before_sleep=self._count_retry,
        )

    @classmethod
    def from_environment(cls, *, region: str, profile: str | None, sleep: Callable[[float], None],
                         overrides: dict[str, str] | None = None) -> Aws:
        """The standard boto3 chain: profiles, env credentials, AWS_ENDPOINT_URL. `overrides` (the
        sandbox's endpoint and credentials, same keys as the env vars) win over the chain."""
        import boto3
        from botocore.config import Config

        o = overrides or {}
        session = boto3.Session(profile_name=None if o else profile, region_name=o.get("AWS_DEFAULT_REGION", region),
                                aws_access_key_id=o.get("AWS_ACCESS_KEY_ID"),
                                aws_secret_access_key=o.get("AWS_SECRET_ACCESS_KEY"))
        conf = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30)
        clients = {name: session.client(name, config=conf, endpoint_url=o.get("AWS_ENDPOINT_URL"))
                   for name in ("ssm", "ecs", "logs", "cloudwatch", "sts")}
        return cls(clients, sleep=sleep)

    def _count_retry(self, _state: Any) -> None:
        self.retries += 1

    def _call(self, client: Any, op: str, **kwargs: Any) -> dict:
        self.calls[op] += 1
        for attempt in Retrying(**self._retrying):
            with attempt:
                return getattr(client, op)(**kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ identity

    def caller_arn(self) -> str:
        return self._call(self.sts, "get_caller_identity")["Arn"]

    # ------------------------------------------------------------------ SSM

    def get_parameter(self, name: str, version: int | None = None) -> Parameter:
        selector = f"{name}:{version}" if version is not None else name
        resp = self._call(self.ssm, "get_parameter", Name=selector)
        p = resp["Parameter"]
        modified = p.get("LastModifiedDate")
        return Parameter(name=name, value=p["Value"], version=int(p["Version"]), type=p["Type"],
                         modified=modified.timestamp() if hasattr(modified, "timestamp") else None,
                         server_time=_server_time(resp))

    def find_parameter(self, name: str) -> Parameter | None:
        try:
            return self.get_parameter(name)
        except ClientError as exc:
            if error_code(exc) == "ParameterNotFound":
                return None
            raise

    def prepare_write(self, name: str) -> str:
        """Read the parameter's history before writing a new version; returns the newest tier.

        The tier comes from the history (scoped to the parameter in IAM), not DescribeParameters
        (which IAM cannot scope). And SSM keeps 100 versions: at the limit it deletes the oldest
        on write, but refuses (ParameterMaxVersionLimitExceeded) when that version carries a label,
        which every cutover adds. So at the limit the oldest version's labels are removed first;
        otherwise, after ~33 cutovers, even a rollback could not write.
        """
        versions = self.parameter_history(name)
        if not versions:
            return "Standard"
        oldest = min(versions, key=lambda v: v["Version"])
        if len(versions) >= SSM_MAX_VERSIONS and oldest.get("Labels"):
            self._call(self.ssm, "unlabel_parameter_version", Name=name, ParameterVersion=oldest["Version"],
                       Labels=oldest["Labels"])
        return max(versions, key=lambda v: v["Version"]).get("Tier", "Standard")

    def parameter_history(self, name: str) -> list[dict]:
        """Every kept version of the parameter (SSM keeps the last 100), values included."""
        kwargs: dict[str, Any] = dict(Name=name, MaxResults=50)
        versions: list[dict] = []
        while True:
            resp = self._call(self.ssm, "get_parameter_history", **kwargs)
            versions += resp.get("Parameters", [])
            if not resp.get("NextToken"):
                return versions
            kwargs["NextToken"] = resp["NextToken"]

    def put_parameter(self, name: str, value: str, *, type: str = "String", tier: str = "Standard",
                      description: str | None = None) -> int:
        kwargs: dict[str, Any] = dict(Name=name, Value=value, Type=type, Tier=tier, Overwrite=True)
        if description:
            kwargs["Description"] = description
        return int(self._call(self.ssm, "put_parameter", **kwargs)["Version"])

    def create_parameter(self, name: str, value: str) -> bool:
        """Create only if absent (Overwrite=False): the primitive the lock is built on."""
        try:
            self._call(self.ssm, "put_parameter", Name=name, Value=value, Type="String", Overwrite=False)
            return True
        except ClientError as exc:
            if error_code(exc) == "ParameterAlreadyExists":
                return False
            raise

    def delete_parameter(self, name: str) -> None:
        try:
            self._call(self.ssm, "delete_parameter", Name=name)
        except ClientError as exc:
            if error_code(exc) != "ParameterNotFound":
                raise

    def label_parameter(self, name: str, version: int, label: str) -> None:
        self._call(self.ssm, "label_parameter_version", Name=name, ParameterVersion=version, Labels=[label])

    # ------------------------------------------------------------------ ECS

    def describe_service(self, cluster: str, service: str) -> dict:
        resp = self._call(self.ecs, "describe_services", cluster=cluster, services=[service])
        if not resp.get("services"):
            reasons = "; ".join(f.get("reason", "?") for f in resp.get("failures", []))
            raise LookupError(f"ECS service {service} not found in cluster {cluster} ({reasons or 'no detail'})")
        return resp["services"][0]

    def force_new_deployment(self, cluster: str, service: str) -> dict:
        return self._call(self.ecs, "update_service", cluster=cluster, service=service,
                          forceNewDeployment=True)["service"]

    # Service deployments (ECS-native canary / blue-green). Shapes: botocore's ServiceDeploymentBrief
    # and ServiceDeployment; statuses: ServiceDeploymentStatus (PENDING, IN_PROGRESS, SUCCESSFUL,
    # STOPPED, STOP_REQUESTED, ROLLBACK_REQUESTED, ROLLBACK_IN_PROGRESS, ROLLBACK_SUCCESSFUL, ROLLBACK_FAILED).

    def list_service_deployments(self, cluster: str, service: str,
                                 statuses: tuple[str, ...] | list[str] = ()) -> list[dict]:
        """ServiceDeploymentBrief dicts, newest first as ECS returns them, every page followed."""
        kwargs: dict[str, Any] = dict(cluster=cluster, service=service)
        if statuses:
            kwargs["status"] = list(statuses)
        out: list[dict] = []
        while True:
            resp = self._call(self.ecs, "list_service_deployments", **kwargs)
            out += resp.get("serviceDeployments", [])
            token = resp.get("nextToken")
            if not token or token == kwargs.get("nextToken"):
                return out
            kwargs["nextToken"] = token

    def describe_service_deployments(self, arns: list[str] | tuple[str, ...]) -> list[dict]:
        """ServiceDeployment dicts (status, lifecycleStage, rollback, alarms...); at most 20 ARNs per call."""
        out: list[dict] = []
        arns = list(arns)
        for i in range(0, len(arns), 20):
            resp = self._call(self.ecs, "describe_service_deployments", serviceDeploymentArns=arns[i:i + 20])
            out += resp.get("serviceDeployments", [])
        return out

    def stop_service_deployment(self, arn: str, stop_type: str = "ROLLBACK") -> str:
        """ROLLBACK shifts traffic back to the previous revision; returns the stopped deployment's ARN."""
        return self._call(self.ecs, "stop_service_deployment", serviceDeploymentArn=arn,
                          stopType=stop_type)["serviceDeploymentArn"]

    def running_tasks(self, cluster: str, service: str) -> list[dict]:
        """The service's RUNNING tasks: [{"id", "startedBy", "taskDefinitionArn"}]. The task id is
        the last part of the task ARN, which is also the last part of its awslogs stream name."""
        arns: list[str] = []
        kwargs: dict[str, Any] = dict(cluster=cluster, serviceName=service, desiredStatus="RUNNING")
        while True:
            resp = self._call(self.ecs, "list_tasks", **kwargs)
            arns += resp.get("taskArns", [])
            if not resp.get("nextToken"):
                break
            kwargs["nextToken"] = resp["nextToken"]
        tasks: list[dict] = []
        for i in range(0, len(arns), 100):  # DescribeTasks takes at most 100
            resp = self._call(self.ecs, "describe_tasks", cluster=cluster, tasks=arns[i:i + 100])
            tasks += [{"id": t["taskArn"].rsplit("/", 1)[-1], "startedBy": t.get("startedBy", ""),
                       "taskDefinitionArn": t.get("taskDefinitionArn", "")}
                      for t in resp.get("tasks", []) if t.get("lastStatus", "RUNNING") == "RUNNING"]
        return tasks

    # ------------------------------------------------------------------ logs

    def log_events(self, group: str, start_ms: int, end_ms: int, pattern: str | None = None) -> Iterator[dict]:
        """Every event in [start_ms, end_ms], following nextToken; `pattern` is a server-side pre-filter."""
        kwargs: dict[str, Any] = dict(logGroupName=group, startTime=int(start_ms), endTime=int(end_ms))
        if pattern:
            kwargs["filterPattern"] = pattern
        while True:
            resp = self._call(self.logs, "filter_log_events", **kwargs)
            self.calls["events_read"] += len(resp.get("events", []))
            yield from resp.get("events", [])
            token = resp.get("nextToken")
            if not token or token == kwargs.get("nextToken"):
                return
            kwargs["nextToken"] = token

    # ------------------------------------------------------------------ alarms

    def alarm_states(self, names: tuple[str, ...] | list[str]) -> dict[str, str]:
        """name -> OK | ALARM | INSUFFICIENT_DATA, for the alarms that exist (a missing one is absent)."""
        if not names:
            return {}
        resp = self._call(self.cloudwatch, "describe_alarms", AlarmNames=list(names))
        return {a["AlarmName"]: a.get("StateValue", "") for a in resp.get("MetricAlarms", [])}
