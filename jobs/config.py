"""Job configs: one frozen dataclass per job, loaded from TOML.

Unknown keys and wrong types are errors naming the file and the key, so a
typo never runs a job with a silent default.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from curation.errors import InputError, not_utf8

__all__ = ["load_config", "config_from_dict"]

T = TypeVar("T")


def _accepts(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:  # a TOML table: every key and value of the declared types
        key_t, value_t = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(_accepts(key_t, k) and _accepts(value_t, v) for k, v in value.items())
    if tp is Any:
        return True
    return isinstance(value, tp)


def config_from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    for key, value in data.items():
        if not _accepts(hints[key], value):
            raise InputError(f"{where}: key {key!r} has {type(value).__name__} value {value!r}, expected {hints[key]}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from exc


def load_config(path: Path | str, cls: type[T], overrides: dict[str, Any] | None = None) -> T:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: job config not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, 0) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from exc
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(cls, data, str(path))
