"""The lock's body, as the tool and the restorer Lambda both read it.

The lock is an SSM parameter created with Overwrite=False. Every act on it goes by its random
`token`, never by run id: a process that was taken over can never delete its adopter's lock.
Expiry is judged on AWS's clock: the parameter's LastModifiedDate (set by SSM at each renewal)
plus `ttl`, compared with the time AWS states in its reply, so neither laptop's clock matters.

Standard library only (see cutover_core/__init__.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LockBody:
    run_id: str
    operator: str
    token: str
    ttl: float            # seconds after the last renewal (LastModifiedDate)
    started: float        # when the holder first took it (informational)
    renewed_by: str = ""  # "" or "restorer" etc.: who wrote this version

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LockBody:
        data = json.loads(text)
        return cls(run_id=str(data.get("run_id", "?")), operator=str(data.get("operator", "?")),
                   token=str(data.get("token", "")), ttl=float(data.get("ttl", 0)),
                   started=float(data.get("started", 0)), renewed_by=str(data.get("renewed_by", "")))


def expires_at(modified: float, body: LockBody) -> float:
    return modified + body.ttl


def is_expired(modified: float, body: LockBody, aws_now: float) -> bool:
    return expires_at(modified, body) <= aws_now
