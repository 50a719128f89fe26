"""Adopt what is live before deploying: the gateway document in config/<env>.yaml must be the live one.

The stack writes `gateway.document` into the gateway's SSM parameter. Its copy in this repository was
invented, so before the first deploy against the real account the document is *pulled* from the live
parameter (`python -m cutover config pull`), and a guard (cutover/deploy_guard.py, `make deploy`)
refuses a deploy while the two differ.

Pure functions first (text in, text out; no AWS, no files), then the `config pull` command that
cli.py dispatches to. Only the block under `gateway.document` changes: every other byte of the file,
comments included, stays as it was, and the flag's bytes are the live parameter's own
(cutover_core.flag places it). No round-trip YAML library is needed for that: the block is spliced as
text and the result is checked with PyYAML (the document equals the live one, key order included;
everything else equals the old file), or nothing is written.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cutover_core.flag import MODE_PATH, MODES, FlagError, locate

DOCUMENT_PATH: tuple[str, ...] = ("gateway", "document")
DOCUMENT_KEY = ".".join(DOCUMENT_PATH)
FLAG_KEY = ".".join((*DOCUMENT_PATH, *MODE_PATH))


class AdoptError(ValueError):
    """The live document cannot be adopted with certainty; the reason says why. Nothing is written."""


# ---------------------------------------------------------------- reading the live text


def parse_live(text: str) -> dict[str, Any]:
    """The live parameter's document, refused unless it is a YAML mapping whose flag the cutover tool
    can place (the tool flips it in this very text) and whose mode it knows."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AdoptError(f"the live document is not YAML ({first})") from None
    if not isinstance(doc, dict):
        raise AdoptError(f"the live document is not a YAML mapping (it is {type(doc).__name__})")
    try:
        span = locate(text)
    except FlagError as exc:
        raise AdoptError(f"the cutover tool cannot place the flag in the live document: {exc}") from None
    if span.value not in MODES:
        raise AdoptError(f"the live flag {'.'.join(MODE_PATH)} is {span.value!r}, not one of {', '.join(MODES)}")
    return doc


def flag_bytes(text: str, path: tuple[str, ...] = MODE_PATH) -> str:
    """The flag's exact characters in `text` (quotes included)."""
    span = locate(text, path)
    return text[span.start:span.end]


# ---------------------------------------------------------------- comparing documents


def same(a: Any, b: Any) -> bool:
    """Equal as the gateway would read them: types matter (7 is not '7', true is not 1), and so does
    the order of mapping keys (a pull must keep the live order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _key(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) and not isinstance(part, bool) else f"{'.' if out else ''}{part}"
    return out


@dataclass(frozen=True)
class Drift:
    key: str     # the config key path, gateway.document.<...>
    what: str    # "differs" | "only in the live parameter" | "only in config"


def drift_keys(live: Any, config: Any, path: tuple[Any, ...] = ()) -> list[Drift]:
    """Where the live document and config's differ, in anything but the flag (the cutover tool owns it;
    `flag_mismatch` reports it). Mapping order is not drift here (the gateway reads a mapping)."""
    full = _key((*DOCUMENT_PATH, *path))
    if isinstance(live, dict) and isinstance(config, dict):
        out: list[Drift] = []
        for k in live:
            if k not in config:
                out.append(Drift(_key((*DOCUMENT_PATH, *path, k)), "only in the live parameter"))
            else:
                out += drift_keys(live[k], config[k], (*path, k))
        out += [Drift(_key((*DOCUMENT_PATH, *path, k)), "only in config") for k in config if k not in live]
        return out
    if isinstance(live, list) and isinstance(config, list):
        out = []
        for i in range(max(len(live), len(config))):
            if i >= len(config):
                out.append(Drift(_key((*DOCUMENT_PATH, *path, i)), "only in the live parameter"))
            elif i >= len(live):
                out.append(Drift(_key((*DOCUMENT_PATH, *path, i)), "only in config"))
            else:
                out += drift_keys(live[i], config[i], (*path, i))
        return out
    if tuple(path) == MODE_PATH or same(live, config):
        return []
    return [Drift(full, "differs")]


def mode_of(doc: Any) -> Any:
    node = doc
    for part in MODE_PATH:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def flag_mismatch(live: Any, config: Any) -> tuple[Any, Any] | None:
    """(live mode, config mode) when both documents hold the flag and disagree."""
    a, b = mode_of(live), mode_of(config)
    return None if a is None or b is None or a == b else (a, b)


# ---------------------------------------------------------------- writing the document into the config text


_LINE_KEY = re.compile(r"""^(?P<indent>\ *)(?:"(?P<dq>[^"\\]*)"|'(?P<sq>[^']*)'|(?P<plain>[^\s#'"{\[\-][^:#]*?))
                           \s*:(?P<rest>\s.*|)$""", re.VERBOSE)


def _ignorable(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def document_block(text: str) -> tuple[int, int, int]:
    """(start, end, child indent) of the lines under `gateway.document:` in block-style config YAML: from
    the line after the key to the end of its last line indented deeper than the key. Comments and
    blank lines after that belong to what follows and are kept."""
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    lo, hi, parent = 0, len(lines), -1
    key_line = -1
    for depth, key in enumerate(DOCUMENT_PATH):
        found = []
        child: int | None = None
        for i in range(lo, hi):
            line = lines[i].rstrip("\r\n")
            if _ignorable(line):
                continue
            ind = _indent(line)
            if ind <= parent:
                hi = i
                break
            child = ind if child is None else child
            if ind != child:
                continue
            m = _LINE_KEY.match(line)
            if m and next(g for g in (m.group("dq"), m.group("sq"), m.group("plain")) if g is not None).strip() == key:
                found.append((i, m))
        where = ".".join(DOCUMENT_PATH[:depth + 1])
        if len(found) != 1:
            raise AdoptError(f"{where}: {'not found' if not found else 'appears more than once'} in the config "
                             "file (only block-style YAML is understood)")
        key_line, m = found[0]
        rest = m.group("rest").strip()
        if rest and not rest.startswith("#"):
            raise AdoptError(f"{where}: not a block mapping in the config file (flow style or a value)")
        lo, parent = key_line + 1, len(m.group("indent"))
    last, child = key_line, None
    for i in range(key_line + 1, len(lines)):
        line = lines[i].rstrip("\r\n")
        if _ignorable(line):
            continue
        if _indent(line) <= parent:
            break
        last, child = i, child if child is not None else _indent(line)
    if child is None:
        raise AdoptError(f"{DOCUMENT_KEY}: empty in the config file")
    return offsets[key_line + 1], offsets[last + 1], child


def _verbatim(live_text: str, indent: int) -> str:
    """The live text itself, shifted right: comments, quoting and layout kept."""
    lines = live_text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and lines[0].strip().split("#")[0].strip() == "---":
        lines = lines[1:]
    if lines and lines[-1].strip() == "...":
        lines.pop()
    return "".join((" " * indent + line if line else "") + "\n" for line in lines)


def _rendered(live_doc: dict, live_text: str, indent: int) -> str:
    """The live document re-rendered (same keys, values, order); the flag's bytes are put back later."""
    text = yaml.safe_dump(live_doc, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 16)
    return "".join(" " * indent + line if line.strip() else line for line in text.splitlines(keepends=True))


def _without_document(data: Any) -> Any:
    if not isinstance(data, dict) or not isinstance(data.get("gateway"), dict):
        return data
    return {**data, "gateway": {k: v for k, v in data["gateway"].items() if k != "document"}}


def config_with_document(config_text: str, live_text: str) -> str:
    """config/<env>.yaml's text with `gateway.document` replaced by the live document.

    The live text is spliced in verbatim (shifted right) when that parses back to the same document;
    otherwise it is re-rendered with PyYAML and the flag's live bytes spliced into place. Either way
    the result must parse to: the live document (keys, values, order), everything else as before, and
    the flag with the live parameter's exact characters; otherwise AdoptError."""
    live_doc = parse_live(live_text)
    live_flag = flag_bytes(live_text)
    start, end, indent = document_block(config_text)
    before = yaml.safe_load(config_text)
    problems = []
    for name, block in (("verbatim", _verbatim(live_text, indent)), ("rendered", _rendered(live_doc, live_text, indent))):
        text = config_text[:start] + block + config_text[end:]
        try:
            span = locate(text, (*DOCUMENT_PATH, *MODE_PATH))
            text = text[:span.start] + live_flag + text[span.end:]
            after = yaml.safe_load(text)
        except (FlagError, yaml.YAMLError) as exc:
            problems.append(f"{name}: {str(exc).splitlines()[0]}")
            continue
        ok = (isinstance(after, dict) and same(after["gateway"]["document"], live_doc)
              and same(_without_document(after), _without_document(before))
              and flag_bytes(text, (*DOCUMENT_PATH, *MODE_PATH)) == live_flag
              and text.startswith(config_text[:start]) and text.endswith(config_text[end:]))
        if ok:
            return text
        problems.append(f"{name}: does not parse back to the live document")
    raise AdoptError("cannot write the live document into the config file faithfully (" + "; ".join(problems) + ")")


def unified_diff(old: str, new: str, name: str) -> str:
    """`git diff` style for a path relative to the working directory (`a/config/...`), else the path."""
    a, b = (name, name) if Path(name).is_absolute() else (f"a/{name}", f"b/{name}")
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=a, tofile=b))


# ---------------------------------------------------------------- the command: python -m cutover config pull


@dataclass
class PullResult:
    env: str
    file: str
    parameter: str
    state: str = ""
    code: int = 0
    message: str = ""
    version: int | None = None
    changed: bool = False
    diff: str = ""
    drift: list[Drift] | None = None
    live_mode: str | None = None
    config_mode: str | None = None

    def to_json(self) -> str:
        import json

        return json.dumps({
            "exit_code": self.code, "outcome": self.state, "message": self.message, "env": self.env,
            "file": self.file, "parameter": self.parameter, "version": self.version, "changed": self.changed,
            "live_mode": self.live_mode, "config_mode": self.config_mode,
            "drift": [{"key": d.key, "what": d.what} for d in self.drift or []], "diff": self.diff}, indent=2)


def _confirm(ui: Any, question: str) -> bool:
    ui.info(f"{question} [yes/no]")
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _caller(aws: Any) -> str:
    try:
        return aws.caller_arn()
    except Exception as exc:  # only for the message: the identity is context, not a requirement
        return f"caller unknown: {type(exc).__name__}"


def pull(args: Any, ui: Any, out: Any) -> int:
    """`python -m cutover config pull --env ENV [--dry-run] [--yes]`: read the live gateway parameter,
    show the unified diff of config/<env>.yaml, and write it after confirmation."""
    import time

    import envconfig
    from cutover.aws import Aws
    from cutover.cli import UsageError
    from cutover.exitcodes import ExitCode
    from cutover.mtls import shown_path

    if args.sandbox:
        raise UsageError("config pull reads a real account's parameter into config/<env>.yaml; the sandbox world "
                         "lives for one run and needs no adoption; fix: drop --sandbox")
    env = args.env or "production"
    cfg = envconfig.load(env, args.config_dir)
    if not (args.yes or args.dry_run or ui.interactive):
        raise UsageError("not on a terminal: pass --yes to write (or --dry-run to see the diff)")
    path = Path(cfg.source)
    name = shown_path(path)
    res = PullResult(env=env, file=name, parameter=cfg.gateway.parameter_name, config_mode=cfg.gateway.mode)

    def end(code: ExitCode, state: str, message: str, next_: tuple[str, ...] = ()) -> int:
        res.code, res.state, res.message = int(code), state, message
        ui.info("")
        ui.info(f"RESULT: {state} (exit {int(code)}): {message}")
        for line in next_:
            ui.info(f"  next: {line}")
        if args.json:
            out.write(res.to_json() + "\n")
        return int(code)

    aws = Aws.from_environment(region=args.region or cfg.region, profile=args.profile, sleep=time.sleep)
    param = aws.find_parameter(cfg.gateway.parameter_name)
    if param is None:
        return end(ExitCode.FAILED, "not_found",
                   f"{cfg.gateway.parameter_name} does not exist in {args.region or cfg.region} for these credentials "
                   f"({_caller(aws)}): nothing to adopt, {name} unchanged; check --profile/AWS_PROFILE and the "
                   "account (a new environment has no live document: write gateway.document by hand)")
    res.version = param.version
    text = path.read_text(encoding="utf-8")
    try:
        new = config_with_document(text, param.value)
        envconfig.parse(new, str(path))  # the file must still load: a live flag the config refuses stops here
    except (AdoptError, envconfig.ConfigError) as exc:
        return end(ExitCode.FAILED, "cannot_adopt",
                   f"{cfg.gateway.parameter_name} v{param.version} cannot be adopted: {exc}; {name} unchanged")
    live_doc = yaml.safe_load(param.value)
    res.live_mode = mode_of(live_doc)
    res.drift = drift_keys(live_doc, cfg.gateway.document)
    if new == text:
        return end(ExitCode.DONE, "unchanged", f"{name} already holds the live document "
                   f"({cfg.gateway.parameter_name} v{param.version}): nothing to do")
    res.changed, res.diff = True, unified_diff(text, new, name)
    ui.info(f"live: {cfg.gateway.parameter_name} v{param.version} (mode {res.live_mode}); config: {name} "
            f"(mode {res.config_mode})")
    if res.drift:
        ui.info(f"the live document differs from {name} in {len(res.drift)} key(s) besides the flag:")
        for d in res.drift:
            ui.info(f"  {d.key}: {d.what}")
    else:
        ui.info(f"same keys and values as {name} besides the flag; the text differs (layout, comments, order)")
    if res.live_mode != res.config_mode:
        ui.info(f"the flag: live {res.live_mode}, config {res.config_mode} (the live bytes are adopted)")
    ui.info("")
    ui.info(res.diff.rstrip("\n"))
    if args.dry_run:
        return end(ExitCode.DONE, "dry_run", f"dry run: {name} unchanged (the diff above is what a pull writes)",
                   (f".venv/bin/python -m cutover config pull --env {env}",))
    if not args.yes and not _confirm(ui, f"write the live document into {name}?"):
        return end(ExitCode.FAILED, "not_confirmed", f"not confirmed: {name} unchanged")
    if path.read_text(encoding="utf-8") != text:
        return end(ExitCode.FAILED, "file_changed", f"{name} changed while the diff was shown: nothing written; "
                   "run the pull again")
    tmp = path.with_name(f".{path.name}.pull")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)
    left = envconfig.load(env, args.config_dir).placeholders
    return end(ExitCode.DONE, "written",
               f"wrote {cfg.gateway.parameter_name} v{param.version} into {name} as gateway.document (every other "
               "byte kept): review it, commit it" + (f"; placeholders left: {', '.join(left)}" if left else ""),
               (f"git diff {name}", f"make deploy ENV={env}    # refuses placeholders and drift"))
