"""Loading ``Settings`` from a TOML file and ``MIXER_*`` environment, and writing them back as TOML.

This is the only module that reads the config file or ``MIXER_*`` values: finding the file,
locating each key's line (a small text scan, since tomllib reports no positions), applying the
environment overrides, and ``render_settings``. Every problem is raised as one ``ConfigError``
naming file, line, dotted key and reason, never a traceback: nesting deeper than ``MAX_DEPTH``
and integers too long to parse are refused before they reach the parser's limits, and a
``demo.file`` that cannot be read is refused at load. What ``render_settings`` writes,
``load_settings`` reads back unchanged, secrets and URL credentials aside (never written;
``secrets_of`` lists them for ``redact``). Which keys exist and what each accepts (type, range)
is ``config_schema``, what a ``[[chats]]`` or ``[[profiles]]`` table may say ``config_tables``; the
dataclasses and ``ConfigError`` live in ``settings``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mixer.config_schema import SCHEMA, SECRETS, SECTIONS, BadValue, check_value, parse_text, shown, unknown_name
from mixer.config_tables import PALETTE, chat_from_table, profiles_from_tables
from mixer.redact import redact, url_secret
from mixer.settings import PACKAGE_DIR, ChatSettings, ConfigError, Settings

__all__ = [
    "BUNDLED_CONFIG",
    "PALETTE",
    "ConfigError",
    "find_config",
    "load_settings",
    "render_settings",
    "secrets_of",
]

BUNDLED_CONFIG = PACKAGE_DIR / "data" / "mixer.toml"
ENV_FILE = "environment"  # ConfigError.file for a bad MIXER_* value
MAX_DEPTH = 100  # arrays / inline tables nested deeper than this are refused (the parser recurses on them)
_URLISH = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _locate(text: str) -> dict[str, int]:
    """Dotted key or table (``server.port``, ``chats[1]``) -> the 1-based line where it is first written.

    A line scan, not a parser: it knows ``[table]``, ``[[array]]`` and ``key =`` / ``a.b =`` lines
    and skips the insides of multi-line strings; keys inside inline tables are not found.
    """
    found: dict[str, int] = {}
    counts: dict[str, int] = {}
    table = ""
    in_string: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if in_string:
            if line.count(in_string) % 2:
                in_string = None
        elif m := re.match(r"\s*\[\[\s*([\w.-]+)\s*\]\]", line):
            counts[m[1]] = counts.get(m[1], 0) + 1
            table = f"{m[1]}[{counts[m[1]] - 1}]"
            found.setdefault(table, lineno)
        elif m := re.match(r"\s*\[\s*([\w.-]+)\s*\]", line):
            table = m[1]
            found.setdefault(table, lineno)
        elif m := re.match(r"\s*([\w.-]+)\s*=", line):
            found.setdefault(f"{table}.{m[1]}" if table else m[1], lineno)
            in_string = next((q for q in ('"""', "'''") if line.count(q) % 2), None)
    return found


class _File:
    """The config file being loaded: its name as shown, and where each key sits in it."""

    def __init__(self, path: Path, shown: str, text: str) -> None:
        self.base = path.parent
        self.shown = shown
        self.lines = _locate(text)

    def line(self, key: str) -> int | None:
        """The key's line; failing that, its nearest enclosing table's or array's line."""
        while key:
            if key in self.lines:
                return self.lines[key]
            parent = re.sub(r"(\.[^.\[\]]*|\[\d+\])$", "", key)
            key = "" if parent == key else parent
        return None

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.shown, self.line(key), key, reason)

    def key_at(self, line: int) -> str:
        """The dotted key written last at or before ``line`` ("" when none is)."""
        before = [(n, key) for key, n in self.lines.items() if n <= line]
        return max(before)[1] if before else ""


def _too_deep(text: str) -> int | None:
    """The line where brackets first nest deeper than MAX_DEPTH, or None. Strings and comments are skipped,
    roughly (escaped quotes and multi-line strings aside): the parser itself refuses what this misses."""
    depth = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if depth == 0 and "[" not in line and "{" not in line:
            continue
        for piece in re.split(r"(\"(?:[^\"\\]|\\.)*\"|'[^']*'|#.*)", line)[::2]:  # outside strings and comments
            for c in piece:
                if c in "[{":
                    depth += 1
                    if depth > MAX_DEPTH:
                        return lineno
                elif c in "]}":
                    depth = max(depth - 1, 0)
        if re.match(r"\s*\[\[?[\w.-]+\]\]?\s*(#.*)?$", line):
            depth = 0  # a [table] header line, not an array
    return None


def _from_doc(doc: dict[str, Any], file: _File) -> tuple[dict[str, Any], list[ChatSettings]]:
    """Settings keyword arguments and chats from a parsed file; raises BadValue on the first bad entry."""
    values: dict[str, Any] = {}
    chats: list[ChatSettings] = []
    for section, body in doc.items():
        if section == "profiles":
            values["profiles"] = profiles_from_tables(body)
            continue
        if section == "chats":
            if not isinstance(body, list) or not all(isinstance(t, dict) for t in body):
                raise BadValue("chats", "must be an array of tables ([[chats]])")
            chats = [chat_from_table(f"chats[{i}]", i, t) for i, t in enumerate(body)]
            continue
        fields = SCHEMA.get(section)
        if fields is None:
            if not isinstance(body, dict | list):
                raise BadValue(section, f"unknown top-level key {section!r}; keys belong in a [section]")
            raise BadValue(section, unknown_name("section", section, list(SECTIONS)))
        if not isinstance(body, dict):
            raise BadValue(section, f"must be a table ([{section}])")
        for key, value in body.items():
            if (f := fields.get(key)) is None:
                raise BadValue(f"{section}.{key}", unknown_name("key", key, list(fields)))
            if (checked := check_value(f, value)) is None:
                raise BadValue(f"{section}.{key}", f.refusal(value))
            values[f.attr] = checked
    first: dict[str, int] = {}
    for i, chat in enumerate(chats):
        if chat.tag in first:
            j = first[chat.tag]
            at = f" at line {line}" if (line := file.line(f"chats[{j}].tag")) else ""
            raise BadValue(f"chats[{i}].tag", f"duplicate tag {chat.tag!r}, first used by chats[{j}]{at}")
        first[chat.tag] = i
    for i, profile in enumerate(values.get("profiles", ()) if chats else ()):
        if unknown := [c for c in profile.weights if c not in first]:  # a misspelt chat would weigh nothing
            raise BadValue(f"profiles[{i}].weights", f"{unknown[0]!r} is not a chat of this file's [[chats]]")
    if "demo_file" in values:
        values["demo_file"] = str((file.base / Path(values["demo_file"]).expanduser()).resolve())
        if problem := _not_a_file(values["demo_file"]):
            raise BadValue("demo.file", problem)
    return values, chats


def _not_a_file(path: str) -> str | None:
    """Why the recording at ``path`` cannot be replayed (checked at load, so `mixer run` never starts without it)."""
    try:
        with open(path, "rb"):
            return None
    except IsADirectoryError:
        return f"is a directory, not a recording: {path}"
    except OSError as exc:
        return f"cannot read the recording {path}: {exc.strerror or exc}"
    except ValueError:  # a NUL in the path
        return f"is not a path: {shown(None, path)}"


def _apply_env(values: dict[str, Any], chats: list[ChatSettings], env: Mapping[str, str]) -> list[str]:
    """Overrides ``values`` and ``chats`` in place from ``MIXER_<SECTION>_<KEY>``; returns the names used."""
    used: list[str] = []
    if (raw := env.get("MIXER_CHATS")) is not None:
        tags = [t for t in raw.split(",") if t.strip()]
        if not tags:
            raise ConfigError(ENV_FILE, None, "MIXER_CHATS", "must list at least one tag, like 'smbiz,edchat'")
        try:
            new = [chat_from_table("MIXER_CHATS", i, {"tag": t}) for i, t in enumerate(tags)]
        except BadValue as bad:
            raise ConfigError(ENV_FILE, None, "MIXER_CHATS", bad.reason) from None
        if len({c.tag for c in new}) < len(new):
            raise ConfigError(ENV_FILE, None, "MIXER_CHATS", f"lists a tag twice, got {raw!r}")
        chats[:] = new
        used.append("MIXER_CHATS")
    for section, fields in SCHEMA.items():
        for key, f in fields.items():
            name = f"MIXER_{section}_{key}".upper()
            if (text := env.get(name)) is None:
                continue
            if (value := parse_text(f, text)) is None:
                raise ConfigError(ENV_FILE, None, name, f.refusal(text))
            if f.attr == "demo_file":  # a relative path in the environment means relative to where the command runs
                value = str(Path(value).expanduser().resolve())
                if problem := _not_a_file(value):
                    raise ConfigError(ENV_FILE, None, name, problem)
            values[f.attr] = value
            used.append(name)
    return used


def _display(path: Path) -> str:
    """The path as a user recognises it: as given if relative, else relative to the working directory if under it."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def find_config(explicit: str | None, env: Mapping[str, str]) -> Path:
    """The config file to load: ``explicit`` > ``$MIXER_CONFIG`` > ``./mixer.toml`` > the bundled sample.

    A named file (explicit or ``MIXER_CONFIG``) that is not there is a ConfigError, never a silent fallback.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(explicit, None, "", "is a directory" if path.is_dir() else "no such config file")
        return path
    if named := env.get("MIXER_CONFIG"):
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(ENV_FILE, None, "MIXER_CONFIG", f"no such config file: {named!r}")
        return path
    local = Path("mixer.toml")
    return local if local.is_file() else BUNDLED_CONFIG


def load_settings(path: Path, env: Mapping[str, str]) -> Settings:
    """Settings from the TOML file at ``path``, then ``MIXER_*`` overrides from ``env``; all checked.

    Raises ConfigError for the first problem found. Unset keys keep the ``Settings`` defaults; ``source``
    names the file and the variables that overrode it. Relative ``demo.file`` paths are made absolute.
    """
    shown_path = _display(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(shown_path, None, "", f"cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(shown_path, data[: exc.start].count(b"\n") + 1, "", "not UTF-8 text") from exc
    file = _File(path, shown_path, text)
    if (deep := _too_deep(text)) is not None:
        raise file.error(file.key_at(deep), f"arrays or inline tables nested more than {MAX_DEPTH} deep") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r" \(at line (\d+), column (\d+)\)$", msg)
        line = int(m[1]) if m else None
        reason = f"invalid TOML: {msg[: m.start()]} (column {m[2]})" if m else f"invalid TOML: {msg}"
        raise ConfigError(shown_path, line, "", reason) from exc
    except RecursionError:  # nesting the scan above missed (brackets it took for a string's)
        raise ConfigError(shown_path, None, "", f"arrays or inline tables nested more than {MAX_DEPTH} deep") from None
    except ValueError:  # tomllib lets int()'s own limit through
        line = next((n for n, t in enumerate(text.splitlines(), 1) if re.search(r"\d{4300}", t)), None)
        key = file.key_at(line) if line else ""
        raise ConfigError(shown_path, line, key, "an integer of more than 4300 digits") from None
    try:
        values, chats = _from_doc(doc, file)
    except BadValue as bad:
        raise file.error(bad.key, bad.reason) from None
    used = _apply_env(values, chats, env)
    source = f"{shown_path} + env {', '.join(used)}" if used else shown_path
    return Settings(**values, chats=tuple(chats), source=source)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        chars = (_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in value)
        return '"' + "".join(chars) + '"'
    return repr(value)  # int or finite float: Python's repr is valid TOML


def render_settings(settings: Settings) -> str:
    """The settings as TOML in the file layout, headed by a comment naming their source.

    For Settings from ``load_settings``, loading the output gives equal Settings (``source`` aside).
    """
    source = " ".join(settings.source.splitlines())
    out = [
        f"# chatmixer settings in effect, from: {source}",
        "# Written by `mixer config`. A [section] key can be overridden by MIXER_<SECTION>_<KEY>, the chat list by",
        "# MIXER_CHATS; [[profiles]] and each chat's own keys are set here only. See docs/config.md.",
    ]
    if not settings.profiles:  # a top-level key: before any table. Without it, a reload would bring back 'wall'
        out += ["", "profiles = []  # no shaped profiles: every screen gets the full feed"]
    for section in SECTIONS:
        if section == "profiles":
            for profile in settings.profiles:
                out += ["", "[[profiles]]", f"name = {_toml(profile.name)}", f"rate = {_toml(float(profile.rate))}"]
                out += [f"burst = {profile.burst}", f"max_wait = {_toml(float(profile.max_wait))}"]
                out += [f"max_queue = {profile.max_queue}"]
                if profile.weights:
                    out.append(
                        "weights = { " + ", ".join(f"{_toml(c)} = {w!r}" for c, w in profile.weights.items()) + " }"
                    )
            continue
        if section == "chats":
            for chat in settings.chats:
                out += ["", "[[chats]]", *(f"{k} = {_toml(getattr(chat, k))}" for k in ("tag", "title", "colour"))]
                extra = ("schedule", "topic", "hosts", "follow")
                out += [f"{k} = {_toml(getattr(chat, k))}" for k in extra if getattr(chat, k)]
                if chat.sources is not None:  # (an empty list too: no live follower follows the chat)
                    out.append(f"sources = {_toml(chat.sources)}")
            continue
        out += ["", f"[{section}]"]
        for key, f in SCHEMA[section].items():
            value = getattr(settings, f.attr)
            variable = f"MIXER_{section.upper()}_{key.upper()}"
            if f.attr in SECRETS and value:
                out.append(f'{key} = ""  # set, not shown: give it as {variable}')
            elif (hidden := _hide_credentials(value)) != value:
                out.append(f"{key} = {_toml(hidden)}  # credentials not shown: give the whole value as {variable}")
            else:
                out.append(f"{key} = {_toml(value)}")
    return "\n".join(out) + "\n"


def _hide_credentials(value: object) -> object:
    """A URL (or list of URLs) through ``redact``; anything else as it is."""
    if isinstance(value, str) and _URLISH.match(value):
        return redact(value, url_secret(value))
    if isinstance(value, tuple):
        return tuple(_hide_credentials(v) for v in value)
    return value


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """The secret values in ``settings`` (tokens, the Redis password), for ``redact`` to hide wherever they appear."""
    found = [str(getattr(settings, attr)) for attr in sorted(SECRETS)]
    found.append(url_secret(settings.redis_url))
    return tuple(s for s in found if s)
