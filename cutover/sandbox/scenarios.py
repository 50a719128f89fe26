"""Names only (no heavy imports), so `python -m cutover --help` can list them without moto."""

from __future__ import annotations

SCENARIOS: dict[str, str] = {
    "clean": "enrolled callers with certificates, unauthenticated noise",
    "unenrolled-caller": "from the flip on, brainstorm-cli calls with its API key but no certificate, at a steady rate",
    "bypass-traffic": "three mtls-advisory bypass events in the last 24 h",
    "rollout-fails": "the first new deployment's tasks cannot start; the circuit breaker fails it",
    "untrusted-cert": "the tasks skip chain verification: any well-formed client certificate passes",
    "blind-watch": "the tasks check mTLS before the API key: their 403 lines carry no caller",
    "operator-vanishes": "the tool is killed during the bake; then brainstorm-cli calls without a certificate: "
                         "the legitimate-403 alarm, ECS's rollback and the restorer must undo it alone",
}
STRATEGIES: tuple[str, ...] = ("rolling", "canary", "blue_green")
