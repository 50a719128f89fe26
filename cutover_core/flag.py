"""The flag inside YAML text: find `tls.mtls.meshWritesEnforcement` and change only its bytes.

Standard library only, because the restorer Lambda runs this same code and the Lambda Python
runtime has boto3 and nothing else of ours. It understands the block-style YAML the gateway
document is written in (comments, blank lines, quoted or plain keys and scalars, a `---` start)
and refuses anything it cannot place with certainty (flow style on the path, a duplicate key,
anchors, multi-line scalars): a refusal is an error with the reason, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MODES: tuple[str, ...] = ("advisory", "strict")
MODE_PATH: tuple[str, ...] = ("tls", "mtls", "meshWritesEnforcement")

# `key: rest` where key is plain or quoted; `rest` is parsed below.
_KEY = re.compile(r"""^(?P<indent>\ *)
                      (?:"(?P<dq>[^"\\]*)"|'(?P<sq>[^']*)'|(?P<plain>[^\s\#'"{\[][^:\#]*?))
                      \s*:(?:\s+|$)(?P<rest>.*)$""", re.VERBOSE)
_PLAIN_SCALAR = re.compile(r"^(?P<value>[^\s#'\"{\[&*!|>][^#]*?)\s*(?:\s#.*)?$")
# Single-line quoted scalars with their escapes ('' inside single quotes, \x inside double quotes).
_QUOTED_SCALAR = re.compile(r"""^(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*')\s*(?:#.*)?$""")


class FlagError(ValueError):
    """The flag cannot be located with certainty in this text."""


@dataclass(frozen=True)
class Span:
    start: int   # character offsets of the scalar's text, quotes included
    end: int
    value: str   # the scalar's value, quotes removed
    quote: str   # "", "'" or '"'


def _lines(text: str) -> list[tuple[int, str]]:
    out, pos = [], 0
    for line in text.splitlines(keepends=True):
        out.append((pos, line.rstrip("\r\n")))
        pos += len(line)
    return out


def _ignorable(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith("#") or s in ("---", "...")


def _unclosed_quote(rest: str) -> bool:
    """A value that opens a quoted scalar and does not close it on its line (it goes on below)."""
    s = rest.strip()
    if not s or s[0] not in "'\"":
        return False
    return _QUOTED_SCALAR.match(s) is None


def locate(text: str, path: tuple[str, ...] = MODE_PATH) -> Span:
    """The span of the scalar at `path` in block-style YAML `text`."""
    where = ".".join(path)
    if "\t" in text:
        raise FlagError(f"cannot place {where}: the document contains tabs")
    lines = _lines(text)
    for _, line in lines:  # text inside a multi-line quoted scalar could look like keys: refuse it all
        m = _KEY.match(line)
        if m is not None and _unclosed_quote(m.group("rest")):
            raise FlagError(f"cannot place {where}: a multi-line quoted scalar ({line.strip()[:40]!r})")
    lo, hi, parent_indent = 0, len(lines), -1
    for depth, key in enumerate(path):
        found: list[tuple[int, re.Match[str]]] = []
        child_indent: int | None = None
        for i in range(lo, hi):
            line = lines[i][1]
            if _ignorable(line):
                continue
            indent = len(line) - len(line.lstrip(" "))
            if indent <= parent_indent:
                hi = i  # the parent's block ended
                break
            if child_indent is None:
                child_indent = indent
            if indent != child_indent:
                continue  # deeper: belongs to a sibling's block
            m = _KEY.match(line)
            if m is None:
                continue  # a list item or a continuation line: not a key of this mapping
            name = m.group("dq") if m.group("dq") is not None else (
                m.group("sq") if m.group("sq") is not None else m.group("plain").strip())
            if name == key:
                found.append((i, m))
        if not found:
            raise FlagError(f"{where}: key {key!r} not found (only block-style YAML is understood)")
        if len(found) > 1:
            raise FlagError(f"{where}: key {key!r} appears {len(found)} times")
        i, m = found[0]
        rest = m.group("rest")
        last = depth == len(path) - 1
        if not last:
            if rest.strip() and not rest.strip().startswith("#"):
                raise FlagError(f"cannot place {where}: {key!r} is not a block mapping (flow style or a value)")
            lo, parent_indent = i + 1, len(m.group("indent"))
            # hi stays: the child block ends at the first line indented <= parent_indent
            continue
        start_in_line = len(lines[i][1]) - len(rest)
        q = _QUOTED_SCALAR.match(rest)
        p = None if q else _PLAIN_SCALAR.match(rest)
        if q:
            raw = q.group("value")
            value, quote = raw[1:-1], raw[0]
        elif p:
            raw = p.group("value")
            value, quote = raw, ""
        else:
            raise FlagError(f"cannot place {where}: its value is not a plain or quoted scalar ({rest.strip()!r})")
        key_indent = len(m.group("indent"))
        following = next((line for _, line in lines[i + 1:] if not _ignorable(line)), None)
        if following is not None and len(following) - len(following.lstrip(" ")) > key_indent:
            raise FlagError(f"cannot place {where}: its value goes on below ({following.strip()[:40]!r}): a "
                            "multi-line scalar or a nested value")
        start = lines[i][0] + start_in_line
        return Span(start=start, end=start + len(raw), value=value, quote=quote)
    raise FlagError(f"{where}: empty path")  # pragma: no cover


def read_mode(text: str, path: tuple[str, ...] = MODE_PATH) -> str:
    return locate(text, path).value


def with_mode(text: str, mode: str, path: tuple[str, ...] = MODE_PATH) -> str:
    """The same text with only the flag's value changed (its quoting style kept)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    span = locate(text, path)
    return text[:span.start] + f"{span.quote}{mode}{span.quote}" + text[span.end:]
