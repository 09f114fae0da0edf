"""``InstanceSpec`` built fast: a plan makes one per instance (100,000 at 10,000 hosts).

The dataclass's own ``__init__`` (frozen, 18 fields, each set through ``object.__setattr__``
after 14 keywords are parsed: ~7.5 µs) took a third of a first plan at that size. The instances of
one component differ only in their id and idle time, so every one of them, the first too, is
stamped (:func:`stamp`, ~1.6 µs) from the values they share (:func:`component_fields`, once per
component). They share the value objects, as they already shared their config mapping (specs are
frozen and nobody mutates their mappings). Generic over the fields: one added to ``InstanceSpec``
later gets its default, or the value given. A ``__post_init__`` (which stamping would skip) fails
this module's import instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any

from wire.control import InstanceSpec

if hasattr(InstanceSpec, "__post_init__"):
    raise TypeError("InstanceSpec has a __post_init__: stamp() would skip it; build specs with InstanceSpec(...)")

_OWN = ("id", "idle_after_ms")  # per instance; every other field is the component's
_SHARED = tuple(f.name for f in fields(InstanceSpec) if f.name not in _OWN)
# each slot's own setter (what object.__setattr__ ends in, without looking the name up each time)
_SETTERS: dict[str, Callable[[InstanceSpec, Any], None]] = {f.name: InstanceSpec.__dict__[f.name].__set__
                                                             for f in fields(InstanceSpec)}

Shared = tuple[tuple[Callable[[InstanceSpec, Any], None], Any], ...]

# the values a field takes when InstanceSpec(...) is not given it (one shared default object per
# field, as frozen specs share their mappings anyway); None: required
_DEFAULTS: dict[str, Any] = {f.name: f.default if f.default is not MISSING
                             else f.default_factory() if f.default_factory is not MISSING else None
                             for f in fields(InstanceSpec)}
_REQUIRED = frozenset(f.name for f in fields(InstanceSpec)
                      if f.default is MISSING and f.default_factory is MISSING) - set(_OWN)

_INDEX = {name: i for i, name in enumerate(_SHARED)}
_DEFAULT_VALUES = [_DEFAULTS[name] for name in _SHARED]
_SHARED_SETTERS = [_SETTERS[name] for name in _SHARED]

_new = object.__new__
_set_id, _set_idle = _SETTERS["id"], _SETTERS["idle_after_ms"]


def component_fields(**values: Any) -> Shared:
    """What every instance of a component shares: ``values`` by field name (all but id and idle
    time), InstanceSpec's defaults for the fields not given: what ``InstanceSpec(...)`` would set."""
    if not _REQUIRED <= values.keys() or not _INDEX.keys() >= values.keys():
        raise TypeError(f"component_fields: unknown or per-instance {sorted(values.keys() - _INDEX.keys())}, "
                        f"missing {sorted(_REQUIRED - values.keys())}")
    given = _DEFAULT_VALUES.copy()
    for name, value in values.items():
        given[_INDEX[name]] = value
    return tuple(zip(_SHARED_SETTERS, given, strict=True))


def stamp(shared: Shared, iid: str, idle_after_ms: int | None) -> InstanceSpec:
    """``InstanceSpec(id=iid, idle_after_ms=idle_after_ms, **values)``, only faster."""
    spec: InstanceSpec = _new(InstanceSpec)
    _set_id(spec, iid)
    _set_idle(spec, idle_after_ms)
    for set_field, value in shared:
        set_field(spec, value)
    return spec


def stamps(shared: Shared, prefix: str, ordinals: tuple[str, ...], idle_after_ms: int | None,
           out: list[InstanceSpec]) -> None:
    """:func:`stamp` for each ordinal (id ``prefix + ordinal``), appended to ``out``: one call for a
    component's instances on one host, not one per instance."""
    append = out.append
    for ordinal in ordinals:
        spec: InstanceSpec = _new(InstanceSpec)
        _set_id(spec, prefix + ordinal)
        _set_idle(spec, idle_after_ms)
        for set_field, value in shared:
            set_field(spec, value)
        append(spec)
