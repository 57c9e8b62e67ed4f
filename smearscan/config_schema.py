"""Schema check of a configuration (TOML file or overrides) with pydantic, strict types.

The dataclasses of :mod:`smearscan.config` are the schema: pydantic validates a
nested dict against their type hints in strict mode, so a wrong type is refused
instead of being converted (``"false"`` is not a boolean, ``"*.tif"`` is not a
list of patterns, ``5`` is not a path), ``nan`` and ``inf`` are not numbers,
and unknown sections or keys are errors. The ranges are then checked by the
dataclasses' own ``__post_init__``. Every problem becomes one
:class:`~smearscan.errors.ConfigError` naming each key, the expected type and
the value found.

Rules (a TOML view of the type hints):

* ``bool``: ``true`` or ``false`` only;
* ``int``: an integer (``batch.max_pixels`` also takes a whole float such as ``2.5e9``);
* ``float``: a finite number (an integer is fine);
* ``str``: a quoted string (a TOML date or number is not one);
* ``tuple``: an array of those (never a single string);
* a tuple of dataclasses (``scale.cameras``): an array of tables
  (``[[scale.cameras]]``), each checked like a section; errors name the item
  (``[scale] cameras[0].pixel_size_um``);
* a key left out keeps its default (TOML has no null).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from smearscan.config import CameraProfileError, ProcessConfig
from smearscan.errors import ConfigError

#: Integer keys that also take a float with a whole value (big numbers such as ``2.5e9``).
_WHOLE_NUMBER_KEYS = {("batch", "max_pixels")}

_TOML_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "float",
    str: "string",
    list: "array",
    tuple: "array",
    dict: "table",
}


class _Schema(BaseModel):
    """Wrapper whose strict config the nested (stdlib) dataclasses inherit."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    config: ProcessConfig


def validate_config(data: dict[str, Any]) -> ProcessConfig:
    """Build a :class:`ProcessConfig` from a complete nested dict, with strict types.

    Args:
        data: ``{"model": str, "tiling": {...}, ...}`` (e.g. defaults updated from TOML).

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: Unknown section or key, a value of the wrong type or out of range;
            the message names every offending key, what was expected and the value.
    """
    _check_json_values(data, ())
    prepared = _whole_numbers(data)
    try:
        text = json.dumps({"config": prepared}, allow_nan=True)
        return _Schema.model_validate_json(text).config
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors())) from None


def _check_json_values(value: Any, loc: tuple[str | int, ...]) -> None:
    """Refuse TOML dates and times (no field takes one) before they reach JSON."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json_values(item, (*loc, str(key)))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json_values(item, (*loc, i))
    elif isinstance(value, dt.date | dt.time):
        raise ConfigError(
            f"{_where(loc)}: expected {_expected(loc)}, got the TOML date/time {value} "
            "(quote it to give a string)"
        )
    elif value is not None and not isinstance(value, str | int | float):
        raise ConfigError(f"{_where(loc)}: unsupported value {value!r}")


def _whole_numbers(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with whole floats of :data:`_WHOLE_NUMBER_KEYS` made ints."""
    out = dict(data)
    for section, key in _WHOLE_NUMBER_KEYS:
        table = out.get(section)
        if isinstance(table, dict):
            value = table.get(key)
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                out[section] = {**table, key: int(value)}
    return out


def _where(loc: tuple[str | int, ...]) -> str:
    """``[batch] patterns`` (items: ``[batch] patterns[0]``, keys of a table in an
    array: ``[scale] cameras[0].name``) or ``model``."""
    if not loc:
        return "configuration"
    if len(loc) == 1:
        return str(loc[0])
    key = str(loc[1]) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[2:])
    return f"[{loc[0]}] {key}"


def _describe(error: Mapping[str, Any]) -> str:
    """One readable line for one pydantic error (an item of ``ValidationError.errors()``)."""
    loc = tuple(error["loc"])[1:]  # without the wrapper's "config"
    value = error["input"]
    if error["type"] in ("missing", "missing_argument") and _in_table(loc):
        return f"{_where(loc[:-1])}: {loc[-1]!r} is required ({_expected(loc)})"
    if error["type"] in ("missing", "too_short", "too_long"):  # a list of the wrong length
        while loc and isinstance(loc[-1], int):
            loc = loc[:-1]
    if error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        return _unknown(loc)
    cause = (error.get("ctx") or {}).get("error")
    if error["type"] == "value_error" and isinstance(cause, CameraProfileError):
        return f"{_where(loc)}{cause.suffix}: {cause.reason}"
    if error["type"] in ("dataclass_type", "dataclass_exact_type") and len(loc) == 1:
        return f"configuration section [{loc[0]}] must be a table, got {_shown(value)}"
    expected = _expected(loc)
    if error["type"] == "literal_error":
        expected = error["msg"].removeprefix("Input should be ")
    elif error["type"] == "finite_number":
        expected = "a finite number"
    elif error["type"] == "int_type" and loc[:2] in _WHOLE_NUMBER_KEYS:
        expected = "a whole number"
    return f"{_where(loc)}: expected {expected}, got {_shown(value)}"


def _in_table(loc: tuple[str | int, ...]) -> bool:
    """Whether ``loc`` is a key of a table inside an array (``[scale] cameras[0].name``)."""
    return len(loc) > 2 and isinstance(loc[-1], str) and isinstance(loc[-2], int)


def _unknown(loc: tuple[str | int, ...]) -> str:
    if len(loc) == 1:
        known = ["model", *(f.name for f in _sections())]
        return f"unknown configuration section {loc[0]!r}; known: {', '.join(known)}"
    table = _hint_at(loc[:-1])
    known = (
        sorted(_hints(table)) if isinstance(table, type) and dataclasses.is_dataclass(table) else []
    )
    where = f"[{loc[0]}]" if len(loc) == 2 else _where(loc[:-1])
    return f"unknown key {loc[-1]!r} in {where}; known: {', '.join(known)}"


def _shown(value: Any) -> str:
    """``'*.tif' (string)``: the value as TOML shows it and its TOML type."""
    kind = _TOML_TYPES.get(type(value), type(value).__name__)
    if isinstance(value, bool):
        return f"{str(value).lower()} ({kind})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} ({kind})"
    return f"{value!r} ({kind})"


def _sections() -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(ProcessConfig) if f.name != "model")


@cache
def _hints(cls: Any) -> dict[str, Any]:
    """Resolved type hints of a config dataclass (its annotations are strings)."""
    return typing.get_type_hints(cls)


def _expected(loc: tuple[str | int, ...]) -> str:
    """What the field at ``loc`` takes, in TOML words (``a list of strings``)."""
    hint = _hint_at(loc)
    return "a valid value" if hint is None else _type_words(hint)


def _hint_at(loc: tuple[str | int, ...]) -> Any:
    """The type hint of the field at ``loc`` (an index: the tuple's item type), or None."""
    hint: Any = ProcessConfig
    for part in loc:
        if isinstance(part, int):
            args = [a for a in get_args(_unwrap(hint)) if a is not Ellipsis]
            if not args:
                return None
            hint = args[min(part, len(args) - 1)]
            continue
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return None
        hint = _hints(hint).get(part)
        if hint is None:
            return None
    return hint


def _unwrap(hint: Any) -> Any:
    """``X | None`` -> ``X`` (TOML cannot say None: leave the key out)."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _type_words(hint: Any) -> str:
    hint = _unwrap(hint)
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in words:
        return words[hint]
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if get_origin(hint) is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_plural(args[0])}"
    if dataclasses.is_dataclass(hint):
        return "a table"
    return "a valid value"


def _plural(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "tables"
    return {str: "strings", int: "integers", float: "numbers", bool: "booleans"}.get(hint, "values")
