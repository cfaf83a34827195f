"""Config values against the types declared where they are used (each ``_target_``'s signature,
the options' dataclasses), by pydantic; its first error is one ``ConfigError`` line, in words.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import json
import logging
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any, Literal, Union

from hydra.utils import get_object
from pydantic import ConfigDict, TypeAdapter, ValidationError, create_model

from sdexp.errors import ConfigError

#: Sequences and mappings as a YAML value holds them.
SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
MAPPINGS = (dict, collections.abc.Mapping)
#: How an expected type is said in the one line (pydantic's error type, less its suffix).
WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string"}
WORDS |= {"list": "a list", "tuple": "a list", "dict": "a mapping", "none": "null"}


def judged(annotation: Any) -> Any:
    """``annotation`` as a YAML value can meet it: a class other than the plain types, or a
    union that holds one, is Any (Hydra instantiates such values); sequences are lists."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in (bool, int, float, str, type(None)) or origin is Literal:
        return annotation
    if origin in (Union, types.UnionType):
        members = tuple(judged(a) for a in args)
        return Any if Any in members else Union[members]  # noqa: UP007 - built from a tuple
    if origin in SEQUENCES or annotation in (list, tuple):
        return list[judged(args[0])] if args else list
    if origin in MAPPINGS or annotation is dict:
        return dict
    return Any


def declared(target: Any) -> tuple[dict[str, Any], bool]:
    """The declared type of each option of ``target`` (a dataclass's fields, or a callable's
    keywords; Any where it cannot be evaluated), and whether it takes ``**kwargs``."""
    if is_dataclass(target):
        return {f.name: typing.get_type_hints(target)[f.name] for f in fields(target)}, False
    parameters = inspect.signature(target).parameters.values()
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # noqa: BLE001 - whatever get_type_hints raises on an unresolvable name
        hints = {}
    named = [p for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    takes_more = any(p.kind is p.VAR_KEYWORD for p in parameters)
    return {p.name: hints.get(p.name, Any) for p in named}, takes_more


@functools.cache
def validator(target: Any) -> tuple[TypeAdapter, list[str]]:
    """pydantic's validator of ``target``'s options (every one optional: a config sets some),
    unknown options refused unless it takes ``**kwargs``; and the options' names."""
    options, takes_more = declared(target)
    config = ConfigDict(extra="allow" if takes_more else "forbid", arbitrary_types_allowed=True)
    model = create_model(
        getattr(target, "__name__", "options"),
        __config__=config,
        **{name: (judged(annotation), None) for name, annotation in options.items()},
    )
    return TypeAdapter(model), list(options)


def check_values(values: dict, target: Any, path: str, owner: str) -> None:
    """``values`` against ``target``'s declared options, strictly as JSON holds them; the first
    error as a ConfigError naming the option and what it takes, or that ``owner`` has no such
    option. Hydra's own keys (``_target_``...) are skipped."""
    values = {k: v for k, v in values.items() if not (k.startswith("_") and k.endswith("_"))}
    adapter, known = validator(target)
    try:
        adapter.validate_json(json.dumps(values, default=str), strict=True)
    except ValidationError as error:
        errors = error.errors()
        key = str(errors[0]["loc"][0])
        option = f"{path}.{key}" if path else key
        if errors[0]["type"] == "extra_forbidden":
            options = ", ".join(k for k in known if not k.startswith("_"))
            why = f"not an option of {owner} (its options: {options})"
            raise ConfigError(option, why) from None
        raise ConfigError(option, f"{expected(errors, key)}, got {values[key]!r}") from None


def expected(errors: list[dict], key: str) -> str:
    """What option ``key`` takes, in words, from pydantic's errors about it (a union gives one per
    member): "an integer", "one of ['best', 'final']", "a list of (a number)"."""
    said, item = [], False
    for error in (e for e in errors if str(e["loc"][0]) == key):
        item = item or any(isinstance(part, int) for part in error["loc"][1:])
        if error["type"] == "literal_error":
            said.append(f"one of [{error['ctx']['expected'].replace(' or ', ', ')}]")
        else:
            said.append(WORDS.get(error["type"].split("_")[0], error["msg"].lower()))
    words = " or ".join(dict.fromkeys(said))
    return f"a list of ({words})" if item else words


def check_target(node: dict, path: str) -> Any:
    """Check a ``_target_`` node's options against its target's signature; return the target.
    Hydra's lookup (``get_object``) logs its own error line, which the one line replaces."""
    lookup = logging.getLogger("hydra.utils")
    lookup.disabled, was = True, lookup.disabled
    try:
        target = get_object(node["_target_"])
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"{path}._target_", f"cannot import {node['_target_']!r}") from error
    finally:
        lookup.disabled = was
    check_values(node, target, path, node["_target_"])
    return target
