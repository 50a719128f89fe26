"""The world's admin endpoint: plain HTTP on 127.0.0.1 (its own port, never the gateway's),
read-only JSON about the world, for tests and benchmarks in another process.

  GET /state     everything: tasks (id, mode, status, deployment = startedBy, revision, target
                 group, log stream), service deployments (status, stage, weights), listeners and
                 their weights, requests routed per listener and target group, the callers'
                 answers with timestamps (the unenrolled caller's refused/served counts and
                 incidents), the legitimate-403 alarm, parameter changes, deployment events
  GET /tasks     just the tasks
  GET /traffic   just the callers
  GET /events    just the `ECS Deployment State Change` events
  GET /health    {"ok": true}
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class AdminServer:
    def __init__(self, world: Any) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                if path == "/health":
                    body: Any = {"ok": True}
                else:
                    state = world.state()
                    body = {"/state": state, "/tasks": state["tasks"], "/traffic": state["traffic"],
                            "/events": state["events"]}.get(path)
                if body is None:
                    self.send_error(404)
                    return
                data = json.dumps(body, default=str).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="sandbox-admin", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
