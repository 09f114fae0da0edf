"""Is a new digest a safe replacement for the running one? Pure comparisons of what the registry
recorded for both (no I/O): the typed compatibility of their exports, and the capabilities (imports)
the new one starts needing.

    breaking_changes({"acme:demo/math@1.0.0": ["add: func(a: u32, b: u32) -> u32", "sub: ..."]},
                     {"acme:demo/math@1.0.0": ["add: func(a: u64, b: u64) -> u64"]})
    # ["acme:demo/math: function sub was removed",
    #  "acme:demo/math: add: func(a: u32, b: u32) -> u32 -> func(a: u64, b: u64) -> u64"]

A removed interface, a removed function or a changed signature breaks whoever imports it (a linked
component built against the old export); an added interface or function does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from shared.interfaces import unversioned


def _functions(signatures: Sequence[str]) -> dict[str, str]:
    """``"add: func(a: u32) -> u32"`` -> ``{"add": "func(a: u32) -> u32"}``."""
    out = {}
    for signature in signatures:
        name, _, rest = signature.partition(":")
        out[name.strip()] = rest.strip()
    return out


def breaking_changes(old: Mapping[str, Sequence[str]], new: Mapping[str, Sequence[str]]) -> list[str]:
    """What the new exports break of the old ones: interface, function, old -> new type."""
    new_by_name = {unversioned(k): (k, v) for k, v in new.items()}
    problems = []
    for interface, signatures in sorted(old.items()):
        base = unversioned(interface)
        if base not in new_by_name:
            problems.append(f"{base}: the interface is no longer exported")
            continue
        before, after = _functions(signatures), _functions(new_by_name[base][1])
        for function, old_type in sorted(before.items()):
            if function not in after:
                problems.append(f"{base}: function {function} was removed")
            elif after[function] != old_type:
                problems.append(f"{base}: {function}: {old_type} -> {after[function]}")
    return problems


def new_capabilities(old_imports: Iterable[str], new_imports: Iterable[str]) -> list[str]:
    """Interfaces the new digest imports that the old one did not (versions ignored)."""
    had = {unversioned(i) for i in old_imports}
    return sorted({unversioned(i) for i in new_imports} - had)
