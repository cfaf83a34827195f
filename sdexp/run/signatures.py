"""Config values against the signatures that take them: the one place a config's types are read.

The types of a run's options are declared once, where the values are used: the signature of each
``_target_`` (the model, the data module, the mode, the optimizer, Lightning's ``Trainer``) and
the dataclasses of the options that have no class of their own (``sdexp.run.config.TopLevel``,
``Speed``, ``sdexp.recipe.Recipe``). ``check_values`` reads them and fails with one line naming
the option and what it takes (``ConfigError``), where Hydra's structured configs would declare
the types a second time and fail inside ``@hydra.main`` with a traceback-like message.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import types
import typing
from dataclasses import fields
from typing import Any, Literal, Union

from sdexp.errors import ConfigError


def conforms(value: Any, annotation: Any) -> bool:
    """Whether a config value (after resolution: None, bool, int, float, str, list, dict) can
    be passed where ``annotation`` is declared; True where a YAML value cannot be judged."""
    if annotation in (Any, inspect.Parameter.empty):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    sequence = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
    if origin in sequence or annotation in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        item = args[0] if args and args[-1] is not Ellipsis or len(args) == 2 else Any
        return all(conforms(v, item) for v in value)
    if origin in (dict, collections.abc.Mapping) or annotation is dict:
        return isinstance(value, dict)
    if isinstance(value, dict) and "_target_" in value:
        return True  # a nested object, instantiated by Hydra
    return True  # a class (a device, a path object, a tensor...): not a YAML value's to judge


def describe(annotation: Any) -> str:
    """``annotation`` in words: "a number", "one of ['a', 'b']", "null or an integer"..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return f"one of {list(args)}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if annotation in names:
        return names[annotation]
    if annotation is type(None) or annotation is None:
        return "null"
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        return f"a list of ({describe(args[0])})" if args else "a list"
    if origin is dict or annotation is dict:
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def signature_types(target: Any) -> tuple[dict[str, Any], bool]:
    """The declared type of each keyword of ``target`` (a class or function), and whether it
    takes ``**kwargs``. A type that cannot be evaluated counts as Any."""
    function = target.__init__ if inspect.isclass(target) else target
    parameters = inspect.signature(target).parameters
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - a forward reference the module cannot resolve
        hints = {}
    varkw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {
        name: hints.get(name, Any)
        for name, p in parameters.items()
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }
    return named, varkw


def check_values(
    values: dict, types_: dict[str, Any], path: str, owner: str, open_: bool = False
) -> None:
    """Raise ConfigError for a key ``types_`` does not declare (unless ``open_``) or a value
    of the wrong type; ``path`` prefixes the option's name."""
    for key, value in values.items():
        if key.startswith("_") and key.endswith("_"):  # _target_, _partial_, _convert_...
            continue
        option = f"{path}.{key}" if path else key
        if key not in types_:
            if open_:
                continue
            known = ", ".join(k for k in types_ if not k.startswith("_"))
            raise ConfigError(option, f"not an option of {owner} (its options: {known})")
        if not conforms(value, types_[key]):
            raise ConfigError(option, f"{describe(types_[key])}, got {value!r}")


def locate(dotted: str) -> Any:
    """The object a ``_target_`` names, a class or a function. (Hydra's ``get_class`` and
    ``get_method`` each log an error for the other kind.)"""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ImportError(dotted)


def check_target(node: dict, path: str) -> Any:
    """Check a ``_target_`` node's keys against its target's signature; return the target."""
    try:
        target = locate(node["_target_"])
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{path}._target_", f"cannot import {node['_target_']!r}") from error
    declared, varkw = signature_types(target)
    check_values(node, declared, path, node["_target_"], open_=varkw)
    return target


def dataclass_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in fields(schema)}
