"""The exit codes, each with its meaning: the CLI's epilog, the reports and the README's table are
generated from (or checked against) this one enum."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    DONE = 0
    FAILED = 1
    USAGE = 2
    GATE_RED = 3
    ROLLED_BACK = 4
    ROLLBACK_FAILED = 5

    @property
    def meaning(self) -> str:
        return _MEANING[self]


_MEANING = {
    ExitCode.DONE: "done, or nothing to do",
    ExitCode.FAILED: "anything else: refused, interrupted, taken over (the message says what; `status` says where "
                     "production is)",
    ExitCode.USAGE: "bad usage or config: no AWS write happened",
    ExitCode.GATE_RED: "gate RED: nothing changed",
    ExitCode.ROLLED_BACK: "rolled back: production is on the previous mode",
    ExitCode.ROLLBACK_FAILED: "ROLLBACK FAILED or interrupted: production may be half-changed; the exact manual "
                              "commands are printed",
}


def table_rows() -> list[tuple[int, str]]:
    return [(int(c), c.meaning) for c in ExitCode]
