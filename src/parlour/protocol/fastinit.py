"""Faster construction of frozen, slotted dataclasses (measured: docs/design/fast-frozen.md).

A frozen dataclass's generated ``__init__`` sets each field with
``object.__setattr__(self, name, value)``: a global lookup, an attribute lookup and a generic
call per field, about 0.4 us each here. The chat's hot path builds eight such values per
message (the stored message, the event, the reply, the write, the delivery, ...), so that
was a quarter of the server's CPU per message. :func:`fast_init` replaces ``__init__`` with
one that sets each slot through the slot's own descriptor (``Cls.field.__set__``, a C call),
keeping the signature, defaults, keyword-only fields and ``__post_init__``; instances stay
frozen (``__setattr__`` still refuses), compare and hash as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["fast_init", "fast_init_module", "original_init"]

T = TypeVar("T", bound=type)

_ORIGINAL: dict[type, Callable[..., None]] = {}


def original_init(cls: type) -> Callable[..., None]:
    """The ``__init__`` dataclasses generated for `cls` (tests compare the two)."""
    return _ORIGINAL[cls]


def fast_init(cls: T) -> T:
    """Give the frozen, slotted dataclass `cls` the faster ``__init__`` (returns `cls`)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    if cls in _ORIGINAL:
        return cls
    namespace: dict[str, Any] = {"MISSING": dataclasses.MISSING}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):
        setter = None
        for klass in cls.__mro__:  # the slot may be declared by a base class
            descriptor = klass.__dict__.get(f.name)
            if descriptor is not None and hasattr(descriptor, "__set__"):
                setter = descriptor.__set__
                break
        if setter is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not a slot")
        namespace[f"_set_{f.name}"] = setter
        if not f.init:
            if f.default_factory is not dataclasses.MISSING:
                namespace[f"_factory_{f.name}"] = f.default_factory
                body.append(f"_set_{f.name}(self, _factory_{f.name}())")
            elif f.default is not dataclasses.MISSING:
                namespace[f"_default_{f.name}"] = f.default
                body.append(f"_set_{f.name}(self, _default_{f.name})")
            continue
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{f.name}"] = f.default
            param = f"{f.name}=_default_{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            param = f"{f.name}=MISSING"
            body.append(f"if {f.name} is MISSING: {f.name} = _factory_{f.name}()")
        else:
            param = f.name
        (keyword if f.kw_only else positional).append(param)
        body.append(f"_set_{f.name}(self, {f.name})")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    lines = "\n".join(f"    {line}" for line in body or ["pass"])
    exec(f"def __init__({signature}):\n{lines}\n", namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    generated = cls.__dict__["__init__"]
    init.__doc__ = generated.__doc__
    _ORIGINAL[cls] = generated
    type.__setattr__(cls, "__init__", init)
    return cls


def fast_init_module(namespace: dict[str, Any]) -> None:
    """:func:`fast_init` for every frozen, slotted dataclass defined in the module whose
    globals are `namespace` (call at the end of the module)."""
    module = namespace["__name__"]
    for value in list(namespace.values()):
        if (
            isinstance(value, type)
            and value.__module__ == module
            and getattr(getattr(value, "__dataclass_params__", None), "frozen", False)
            and "__slots__" in value.__dict__
        ):
            fast_init(value)
