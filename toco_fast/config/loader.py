"""Filling the typed configuration (``toco_fast.config.schema``) from a YAML preset or file plus overrides.

Overrides use dotted paths::

    cfg = load_config("voc_vit_b", overrides=["train.max_iters=100", "loss.w_ptc=0"])

Unknown keys and values of the wrong type raise ``ConfigError`` naming the key (with the closest valid names).
The shipped presets live in ``toco_fast/config/presets/`` (installed with the package).
"""
import copy
import dataclasses
import difflib
import os
import typing
from typing import Any, Dict, Iterable, List, Optional, Tuple

import yaml

from toco_fast.config.schema import Config, ConfigError, validate
from toco_fast.io.atomic import atomic_write_text

PRESETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")


def to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for YAML and checkpoints."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(data: Dict[str, Any], cls: type = Config) -> Any:
    """Build ``cls`` from a (possibly partial) nested dict; missing keys keep their defaults."""
    cfg = cls()
    _update(cfg, data, prefix="")
    return cfg


def _update(obj: Any, data: Any, prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(_unknown_key_message(path, key, names, prefix))
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _update(current, value, prefix=f"{path}.")
        else:
            setattr(obj, key, _coerce(path, value, hints[key]))


def _unknown_key_message(path: str, key: str, names: List[str], prefix: str) -> str:
    close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
    valid = ", ".join(prefix + n for n in names)
    return f"unknown config key {path!r}{hint} (valid keys here: {valid})"


def _coerce(path: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:  # Optional[X] or a choice of types: the first that accepts the value
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(path, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(" or ".join(errors))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{path}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_coerce(f"{path}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {annotation!r}")


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Apply ``"a.b=value"`` overrides in order; values are parsed as YAML (``1e-4``, ``[1, 0.5]``, ``null``).

    A key that reaches inside a mapping field (``model.backbone.depth=2``) changes that one entry of the mapping;
    ``model.backbone={...}`` replaces the whole field.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.max_iters=100")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(exc)})") from None
        field_key, field_value = _into_mapping(cfg, key, value)
        try:
            _update(cfg, _nest(field_key, field_value), prefix="")
        except ConfigError:
            # A string field keeps the override's text even when YAML reads it as a number or bool ("run_dir=007").
            if field_key == key and not isinstance(value, str) and _is_str_field(cfg, key):
                _update(cfg, _nest(key, raw.strip()), prefix="")
            else:
                raise
    validate(cfg)
    return cfg


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem and where (PyYAML's own message spans several lines)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def _into_mapping(cfg: Config, key: str, value: Any) -> Tuple[str, Any]:
    """The field an override sets and its new value: ``(key, value)`` itself, unless ``key`` reaches inside a
    mapping field (``model.backbone.depth``): then that field's key and a copy of its mapping with the entry set."""
    parts = key.split(".")
    obj: Any = cfg
    for i, part in enumerate(parts[:-1]):
        current = getattr(obj, part, None) if part in _field_names(obj) else None
        if dataclasses.is_dataclass(current):
            obj = current
            continue
        if current is None:
            return key, value  # an unknown key (or a None field): _update names it
        field_key = ".".join(parts[:i + 1])
        if not isinstance(current, dict):
            kind = "a name" if isinstance(current, str) else "a value"
            raise ConfigError(f"override {key!r}: {field_key} is {kind} ({current!r}), not a mapping, so it has no "
                              f"entry {'.'.join(parts[i + 1:])!r}; set the whole value instead: "
                              f"--set {field_key}=VALUE")
        return field_key, _with_entry(current, parts[i + 1:], value, key)
    return key, value


def _with_entry(mapping: Dict[str, Any], path: List[str], value: Any, key: str) -> Dict[str, Any]:
    """A deep copy of ``mapping`` with ``value`` at the nested ``path`` (missing levels created)."""
    merged = copy.deepcopy(mapping)
    entry = merged
    for sub in path[:-1]:
        entry = entry.setdefault(sub, {})
        if not isinstance(entry, dict):
            raise ConfigError(f"override {key!r}: {sub!r} holds {entry!r}, not a mapping")
    entry[path[-1]] = value
    return merged


def _field_names(obj: Any) -> List[str]:
    return [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []


def _nest(key: str, value: Any) -> Dict[str, Any]:
    nested: Any = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def _is_str_field(cfg: Config, key: str) -> bool:
    obj: Any = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        obj = getattr(obj, part, None)
        if not dataclasses.is_dataclass(obj):
            return False
    hints = typing.get_type_hints(type(obj))
    annotation = hints.get(parts[-1])
    return annotation is str or annotation == Optional[str]


def config_path(name_or_path: str) -> str:
    """Resolve a config given as a file path or as a preset name (``voc_vit_b`` or ``voc_vit_b.yaml``)."""
    if os.path.isfile(name_or_path):
        return name_or_path
    file_name = name_or_path if name_or_path.endswith((".yaml", ".yml")) else f"{name_or_path}.yaml"
    candidate = os.path.join(PRESETS_DIR, file_name)
    if os.path.isfile(candidate):
        return candidate
    raise ConfigError(f"config {name_or_path!r}: not a file and not a shipped config "
                      f"(available: {', '.join(available_configs()) or 'none'})")


def available_configs() -> List[str]:
    """Names of the shipped YAML presets."""
    return sorted(os.path.splitext(f)[0] for f in os.listdir(PRESETS_DIR) if f.endswith((".yaml", ".yml")))


def load_config(name_or_path: str, overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config (shipped name or path) over the defaults, then apply ``overrides``."""
    path = config_path(name_or_path)
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc}); expected UTF-8 YAML text") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    data.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    try:
        cfg = from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return apply_overrides(cfg, overrides)


def save_config(cfg: Config, path: str) -> None:
    """Write the effective config as YAML (readable back with ``load_config``), atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None))
