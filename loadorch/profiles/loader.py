"""YAML profiles to validated models, with file:line:column in every error.

The YAML is read as libyaml's event stream and turned into Python values here, not by PyYAML's
constructor, so that:
- every value keeps its position (for errors), without a node object per value;
- duplicate keys, keys that are lists or mappings, and tags other than YAML's plain types
  (`!!python/object`, `!foo`, ...) are refused where they are written;
- nesting deeper than `MAX_DEPTH`, more than `MAX_VALUES` values, and aliases that would add more
  than `MAX_ALIAS_VALUES` values (an "alias bomb" grows exponentially) are refused before any of it
  is expanded;
- bytes that are not UTF-8 are reported at their line and column.

Which file a profile name means: a name with a path separator or a .yaml/.yml suffix is a file; a
bare name is a built-in profile, unless a file of that name (`NAME`, `NAME.yaml`, `NAME.yml`)
exists in the current directory too: then the name is ambiguous and refused, and the message says
how to pick (`./NAME.yaml` for the file, `builtin:NAME` for the built-in). A bare name that is no
built-in but an existing file is that file.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gc
import heapq
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from loadorch.errors import ProfileError
from loadorch.profiles.model import CurveError, FieldError, Profile, ReplayShape, check_curve_points

BUILTIN_DIR = Path(__file__).parent / "builtin"
BUILTIN_PREFIX = "builtin:"

MAX_FILE_BYTES = 10 * 1024 * 1024  # profiles and inventories; a long replay curve belongs in curve_file
MAX_DEPTH = 64
MAX_VALUES = 1_000_000
MAX_ALIAS_VALUES = 100_000
MAX_LISTED_PROBLEMS = 20

Position = tuple[int, int]
Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

PROFILE_FIX = "correct the values named above; `spike profiles show smoke` prints a valid example"
UTF8_FIX = "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE > FILE.new`)"


@dataclass(frozen=True)
class LoadedProfile:
    """A profile plus where it came from and what its feeders hold."""

    profile: Profile
    source: Path
    feeder_columns: dict[str, tuple[str, ...]]


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve_profile_path(name_or_path: str) -> Path:
    """A built-in profile name or a path to a YAML file (the rule is in the module docstring)."""
    text = str(name_or_path)
    builtins = ", ".join(builtin_names())
    if not text.strip():
        raise ProfileError(
            "the profile name is empty", fix=f"give a built-in name ({builtins}) or a YAML path"
        )
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX) :]
        if name not in builtin_names():
            raise ProfileError(f"no built-in profile {name!r}", fix=f"built-in profiles: {builtins}")
        return BUILTIN_DIR / f"{name}.yaml"
    candidate = Path(text)
    if "/" in text or os.sep in text or candidate.suffix in (".yaml", ".yml"):
        return _profile_file(candidate)
    lookalikes = [p for p in (candidate, Path(f"{text}.yaml"), Path(f"{text}.yml")) if p.is_file()]
    if text in builtin_names():
        if lookalikes:
            local = f"./{lookalikes[0]}"
            raise ProfileError(
                f"profile {text!r} is ambiguous: it names the built-in profile {text!r} and the file {local}",
                fix=f"give {local} for the file, or {BUILTIN_PREFIX}{text} for the built-in",
            )
        return BUILTIN_DIR / f"{text}.yaml"
    if candidate.exists():
        return _profile_file(candidate)
    hint = f"; did you mean ./{lookalikes[0]}?" if lookalikes else ""
    raise ProfileError(
        f"unknown profile {text!r}{hint}",
        fix=f"use a built-in profile ({builtins}) or a path to a YAML file (with ./ or a .yaml suffix)",
    )


def _profile_file(path: Path) -> Path:
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.y*ml"))[:5]
        raise ProfileError(
            f"{path} is a directory, not a profile file",
            fix=f"give one of its YAML files ({', '.join(str(path / n) for n in inside)})"
            if inside
            else "give the path of a profile YAML file",
        )
    if not path.exists():
        raise ProfileError(
            f"profile file {path} does not exist",
            fix=f"give an existing YAML file or a built-in name ({', '.join(builtin_names())})",
        )
    return path


def read_text_file(path: Path, *, what: str, fix: str, limit: int = MAX_FILE_BYTES) -> str:
    """A small UTF-8 text file (a profile, an inventory); errors name the file and, for bad bytes, line:column."""
    too_big = ProfileError(
        f"the {what} is larger than {limit / 1e6:.0f} MB",
        where=str(path),
        fix="keep a long replay curve in a curve_file CSV" if what == "profile" else fix,
    )
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ProfileError(f"{what} {path} is a directory, not a file", where=str(path), fix=fix)
        if info.st_size > limit:
            raise too_big
        with path.open("rb") as handle:
            data = handle.read(limit + 1)  # bounded: /dev/zero and pipes are files too
    except OSError as exc:
        raise ProfileError(f"cannot read the {what}: {exc.strerror}", where=str(path), fix=fix) from None
    if len(data) > limit:
        raise too_big
    return decode_utf8(data, path)


def decode_utf8(data: bytes, path: Path, *, first_line: int = 1) -> str:
    """`data` as text; a byte that is not UTF-8 is reported at its line and column (of `path`)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
        raise ProfileError(
            f"byte 0x{data[exc.start]:02x} is not UTF-8 ({exc.reason})",
            where=f"{path}:{line}:{column}",
            fix=UTF8_FIX,
        ) from None
    return text.removeprefix("\ufeff")


def check_utf8_file(path: Path, chunk_bytes: int = 1 << 20) -> None:
    """Raise ProfileError at the line:column of the first byte of `path` that is not UTF-8 (read in chunks)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as handle:
        pending = b""  # the current line's bytes so far, for the column
        while True:
            chunk = handle.read(chunk_bytes)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError:
                # the decoder has no byte offset across chunks: find it in the last line(s)
                decode_utf8(pending + chunk, path, first_line=line)
                raise  # pragma: no cover - decode_utf8 raised
            if not chunk:
                return
            newlines = chunk.count(b"\n")
            if newlines:
                line += newlines
                pending = chunk[chunk.rfind(b"\n") + 1 :]
            else:
                pending += chunk


def load_profile(name_or_path: str | Path) -> LoadedProfile:
    path = resolve_profile_path(str(name_or_path))
    text = read_text_file(path, what="profile", fix="give the path of a profile YAML file")
    return parse_profile(text, path)


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Reading a large file makes objects that never form cycles: the cyclic collector would scan
    them all again and again (it doubled a 5 MB profile's load time). Reference counting still frees
    everything; the collector is back on as soon as the file is read and validated."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_profile(text: str, path: Path) -> LoadedProfile:
    """Validate profile YAML; `path` is used for messages and relative feeder files."""
    with _without_cyclic_gc():
        return _parse_profile(text, path)


def _parse_profile(text: str, path: Path) -> LoadedProfile:
    data, positions = parse_yaml(text, path, what="profile", fix=PROFILE_FIX)
    if not isinstance(data, dict):
        raise ProfileError(
            f"a profile is a YAML mapping (name:, target:, shape:, ...), not {_kind(data)}",
            where=_where(path, positions.value(())),
            fix="start from `spike profiles show smoke`: keys at the top level, no leading '- '",
        )
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, path, positions) from None
    return _with_feeders(_with_replay_curve(profile, path, positions), path, positions)


def parse_yaml_model(text: str, path: Path, model: type[M], *, what: str, fix: str) -> M:
    """Any of spike's YAML files (an SSH inventory, ...) with the profile's file:line:column errors."""
    return parse_yaml_model_with_positions(text, path, model, what=what, fix=fix)[0]


def parse_yaml_model_with_positions(
    text: str, path: Path, model: type[M], *, what: str, fix: str
) -> tuple[M, Positions]:
    """`parse_yaml_model`, plus where every value is (for checks made after validation)."""
    with _without_cyclic_gc():
        data, positions = parse_yaml(text, path, what=what, fix=fix)
        if not isinstance(data, dict):
            raise ProfileError(
                f"{what} is a YAML mapping, not {_kind(data)}",
                where=_where(path, positions.value(())),
                fix=fix,
            )
        try:
            return model.model_validate(data), positions
        except ValidationError as exc:
            raise _translate(exc, path, positions, model=model, what=what, fix=fix) from None


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    return f"the value {value!r}"


def _where(path: Path, position: Position) -> str:
    return f"{path}:{position[0]}:{position[1]}"


# -- YAML events to values ---------------------------------------------------------------------


class _Spot:
    """Where a list or mapping is, and where its children are.

    `kids` is a dict (key -> (key position, child)) for a mapping, a list of children for a
    sequence; a child is a `_Spot` or, for a plain value, its (line, column).
    """

    __slots__ = ("col", "kids", "line")

    def __init__(self, line: int, col: int, kids: dict[Any, tuple[Position, Any]] | list[Any]) -> None:
        self.line = line
        self.col = col
        self.kids = kids


class Positions:
    """Where the values of a parsed YAML document are, by location (keys and list indexes)."""

    def __init__(self, root: _Spot | Position) -> None:
        self._root = root

    def value(self, loc: Loc) -> Position:
        """The value at `loc` (for a list or mapping under a key: the key), or the nearest enclosing one."""
        return self._walk(loc)[0]

    def key(self, loc: Loc) -> Position:
        """The key of the value at `loc` (for errors about the key itself), else as `value`."""
        return self._walk(loc)[1]

    def _walk(self, loc: Loc) -> tuple[Position, Position]:
        node = self._root
        here = node if isinstance(node, tuple) else (node.line, node.col)
        key = here
        for part in loc:
            if not isinstance(node, _Spot):
                break
            kids = node.kids
            if isinstance(kids, dict):
                entry = kids.get(part)
                if entry is None:
                    break
                key, child = entry
                here = key if isinstance(child, _Spot) else child
            elif isinstance(part, int) and 0 <= part < len(kids):
                child = kids[part]
                here = key = (child.line, child.col) if isinstance(child, _Spot) else child
            else:
                break
            node = child
        return here, key


_CORE = "tag:yaml.org,2002:"
_STR = _CORE + "str"
_SCALAR_TAGS = frozenset(_CORE + t for t in ("null", "bool", "int", "float", "str", "timestamp"))
_RESOLVERS = yaml.SafeLoader.yaml_implicit_resolvers
_NO_KEY = object()
_MERGE = object()


class _Frame:
    """A list or mapping being read."""

    __slots__ = ("anchor", "data", "height", "is_map", "key", "key_pos", "kids", "merged", "spot", "start")

    def __init__(self, is_map: bool, spot: _Spot, anchor: str | None, start: int) -> None:
        self.is_map = is_map
        self.data: Any = {} if is_map else []
        self.spot = spot
        self.kids: Any = spot.kids
        self.anchor = anchor
        self.start = start  # values read before it: its size (aliases expanded) is the difference at its end
        self.height = 0  # lists and mappings nested in it
        self.key: Any = _NO_KEY
        self.key_pos: Position = (0, 0)
        self.merged: set[Any] | None = None  # keys from a `<<` merge (an explicit key may replace them)


class _Reader:
    """Builds Python values from libyaml's events, with the limits of the module docstring.

    The loop is written for speed (a 5 MB profile is about a million events): plain values are
    added inline, everything rarer goes through methods.
    """

    def __init__(self, path: Path, what: str, fix: str) -> None:
        self.path = path
        self.what = what
        self.fix = fix
        self.anchors: dict[str, tuple[Any, _Spot | Position, int, int]] = {}
        self.values = 0
        self.alias_values = 0
        self.constructor = yaml.SafeLoader("")
        self.cache: dict[str, Any] = {}

    def error(self, mark: Any, message: str, fix: str) -> ProfileError:
        return ProfileError(message, where=f"{self.path}:{mark.line + 1}:{mark.column + 1}", fix=fix)

    def read(self, text: str) -> tuple[Any, Positions]:
        parser = yaml.CSafeLoader(text)
        try:
            return self._read(parser)
        finally:
            parser.dispose()

    def _read(self, parser: Any) -> tuple[Any, Positions]:
        get_event = parser.get_event
        stack: list[_Frame] = []
        top: _Frame | None = None
        root: Any = _NO_KEY
        root_spot: _Spot | Position = (1, 1)
        documents = 0
        values = 0
        cache = self.cache
        scalar_event, alias_event = yaml.ScalarEvent, yaml.AliasEvent
        mapping_start, sequence_start = yaml.MappingStartEvent, yaml.SequenceStartEvent
        mapping_end, sequence_end = yaml.MappingEndEvent, yaml.SequenceEndEvent
        no_key, merge = _NO_KEY, _MERGE
        while True:
            event = get_event()
            if event is None:
                break
            kind = type(event)
            if kind is scalar_event:
                values += 1
                if values > MAX_VALUES:
                    raise self._too_many(event)
                tag = event.tag
                if tag is None and event.implicit[0]:
                    value = cache.get(event.value, no_key)
                    if value is no_key:
                        value = self._plain(event)
                elif tag is None or tag == "!":
                    value = event.value
                else:
                    value = self._tagged(event)
                mark = event.start_mark
                position = (mark.line + 1, mark.column + 1)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (value, position, 1, 0)
                if top is None:
                    root, root_spot = value, position
                elif not top.is_map:
                    top.data.append("<<" if value is merge else value)
                    top.kids.append(position)
                elif top.key is no_key:
                    top.key = value
                    top.key_pos = position
                else:
                    key = top.key
                    top.key = no_key
                    if key is merge or key in top.data or value is merge:
                        self._put(top, key, value, position, event)
                    else:
                        top.data[key] = value
                        top.kids[key] = (top.key_pos, position)
            elif kind is mapping_start or kind is sequence_start:
                values += 1
                if values > MAX_VALUES:
                    raise self._too_many(event)
                if len(stack) >= MAX_DEPTH:
                    raise self._too_deep(event)
                if top is not None and top.is_map and top.key is no_key:
                    raise self._container_key(event)
                is_map = kind is mapping_start
                if event.tag is not None:
                    self._check_tag(event, _CORE + ("map" if is_map else "seq"))
                mark = event.start_mark
                spot = _Spot(mark.line + 1, mark.column + 1, {} if is_map else [])
                top = _Frame(is_map, spot, event.anchor, values - 1)
                stack.append(top)
            elif kind is mapping_end or kind is sequence_end:
                frame = stack.pop()
                top = stack[-1] if stack else None
                height = frame.height + 1
                if frame.anchor is not None:
                    self.anchors[frame.anchor] = (frame.data, frame.spot, values - frame.start, height)
                if top is None:
                    root, root_spot = frame.data, frame.spot
                else:
                    self._attach(top, frame.data, frame.spot, height, event)
            elif kind is alias_event:
                self.values = values
                value, aliased, height = self._alias(event, len(stack))
                values = self.values
                if top is None:
                    root, root_spot = value, aliased
                else:
                    self._attach(top, value, aliased, height, event)
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise self.error(
                        event.start_mark,
                        f"the {self.what} file holds more than one YAML document",
                        "keep one document per file: remove the second '---' and what follows",
                    )
        if root is merge:
            root = "<<"
        if root is no_key or root is None:
            raise ProfileError(
                f"the {self.what} is empty",
                where=f"{self.path}:1:1",
                fix="start from `spike profiles show smoke`"
                if self.what == "profile"
                else f"write the {self.what}; {self.fix}",
            )
        return root, Positions(root_spot)

    def _alias(self, event: Any, depth: int) -> tuple[Any, _Spot | Position, int]:
        anchored = self.anchors.get(event.anchor)
        if anchored is None:
            raise self.error(
                event.start_mark,
                f"alias *{event.anchor} has no anchor &{event.anchor} before it",
                f"define &{event.anchor} on a value above this line, or write the value here",
            )
        value, spot, size, height = anchored
        self.alias_values += size
        if self.alias_values > MAX_ALIAS_VALUES:
            raise self.error(
                event.start_mark,
                f"YAML aliases expand to more than {MAX_ALIAS_VALUES:,} values here (*{event.anchor} "
                f"alone holds {size:,}); refused before expanding them",
                "write the values out, or use fewer nested aliases",
            )
        if depth + height > MAX_DEPTH:
            raise self._too_deep(event)
        self.values += size
        if self.values > MAX_VALUES:
            raise self._too_many(event)
        return value, spot, height

    def _attach(self, top: _Frame, value: Any, spot: _Spot | Position, height: int, event: Any) -> None:
        """Add a list, a mapping or an alias to the enclosing list or mapping."""
        top.height = max(top.height, height)
        if not top.is_map:
            top.data.append(value)
            top.kids.append(spot)
        elif top.key is _NO_KEY:
            if isinstance(spot, _Spot):  # an alias to a list or mapping
                raise self.error(
                    event.start_mark,
                    "a key is a list or mapping; keys must be plain names",
                    "write the key as a name (e.g. `path:`)",
                )
            top.key = value
            top.key_pos = spot
        else:
            key = top.key
            top.key = _NO_KEY
            self._put(top, key, value, spot, event)

    def _put(self, top: _Frame, key: Any, value: Any, spot: _Spot | Position, event: Any) -> None:
        if key is _MERGE:
            self._merge(top, value, spot, event)
            return
        if value is _MERGE:
            value = "<<"
        merged = top.merged or ()
        if key in top.data and key not in merged:
            first = top.kids[key][0][0]
            raise ProfileError(
                f"duplicate key {key!r} (first given at line {first})",
                where=f"{self.path}:{top.key_pos[0]}:{top.key_pos[1]}",
                fix="give each key once",
            )
        if top.merged is not None:
            top.merged.discard(key)
        top.data[key] = value
        top.kids[key] = (top.key_pos, spot)

    def _merge(self, top: _Frame, value: Any, spot: _Spot | Position, event: Any) -> None:
        """`<<: *defaults` (or a list of them): their keys, unless the mapping gives them itself."""
        sources = [(value, spot)]
        if isinstance(value, list) and isinstance(spot, _Spot):
            sources = list(zip(value, spot.kids, strict=True))
        if top.merged is None:
            top.merged = set()
        for source, source_spot in reversed(sources):  # the first source wins, so it is applied last
            if not isinstance(source, dict) or not isinstance(source_spot, _Spot):
                raise self.error(
                    event.start_mark,
                    "`<<` merges mappings only",
                    "give `<<: *anchor` where &anchor is on a mapping",
                )
            kids: Any = source_spot.kids
            for key, item in source.items():
                if key in top.data and key not in top.merged:
                    continue  # given in the mapping itself
                top.data[key] = item
                top.kids[key] = kids[key]
                top.merged.add(key)

    def _too_many(self, event: Any) -> ProfileError:
        return self.error(
            event.start_mark,
            f"the {self.what} holds more than {MAX_VALUES:,} values",
            "keep a long replay curve in a curve_file CSV, or split the file",
        )

    def _too_deep(self, event: Any) -> ProfileError:
        return self.error(
            event.start_mark,
            f"the YAML is nested more than {MAX_DEPTH} levels deep",
            "flatten the structure; a profile needs only a few levels",
        )

    def _container_key(self, event: Any) -> ProfileError:
        what = "a mapping" if isinstance(event, yaml.MappingStartEvent) else "a list"
        return self.error(
            event.start_mark,
            f"a key is {what}; keys must be plain names",
            "write the key as a name (e.g. `path:`); a key in [] or {} or after '?' is a list or mapping",
        )

    def _check_tag(self, event: Any, implied: str) -> None:
        tag = event.tag
        if tag is None or tag == "!" or tag == implied:
            return
        shown = "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag
        raise self.error(
            event.start_mark,
            f"YAML tag {shown} is not allowed; a {self.what} holds only plain values (text, numbers, lists, mappings)",
            f"remove {shown} (quote the value if it must stay text)",
        )

    def _plain(self, event: Any) -> Any:
        """An unquoted value, resolved as YAML 1.1 does (ints, floats, bools, null, dates)."""
        value: str = event.value
        resolved = _STR
        for candidate, regexp in _RESOLVERS.get(value[:1], ()):
            if regexp.match(value):
                resolved = candidate
                break
        if resolved == _CORE + "merge":
            result: Any = _MERGE
        elif resolved not in _SCALAR_TAGS or resolved == _STR:
            result = value  # `=` (YAML 1.1's value key) is text here
        else:
            result = self._construct(resolved, event)
        if len(self.cache) < 10_000:
            self.cache[value] = result
        return result

    def _tagged(self, event: Any) -> Any:
        if event.tag not in _SCALAR_TAGS:
            self._check_tag(event, _STR)
        return event.value if event.tag == _STR else self._construct(event.tag, event)

    def _construct(self, tag: str, event: Any) -> Any:
        value: str = event.value
        if tag == _CORE + "int" and value.isdigit() and (value[0] != "0" or value == "0"):
            return int(value)
        if tag == _CORE + "float" and "_" not in value and ":" not in value:
            try:
                return float(value)
            except ValueError:
                pass  # .inf, .nan: PyYAML's constructor knows them
        node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark)
        if tag == _CORE + "float" and value.lower().lstrip("+-") in (".inf", ".nan"):
            # refused here, at its position, rather than once per value by validation later
            raise self.error(
                event.start_mark,
                f"{value} is not a finite number",
                "give a number (rates, durations and curve points are finite)",
            )
        try:
            return self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            raise self.error(
                event.start_mark,
                f"{value!r} is not a valid !!{tag[len(_CORE) :]} ({exc})",
                "correct the value, or quote it to make it text",
            ) from None


def parse_yaml(
    text: str, path: Path, *, what: str = "profile", fix: str = PROFILE_FIX
) -> tuple[Any, Positions]:
    """A YAML document as plain values (dicts, lists, str, int, float, bool, None) and their positions."""
    reader = _Reader(path, what, fix)
    try:
        return reader.read(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or str(exc)
        raise ProfileError(f"not valid YAML: {problem}", where=where, fix=_yaml_fix(problem)) from None
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        raise ProfileError(
            f"character {exc.character!r} is not allowed in YAML ({exc.reason})",
            where=f"{path}:{line}:{column}",
            fix="remove the control character (tabs and newlines are fine)",
        ) from None
    except yaml.YAMLError as exc:  # pragma: no cover - libyaml's errors carry a mark
        raise ProfileError(
            f"not valid YAML: {exc}", where=str(path), fix="check indentation and quoting"
        ) from None


def _yaml_fix(problem: str) -> str:
    if "tab" in problem:
        return "indent with spaces, not tabs"
    if "maximum nesting depth" in problem:
        return "flatten the structure; a profile needs only a few levels"
    return "check indentation and quoting (a value holding ': ' or starting with '{', '[', '*', '&', '!' needs quotes)"


# -- validation errors -------------------------------------------------------------------------


def _translate(
    exc: ValidationError,
    path: Path,
    positions: Positions,
    *,
    model: type[BaseModel] = Profile,
    what: str = "profile",
    fix: str = PROFILE_FIX,
) -> ProfileError:
    """Pydantic's errors as `file:line:column: field: problem` lines, first in the file first.

    Every error is placed, but only the first `MAX_LISTED_PROBLEMS` are worded: a 5 MB file can
    hold hundreds of thousands of errors.
    """
    errors = exc.errors(include_url=False)
    prefixes: set[tuple[Any, ...]] | None = None
    placed: list[tuple[int, int, int, Loc, tuple[Any, ...]]] = []
    for index, error in enumerate(errors):
        raw_loc = tuple(error["loc"])
        if error["type"] == "too_short":
            if prefixes is None:
                prefixes = {tuple(e["loc"][:cut]) for e in errors for cut in range(len(e["loc"]))}
            if raw_loc in prefixes:
                continue  # a consequence of an invalid item, reported on its own
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            raw_loc = (*raw_loc, *cause.loc)
        loc = _data_loc(raw_loc)
        line, col = positions.key(loc) if error["type"] == "extra_forbidden" else positions.value(loc)
        placed.append((line, col, index, loc, raw_loc))
    first = heapq.nsmallest(MAX_LISTED_PROBLEMS, placed)
    shown = []
    for line, col, index, loc, raw_loc in first:
        error = errors[index]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            valid = _valid_keys(raw_loc[:-1], model)
            message = f"unknown key {loc[-1]!r}" + (f"; valid keys: {', '.join(valid)}" if valid else "")
        elif error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] == "union_tag_invalid":
            message = "shape kind must be one of 'viral', 'steps', 'replay'"
        elif error["type"] == "union_tag_not_found":
            message = "shape needs a kind: one of 'viral', 'steps', 'replay'"
        elif error["type"] == "finite_number":
            message = "must be a finite number (.inf and .nan are not)"
        shown.append(f"{path}:{line}:{col}: {_dotted(loc) or '(top level)'}: {message}")
    if len(placed) > MAX_LISTED_PROBLEMS:
        shown.append(f"... and {len(placed) - MAX_LISTED_PROBLEMS:,} more")
    return ProfileError(
        f"invalid {what} ({len(placed)} problem{'s' if len(placed) > 1 else ''}):\n" + "\n".join(shown),
        where=f"{path}:{first[0][0]}:{first[0][1]}",
        fix=fix,
    )


def _data_loc(loc: tuple[Any, ...]) -> Loc:
    # Pydantic adds the discriminator tag ("viral"/"steps") to the location of
    # tagged-union members; the YAML has no such level.
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "shape" and part in ("viral", "steps", "replay"):
            continue
        out.append(part)
    return tuple(out)


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _valid_keys(loc: Loc, root: type[BaseModel] = Profile) -> list[str]:
    """The field names allowed at `loc`, found by walking the model types."""
    model: Any = root
    for part in loc:
        model = _step_into(model, part)
        if model is None:
            return []
    if _is_model(model):
        return list(model.model_fields)
    return []


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)


def _step_into(annotation: Any, part: str | int) -> Any:
    for candidate in _unwrap(annotation):
        if isinstance(part, str) and _is_model(candidate) and "kind" in candidate.model_fields:
            kinds = get_args(candidate.model_fields["kind"].annotation)
            if part in kinds:
                return candidate  # the tag pydantic puts in the location of a union member
        if isinstance(part, int):
            args = get_args(candidate)
            if get_origin(candidate) in (tuple, list) and args:
                return args[0]
        elif _is_model(candidate) and part in candidate.model_fields:
            return candidate.model_fields[part].annotation
    return None


def _unwrap(annotation: Any) -> Iterator[Any]:
    origin = get_origin(annotation)
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        for arg in get_args(annotation):
            yield from _unwrap(arg)
    elif str(origin).endswith("Annotated"):
        yield from _unwrap(get_args(annotation)[0])
    else:
        yield annotation


# -- files a profile names ---------------------------------------------------------------------


def _with_replay_curve(profile: Profile, path: Path, positions: Positions) -> Profile:
    """A replay's `curve_file` read into its points (relative to the profile), checked line by line."""
    shape = profile.shape
    if not isinstance(shape, ReplayShape) or shape.curve_file is None:
        return profile
    where = _where(path, positions.value(("shape", "curve_file")))
    file = (path.parent / shape.curve_file).resolve()
    fix = "give the CSV `spike replay import` wrote (header t_s,rate_per_s), relative to the profile"
    points: list[tuple[float, float]] = []
    lines: list[int] = []
    try:
        text = read_text_file(file, what="replay curve", fix=fix, limit=1 << 30)
    except ProfileError as exc:
        if exc.where and exc.where.startswith(f"{file}:"):
            raise  # a byte that is not UTF-8: its own line and column
        raise ProfileError(f"{exc.message}: {file}", where=where, fix=fix) from None
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None or [h.strip() for h in header[:2]] != ["t_s", "rate_per_s"]:
        raise ProfileError(f"{file}:1: expected the header t_s,rate_per_s", where=where, fix=fix)
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        try:
            points.append((float(row[0]), float(row[1])))
        except (ValueError, IndexError):
            raise ProfileError(
                f"{file}:{number}: not two numbers: {','.join(row)!r}", where=where, fix=fix
            ) from None
        lines.append(number)
    try:
        check_curve_points(tuple(points))
    except CurveError as exc:
        line = lines[exc.index] if exc.index < len(lines) else 1
        raise ProfileError(f"{file}:{line}: {exc}", where=where, fix=fix) from None
    return profile.model_copy(update={"shape": shape.model_copy(update={"points": tuple(points)})})


def _with_feeders(profile: Profile, path: Path, positions: Positions) -> LoadedProfile:
    """Resolve feeder files, read their CSV headers, check every placeholder has a column."""
    columns: dict[str, tuple[str, ...]] = {}
    feeders = []
    example = "a header row naming the columns and one row per user, e.g. `post_id` then `1`, `2`, ..."
    for i, feeder in enumerate(profile.scenario.feeders):
        where = _where(path, positions.value(("scenario", "feeders", i, "file")))
        file = (path.parent / feeder.file).resolve()
        try:
            if file.is_dir():
                raise ProfileError(
                    f"feeder {feeder.name!r}: {file} is a directory, not a CSV file",
                    where=where,
                    fix="give a CSV path relative to the profile file",
                )
            check_utf8_file(file)
            with file.open(newline="", encoding="utf-8") as handle:
                rows = csv.reader(handle)
                header = next(rows, None)
                first_row = next(rows, None)
        except OSError as exc:
            raise ProfileError(
                f"feeder {feeder.name!r}: cannot read {file}: {exc.strerror}",
                where=where,
                fix="give a CSV path relative to the profile file",
            ) from None
        except csv.Error as exc:
            raise ProfileError(
                f"feeder {feeder.name!r}: {file} is not a valid CSV file: {exc}", where=where, fix=example
            ) from None
        if not header or not any(h.strip() for h in header):
            raise ProfileError(
                f"feeder {feeder.name!r}: {file} is empty (no header row)", where=where, fix=f"give {example}"
            )
        if first_row is None:
            raise ProfileError(
                f"feeder {feeder.name!r}: {file} needs a header row and at least one data row",
                where=where,
                fix=f"add data rows under the header; a feeder holds {example}",
            )
        columns[feeder.name] = tuple(h.strip() for h in header)
        feeders.append(feeder.model_copy(update={"file": str(file)}))
    known = {c for cols in columns.values() for c in cols}
    for i, request in enumerate(profile.scenario.requests):
        missing = sorted(request.placeholders() - known)
        if missing:
            line, col = positions.value(("scenario", "requests", i, "path"))
            raise ProfileError(
                f"request {request.name!r} uses placeholder(s) {', '.join('{' + m + '}' for m in missing)} "
                f"that no feeder provides (feeder columns: {', '.join(sorted(known)) or 'none'})",
                where=f"{path}:{line}:{col}",
                fix="add a feeder CSV with that column, or remove the placeholder",
            )
    scenario = profile.scenario.model_copy(update={"feeders": tuple(feeders)})
    return LoadedProfile(profile.model_copy(update={"scenario": scenario}), path, columns)
