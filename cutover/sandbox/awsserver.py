"""moto's server on 127.0.0.1, taught what the sandbox's ECS stand-in knows.

moto's JSON-protocol services dispatch an action (X-Amz-Target) to the method of the same
snake_case name on the service's response class, and serialize an `ActionResult` with botocore's
own output shape for that operation. So this server builds moto's usual per-service Flask apps,
except that the ECS app dispatches to a subclass of moto's ECS response class made for ONE world:

  ListServiceDeployments, DescribeServiceDeployments, StopServiceDeployment   (moto has none)
  ListTasks, DescribeTasks           the stand-in's tasks (moto starts no tasks for a service)
  UpdateService                      moto's, then the stand-in starts the deployment in the call
  DescribeServices                   moto's, from a consistent snapshot of the moving deployments

Nothing in moto is patched, so another world (or a test's `mock_aws`) in the same process is not
affected, and the tool reaches all of it through plain boto3. Requests for other clusters fall
through to moto.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from cutover.sandbox.ecs import EcsStandIn, StandInError


def _when(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    if isinstance(value, str):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        except ValueError:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def ecs_response_class(standin: EcsStandIn) -> type:
    from moto.core.responses import ActionResult
    from moto.ecs.exceptions import ECSException as ServiceException  # moto finds the ECS error shapes by module
    from moto.ecs.responses import EC2ContainerServiceResponse

    def fail(exc: StandInError) -> Exception:
        return ServiceException(exc.code, exc.message)

    class SandboxEcsResponse(EC2ContainerServiceResponse):
        def _ours(self) -> bool:
            return standin.owns_cluster(self._get_param("cluster", "default"))

        def update_service(self) -> ActionResult:
            service = str(self._get_param("service", "")).rsplit("/", 1)[-1]
            if not (self._ours() and service == standin.service_name):
                return super().update_service()
            with standin.lock:
                super().update_service()
                if self._get_param("forceNewDeployment"):
                    standin.force_new_deployment()
                return ActionResult({"service": standin.describe_service_snapshot()})

        def describe_services(self) -> ActionResult:
            if not self._ours():
                return super().describe_services()
            with standin.lock:
                result = super().describe_services()
                services = [standin.describe_service_snapshot() if s is standin.svc else s
                            for s in result.result["services"]]  # type: ignore[index]
                return ActionResult({"services": services, "failures": result.result["failures"]})  # type: ignore[index]

        def list_tasks(self) -> ActionResult:
            if not self._ours():
                return super().list_tasks()
            arns = standin.list_tasks(service=self._get_param("serviceName"),
                                      desired_status=self._get_param("desiredStatus"),
                                      started_by=self._get_param("startedBy"), family=self._get_param("family"))
            size = int(self._get_param("maxResults") or 100)
            start = int(self._get_param("nextToken") or 0)
            page = {"taskArns": arns[start:start + size]}
            if start + size < len(arns):
                page["nextToken"] = str(start + size)
            return ActionResult(page)

        def describe_tasks(self) -> ActionResult:
            if not self._ours():
                return super().describe_tasks()
            ids = self._get_param("tasks") or []
            if not ids:
                raise ServiceException("InvalidParameterException", "Tasks cannot be empty.")
            tasks, failures = standin.describe_tasks(ids)
            return ActionResult({"tasks": tasks, "failures": failures})

        def list_service_deployments(self) -> ActionResult:
            service = str(self._get_param("service", "")).rsplit("/", 1)[-1]
            if not self._ours() or service != standin.service_name:
                raise ServiceException("ServiceNotFoundException", "Service not found.")
            created = self._get_param("createdAt") or {}
            found = standin.list_deployments(status=self._get_param("status"), after=_when(created.get("after")),
                                             before=_when(created.get("before")))
            size = int(self._get_param("maxResults") or 20)
            start = int(self._get_param("nextToken") or 0)
            page: dict[str, Any] = {"serviceDeployments": [standin.brief(d) for d in found[start:start + size]]}
            if start + size < len(found):
                page["nextToken"] = str(start + size)
            return ActionResult(page)

        def describe_service_deployments(self) -> ActionResult:
            arns = self._get_param("serviceDeploymentArns") or []
            found, failures = [], []
            for arn in arns:
                d = standin.find(arn)
                if d is None:
                    failures.append({"arn": arn, "reason": "MISSING"})
                else:
                    found.append(standin.describe(d))
            return ActionResult({"serviceDeployments": found, "failures": failures})

        def stop_service_deployment(self) -> ActionResult:
            arn = self._get_param("serviceDeploymentArn")
            try:
                standin.stop_deployment(arn, self._get_param("stopType") or "ROLLBACK")
            except StandInError as exc:
                raise fail(exc) from None
            return ActionResult({"serviceDeploymentArn": arn})

    return SandboxEcsResponse


class AwsServer:
    """A werkzeug server running moto's apps, with the ECS app bound to one world's stand-in."""

    def __init__(self) -> None:
        self.ecs_response: type | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def _create_app(self, service: str) -> Any:
        from moto.core.utils import convert_to_flask_response
        from moto.moto_server.werkzeug_app import create_backend_app

        app = create_backend_app(service)
        if service == "ecs":
            server = self

            def dispatch(*args: Any, **kwargs: Any) -> Any:
                cls = server.ecs_response
                if cls is None:  # before the stand-in exists (provisioning): moto as it is
                    from moto.ecs.responses import EC2ContainerServiceResponse as cls
                return cls()._dispatch(*args, **kwargs)
            dispatch.__name__ = "dispatch"
            view = convert_to_flask_response(dispatch)
            for endpoint in list(app.view_functions):
                app.view_functions[endpoint] = view
        return app

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler
        from werkzeug.serving import make_server

        class Quiet(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:  # moto's per-request access log
                pass

        self._server = make_server("127.0.0.1", 0, DomainDispatcherApplication(self._create_app), threaded=True,
                                   request_handler=Quiet)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="sandbox-moto", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()  # the listening socket goes now, not at garbage collection
        if self._thread:
            self._thread.join(timeout=10)
