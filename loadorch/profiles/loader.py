"""YAML profiles to validated models, with file:line:column in every error.

The YAML is composed with the safe loader and turned into Python values by
hand, so that duplicate keys are refused and every value keeps its position.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from loadorch.errors import ProfileError
from loadorch.profiles.model import Profile, ReplayShape, check_curve_points

BUILTIN_DIR = Path(__file__).parent / "builtin"

Position = tuple[int, int]
Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class LoadedProfile:
    """A profile plus where it came from and what its feeders hold."""

    profile: Profile
    source: Path
    feeder_columns: dict[str, tuple[str, ...]]


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve_profile_path(name_or_path: str) -> Path:
    """A built-in profile name or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not candidate.is_file():
            raise ProfileError(
                f"profile file {name_or_path} does not exist",
                fix=f"give an existing YAML file or a built-in name ({', '.join(builtin_names())})",
            )
        return candidate
    builtin = BUILTIN_DIR / f"{name_or_path}.yaml"
    if not builtin.is_file():
        raise ProfileError(
            f"unknown profile {name_or_path!r}",
            fix=f"use a built-in profile ({', '.join(builtin_names())}) or a path to a YAML file",
        )
    return builtin


def load_profile(name_or_path: str | Path) -> LoadedProfile:
    path = resolve_profile_path(str(name_or_path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read profile: {exc}", where=str(path)) from exc
    return parse_profile(text, path)


def parse_profile(text: str, path: Path) -> LoadedProfile:
    """Validate profile YAML; `path` is used for messages and relative feeder files."""
    data, positions = _compose(text, path)
    if not isinstance(data, dict):
        raise ProfileError("a profile is a YAML mapping (name:, target:, shape:, ...)", where=f"{path}:1:1")
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, path, positions) from None
    return _with_feeders(_with_replay_curve(profile, path, positions), path, positions)


def parse_yaml_model(text: str, path: Path, model: type[M], *, what: str, fix: str) -> M:
    """Any of spike's YAML files (an SSH inventory, ...) with the profile's file:line:column errors."""
    data, positions = _compose(text, path)
    if not isinstance(data, dict):
        raise ProfileError(f"{what} is a YAML mapping", where=f"{path}:1:1", fix=fix)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, path, positions, model=model, what=what, fix=fix) from None


def _compose(text: str, path: Path) -> tuple[Any, dict[Loc, Position]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(
            f"not valid YAML: {problem}", where=where, fix="check indentation and quoting"
        ) from None
    if node is None:
        raise ProfileError("the profile is empty", where=f"{path}:1:1")
    positions: dict[Loc, Position] = {}
    constructor = yaml.SafeLoader("")
    return _build(node, (), positions, constructor, path), positions


def _build(
    node: yaml.Node, loc: Loc, positions: dict[Loc, Position], ctor: yaml.SafeLoader, path: Path
) -> Any:
    positions[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = ctor.construct_object(key_node)
            if key in result:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                first = positions.get((*loc, key), (0, 0))
                raise ProfileError(
                    f"duplicate key {key!r} (first given at line {first[0]})",
                    where=f"{path}:{line}:{col}",
                    fix="give each key once",
                )
            result[key] = _build(value_node, (*loc, key), positions, ctor, path)
            if not isinstance(value_node, yaml.ScalarNode):
                # a nested block starts on the next line; point at its key instead
                positions[(*loc, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*loc, i), positions, ctor, path) for i, item in enumerate(node.value)]
    return ctor.construct_object(node)


def _translate(
    exc: ValidationError,
    path: Path,
    positions: dict[Loc, Position],
    *,
    model: type[BaseModel] = Profile,
    what: str = "profile",
    fix: str = "correct the values named above; `spike profiles show smoke` prints a valid example",
) -> ProfileError:
    problems = []
    errors = exc.errors(include_url=False)
    for error in errors:
        raw_loc = tuple(error["loc"])
        if error["type"] == "too_short" and any(
            len(e["loc"]) > len(raw_loc) and tuple(e["loc"][: len(raw_loc)]) == raw_loc for e in errors
        ):
            continue  # a consequence of an invalid item, reported on its own
        loc = _data_loc(raw_loc)
        line, col = _nearest_position(loc, positions)
        dotted = _dotted(loc) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            valid = _valid_keys(raw_loc[:-1], model)
            message = f"unknown key {loc[-1]!r}" + (f"; valid keys: {', '.join(valid)}" if valid else "")
        elif error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] == "union_tag_invalid":
            message = "shape kind must be one of 'viral', 'steps', 'replay'"
        elif error["type"] == "union_tag_not_found":
            message = "shape needs a kind: one of 'viral', 'steps', 'replay'"
        problems.append((line, col, f"{path}:{line}:{col}: {dotted}: {message}"))
    problems.sort()
    first_line, first_col, _ = problems[0]
    detail = "\n".join(p[2] for p in problems)
    return ProfileError(
        f"invalid {what} ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n{detail}",
        where=f"{path}:{first_line}:{first_col}",
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


def _nearest_position(loc: Loc, positions: dict[Loc, Position]) -> Position:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in positions:
            return positions[loc[:cut]]
    return (1, 1)


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


def _with_replay_curve(profile: Profile, path: Path, positions: dict[Loc, Position]) -> Profile:
    """A replay's `curve_file` read into its points (relative to the profile), checked line by line."""
    shape = profile.shape
    if not isinstance(shape, ReplayShape) or shape.curve_file is None:
        return profile
    line, col = _nearest_position(("shape", "curve_file"), positions)
    file = (path.parent / shape.curve_file).resolve()
    fix = "give the CSV `spike replay import` wrote (header t_s,rate_per_s), relative to the profile"
    points: list[tuple[float, float]] = []
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            rows = csv.reader(handle)
            header = next(rows, None)
            if header is None or [h.strip() for h in header[:2]] != ["t_s", "rate_per_s"]:
                raise ProfileError(
                    f"{file}:1: expected the header t_s,rate_per_s", where=f"{path}:{line}:{col}", fix=fix
                )
            for number, row in enumerate(rows, start=2):
                if not row:
                    continue
                try:
                    points.append((float(row[0]), float(row[1])))
                except (ValueError, IndexError):
                    raise ProfileError(
                        f"{file}:{number}: not two numbers: {','.join(row)!r}",
                        where=f"{path}:{line}:{col}",
                        fix=fix,
                    ) from None
    except OSError as exc:
        raise ProfileError(
            f"cannot read the replay curve {file}: {exc.strerror}", where=f"{path}:{line}:{col}", fix=fix
        ) from None
    try:
        check_curve_points(tuple(points))
    except ValueError as exc:
        raise ProfileError(f"{file}: {exc}", where=f"{path}:{line}:{col}", fix=fix) from None
    return profile.model_copy(update={"shape": shape.model_copy(update={"points": tuple(points)})})


def _with_feeders(profile: Profile, path: Path, positions: dict[Loc, Position]) -> LoadedProfile:
    """Resolve feeder files, read their CSV headers, check every placeholder has a column."""
    columns: dict[str, tuple[str, ...]] = {}
    feeders = []
    for i, feeder in enumerate(profile.scenario.feeders):
        line, col = _nearest_position(("scenario", "feeders", i, "file"), positions)
        where = f"{path}:{line}:{col}"
        file = (path.parent / feeder.file).resolve()
        try:
            with file.open(newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), None)
                first_row = next(csv.reader(handle), None)
        except OSError as exc:
            raise ProfileError(
                f"feeder {feeder.name!r}: cannot read {file}: {exc.strerror}",
                where=where,
                fix="give a CSV path relative to the profile file",
            ) from None
        if not header or first_row is None:
            raise ProfileError(
                f"feeder {feeder.name!r}: {file} needs a header row and at least one data row",
                where=where,
            )
        columns[feeder.name] = tuple(h.strip() for h in header)
        feeders.append(feeder.model_copy(update={"file": str(file)}))
    known = {c for cols in columns.values() for c in cols}
    for i, request in enumerate(profile.scenario.requests):
        missing = sorted(request.placeholders() - known)
        if missing:
            line, col = _nearest_position(("scenario", "requests", i, "path"), positions)
            raise ProfileError(
                f"request {request.name!r} uses placeholder(s) {', '.join('{' + m + '}' for m in missing)} "
                f"that no feeder provides (feeder columns: {', '.join(sorted(known)) or 'none'})",
                where=f"{path}:{line}:{col}",
                fix="add a feeder CSV with that column, or remove the placeholder",
            )
    scenario = profile.scenario.model_copy(update={"feeders": tuple(feeders)})
    return LoadedProfile(profile.model_copy(update={"scenario": scenario}), path, columns)
