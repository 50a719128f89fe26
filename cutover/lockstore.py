"""The lock and the journal, both kept in AWS (SSM), so any machine can take over after a crash.

- lock:    /brainstorm-router/<env>/cutover/lock     created with Overwrite=False (atomic)
- journal: /brainstorm-router/<env>/cutover/journal  the current (or last) run, rewritten at every
           step; SSM's version history keeps earlier runs.

Every act goes by the lock's token (cutover_core.lock): acquisition is idempotent (a retry that
finds our own token after a lost reply is ours), release and takeover compare tokens, and a
journal write first checks that this process still holds the lock, so a superseded process can
neither delete its adopter's lock nor overwrite its journal. SSM has no conditional delete or
put, so between the check and the write there is a window of one API round trip; a takeover
needs an operator's `resume`/`rollback`, which makes a race inside that window very unlikely.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from cutover.aws import Aws
from cutover_core.journal import Journal, fit
from cutover_core.lock import LockBody, expires_at


def iso(epoch: float) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LockView:
    body: LockBody
    modified: float
    aws_now: float

    @property
    def expires(self) -> float:
        return expires_at(self.modified, self.body)

    @property
    def expired(self) -> bool:
        return self.expires <= self.aws_now

    def describe(self) -> str:
        return (f"run {self.body.run_id} by {self.body.operator} since {iso(self.body.started)}, "
                f"expires {iso(self.expires)}")


class LockHeld(Exception):
    def __init__(self, holder: LockView | None) -> None:
        self.holder = holder
        if holder is None:
            super().__init__("another cutover holds the lock (it changed while we looked); try again")
            return
        hint = ("it expired (on AWS's clock): pass --break-lock to take it over" if holder.expired else
                f"it expires at {iso(holder.expires)} unless renewed; check `python -m cutover status`")
        super().__init__(f"another cutover holds the lock ({holder.describe()}); {hint}")


class LockLost(Exception):
    """This process's token is no longer on the lock: another process took the run over."""


class Lock:
    def __init__(self, aws: Aws, name: str, *, ttl: float, clock: Callable[[], float]) -> None:
        self.aws, self.name, self.ttl, self.clock = aws, name, ttl, clock
        self.token: str | None = None
        self.run_id: str | None = None
        self._renewed_at = 0.0

    def read(self) -> LockView | None:
        p = self.aws.find_parameter(self.name)
        if p is None:
            return None
        aws_now = p.server_time if p.server_time is not None else self.clock()
        return LockView(LockBody.from_json(p.value), p.modified if p.modified is not None else aws_now, aws_now)

    def _body(self, run_id: str, operator: str, token: str) -> LockBody:
        return LockBody(run_id=run_id, operator=operator, token=token, ttl=self.ttl, started=self.clock())

    def acquire(self, *, run_id: str, operator: str, break_lock: bool = False, finished_run: str | None = None) -> str:
        """Create the lock. A create whose reply was lost and whose retry finds our own token is ours.
        `finished_run`: the journal's last run, finished; a lock it left (killed between its last
        journal write and the release) guards nothing and is taken."""
        token = secrets.token_hex(8)
        body = self._body(run_id, operator, token)
        for _ in range(3):
            if self.aws.create_parameter(self.name, body.to_json()):
                return self._hold(run_id, token)
            holder = self.read()
            if holder is None:
                continue  # released between our two calls: try again
            if holder.body.token == token:
                return self._hold(run_id, token)  # our create went through; only its reply was lost
            if (holder.expired and break_lock) or (finished_run is not None and holder.body.run_id == finished_run):
                self.aws.delete_parameter(self.name)
                continue
            raise LockHeld(holder)
        raise LockHeld(self.read())

    def adopt(self, *, run_id: str, operator: str, break_lock: bool = False) -> str:
        """`resume`/`rollback`: take over the lock of run `run_id` (the journal's run), a free lock,
        or (with --break-lock) an expired one. The previous holder's token stops working."""
        holder = self.read()
        if holder is None:
            return self.acquire(run_id=run_id, operator=operator)
        if holder.body.run_id != run_id and not (holder.expired and break_lock):
            raise LockHeld(holder)
        token = secrets.token_hex(8)
        self.aws.put_parameter(self.name, self._body(run_id, operator, token).to_json())
        return self._hold(run_id, token)

    def _hold(self, run_id: str, token: str) -> str:
        self.token, self.run_id, self._renewed_at = token, run_id, self.clock()
        return token

    def holds(self) -> bool:
        holder = self.read()
        return self.token is not None and holder is not None and holder.body.token == self.token

    def check(self) -> None:
        if self.token is not None and not self.holds():
            raise LockLost(f"run {self.run_id} was taken over by another process (its lock token is gone); "
                           "this process stops here without touching production")

    def keepalive(self, *, force: bool = False) -> None:
        """Check the token; renew (a rewrite moves LastModifiedDate, AWS's clock) every quarter TTL."""
        if self.token is None:
            return
        holder = self.read()
        if holder is None or holder.body.token != self.token:
            raise LockLost(f"run {self.run_id} was taken over by another process (its lock token is gone); "
                           "this process stops here without touching production")
        if force or self.clock() - self._renewed_at >= self.ttl / 4:
            self.aws.put_parameter(self.name, holder.body.to_json())
            self._renewed_at = self.clock()

    def release(self) -> bool:
        """Delete the lock if it is still ours (by token); a superseded process deletes nothing."""
        if self.token is None:
            return False
        holder = self.read()
        mine = holder is not None and holder.body.token == self.token
        if mine:
            self.aws.delete_parameter(self.name)
        self.token = None
        return mine


class JournalStore:
    def __init__(self, aws: Aws, name: str, lock: Lock) -> None:
        self.aws, self.name, self.lock = aws, name, lock

    def save(self, journal: Journal) -> None:
        """Write the journal, but only while this process holds the run's lock."""
        self.lock.check()
        self.aws.put_parameter(self.name, fit(journal),
                               description="brainstorm-router cutover journal (python -m cutover status)")

    def load(self) -> Journal | None:
        p = self.aws.find_parameter(self.name)
        return Journal.from_json(p.value) if p else None
