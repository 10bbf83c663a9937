"""The faster __init__ of frozen, slotted dataclasses builds exactly what dataclasses' own
__init__ builds (docs/design/fast-frozen.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

import parlour.core.needs
import parlour.core.outcome
import parlour.core.records
import parlour.core.writes
import parlour.protocol.events
import parlour.protocol.records
import parlour.protocol.replies
from parlour.protocol.fastinit import _ORIGINAL, fast_init, original_init

MODULES = (
    parlour.protocol.events,
    parlour.protocol.replies,
    parlour.protocol.records,
    parlour.core.outcome,
    parlour.core.writes,
    parlour.core.records,
    parlour.core.needs,
)


@dataclass(frozen=True, slots=True)
class Base:
    a: int
    b: str = "b"


@dataclass(frozen=True, slots=True, kw_only=True)
class Child(Base):
    c: list[int] = field(default_factory=list)
    d: float
    e: int = field(default=5, init=False)
    f: list[int] = field(default_factory=lambda: [1], init=False)


@dataclass(frozen=True, slots=True)
class Checked:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("negative")


fast_init(Base)
fast_init(Child)
fast_init(Checked)


def values(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def by_original(cls: type, *args: Any, **kwargs: Any) -> Any:
    obj = object.__new__(cls)
    original_init(cls)(obj, *args, **kwargs)
    return obj


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        (Base, (1,), {}),
        (Base, (1, "x"), {}),
        (Base, (), {"a": 2, "b": "y"}),
        (Child, (1,), {"d": 2.0}),
        (Child, (1, "z"), {"c": [3], "d": 0.5}),
        (Checked, (3,), {}),
    ],
)
def test_the_same_object_as_dataclasses_builds(
    cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    fast, slow = cls(*args, **kwargs), by_original(cls, *args, **kwargs)
    assert values(fast) == values(slow) and fast == slow
    if cls is not Child:  # Child holds lists: not hashable either way
        assert hash(fast) == hash(slow)


def test_defaults_factories_post_init_and_frozenness() -> None:
    one, two = Child(1, d=1.0), Child(1, d=1.0)
    assert one.c == [] and one.c is not two.c and one.f == [1] and one.e == 5
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Child(1, 2.0)  # type: ignore[misc]  # d is keyword-only
    with pytest.raises(TypeError):
        Base()  # type: ignore[call-arg]


def test_only_frozen_slotted_dataclasses() -> None:
    @dataclass(slots=True)
    class Mutable:
        x: int

    with pytest.raises(TypeError):
        fast_init(Mutable)


@pytest.mark.parametrize(
    "cls",
    sorted(
        (c for c in _ORIGINAL if any(c.__module__ == m.__name__ for m in MODULES)),
        key=lambda c: f"{c.__module__}.{c.__qualname__}",
    ),
    ids=lambda c: c.__qualname__,
)
def test_every_protocol_and_core_value_builds_as_before(cls: type) -> None:
    kwargs = {
        f.name: object()
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    try:
        slow = by_original(cls, **kwargs)
    except Exception as exc:  # validation in __post_init__: the same refusal
        with pytest.raises(type(exc)):
            cls(**kwargs)
        return
    assert values(cls(**kwargs)) == values(slow)


def test_the_hot_values_are_covered() -> None:
    for name in ("MessageEvent", "DmEvent", "SendReply", "Ok"):
        assert any(c.__name__ == name for c in _ORIGINAL), name
    for cls in (parlour.core.records.StoredMessage, parlour.core.outcome.Outcome):
        assert cls in _ORIGINAL
