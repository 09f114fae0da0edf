"""Running the pure planner the way the reconciler does: with the cyclic garbage collector paused.

A plan allocates at least one object per instance (its ``InstanceSpec``, 100,000 at 10,000 hosts)
that lives until the plan returns, and frees almost nothing the collector could find: every full
collection on the way rescans the whole heap for nothing (0.3-0.5 s of a ~1 s plan at 100,000
instances, hack/bench/RESULTS.md). The planner itself may not touch the collector (it is pure:
tests/test_architecture.py), so the caller pauses it. The pause is process-wide, so it is counted:
overlapping pauses (placements in threads) turn the collector back on when the last one ends, and
only if it was on when the first began. Reference counting frees everything else as usual meanwhile.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from model.types import ManifestTree
from reconciler.planner.placement import HostInfo, Plan, plan
from wire.control import InstanceSpec, SignatureRequirement

_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (counted across threads), then as it was."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


def place(
    *,
    tree: ManifestTree,
    digests: Mapping[str, str],
    hosts: Sequence[HostInfo],
    previous: Mapping[str, Sequence[InstanceSpec]],
    registry: str,
    secrets: Mapping[str, str] | None = None,
    signatures: Mapping[str, SignatureRequirement] | None = None,
) -> Plan:
    """:func:`reconciler.planner.placement.plan` with the collector paused (see the module)."""
    with gc_paused():
        return plan(tree=tree, digests=digests, hosts=hosts, previous=previous, registry=registry, secrets=secrets,
                    signatures=signatures)
