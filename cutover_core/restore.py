"""The restore rule: what a rollback writes into the gateway parameter. One function, used by the
tool and by the server-side restorer Lambda, so the two can never disagree.

- The current version is the one this run wrote: put back the exact previous bytes.
- Someone else wrote after us (another key edited during the watch, a `cdk deploy`): put back
  only `meshWritesEnforcement` (the previous mode) into *their* document, keep every other byte
  of it, and name their version.
- The flag already says the previous mode: write nothing.

Standard library only (see cutover_core/__init__.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from cutover_core.flag import read_mode, with_mode

EXACT, FLAG_ONLY, NOTHING = "exact", "flag_only", "nothing"


@dataclass(frozen=True)
class RestorePlan:
    rule: str                 # exact | flag_only | nothing
    value: str | None         # the document to write (None: nothing to write)
    foreign_version: int | None
    note: str


def plan_restore(*, current_value: str, current_version: int, previous_value: str, previous_version: int,
                 previous_mode: str, run_target: str, run_version: int | None) -> RestorePlan:
    """Decide the rollback write from what is live now and what the run remembers.

    `run_version` is the version this run wrote (None when a crash came between the write and its
    journal entry: then the current version is ours only if it holds exactly what we would have
    written, the previous document with the flag at `run_target`).
    """
    if current_value == previous_value:
        return RestorePlan(NOTHING, None, None, f"v{current_version} already holds the v{previous_version} document")
    ours = current_version == run_version or (
        run_version is None and current_value == with_mode(previous_value, run_target))
    if ours:
        return RestorePlan(EXACT, previous_value, None,
                           f"v{current_version} is this run's write: the exact v{previous_version} bytes go back")
    if read_mode(current_value) == previous_mode:
        return RestorePlan(NOTHING, None, current_version,
                           f"v{current_version} was written by someone else and already says {previous_mode}: "
                           "left as it is")
    return RestorePlan(FLAG_ONLY, with_mode(current_value, previous_mode), current_version,
                       f"v{current_version} was written by someone else: only meshWritesEnforcement goes back to "
                       f"{previous_mode}, every other byte of v{current_version} is kept")
