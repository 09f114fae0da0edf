"""Tiered compilation of served (``wasmtime serve``) components: a new component first serves from a
fast Winch build while Cranelift compiles the optimised one in the background; the supervisor then
starts a second process on the optimised build and swaps it in like a rolling replacement (the new
process serves before the old one drains), so no request is lost.

Measured (docs/host.md): Winch compiles the 18 MB componentize-py component about 3x faster than
Cranelift and serves it at about the same rate; for small components both take milliseconds, so
only components of at least ``fast_above`` bytes start on the fast tier. wasmtime-py 50 has no Winch
strategy (``Config.strategy`` knows "auto" and "cranelift"), so in-process components compile with
Cranelift only.

    build = ServedBuild(cli=cli, caches=caches, key=key, source=source, size=size, fuel=False,
                        policy=TierPolicy(fast_above=1 << 20), what="dev/shop/web")
    artifact, flags = build.first()        # the optimised build when cached, else the fast one when big
    if flags.compiler == FAST_COMPILER:
        artifact, flags = build.optimised()   # later, off the request path
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from host.cache import Artifact
from host.wasmtime_cli import CompileFailed, EngineFlags, ServeCaches, WasmtimeCli

log = logging.getLogger("driftless.host")

FAST_COMPILER = "winch"
OPTIMISED_COMPILER = "cranelift"


@dataclass(frozen=True, slots=True, kw_only=True)
class TierPolicy:
    fast_above: int | None = 1 << 20  # components at least this big start on the Winch build; None: never


class ServedBuild:
    """The compiles of one served component key (digest + composed adapters), tier by tier, each
    through the machine's shared compile cache."""

    def __init__(self, *, cli: WasmtimeCli, caches: ServeCaches, key: str, source: Callable[[], bytes],
                 size: Callable[[], int], fuel: bool, policy: TierPolicy, what: str) -> None:
        self._cli, self._caches, self.key, self.what = cli, caches, key, what
        self._source, self._size, self._policy = source, size, policy
        self.optimised_flags = EngineFlags(fuel=fuel, compiler=OPTIMISED_COMPILER)
        self.fast_flags = EngineFlags(fuel=fuel, compiler=FAST_COMPILER)
        self.fast_refused: str | None = None  # why the fast tier was skipped (an instance warning)

    def first(self) -> tuple[Artifact, EngineFlags]:
        """What to start serving from: the optimised build when any host already compiled it, else
        the fast build for a big component, else the optimised build compiled now."""
        cached = self._caches.for_flags(self.optimised_flags).open(self.key)
        if cached is not None:
            return cached, self.optimised_flags
        fast_above = self._policy.fast_above
        if fast_above is not None and self._size() >= fast_above:
            try:
                return self._compile(self.fast_flags), self.fast_flags
            except CompileFailed as exc:  # Winch lacks some proposals (GC, tail calls, relaxed SIMD)
                self.fast_refused = f"the fast (Winch) build was refused, serving the optimised build: {exc}"
                log.warning("%s", self.fast_refused)
        return self.optimised()

    def optimised(self, *, background: bool = False) -> tuple[Artifact, EngineFlags]:
        """The optimised build; ``background`` when the fast build serves meanwhile (compiled at the
        lowest CPU priority: it must not slow another component's first answer)."""
        return self._compile(self.optimised_flags, background=background), self.optimised_flags

    def _compile(self, flags: EngineFlags, *, background: bool = False) -> Artifact:
        return self._cli.precompile(key=self.key, fetch=self._source, flags=flags,
                                    cache=self._caches.for_flags(flags), what=self.what, background=background)

    def discard(self, flags: EngineFlags) -> None:
        """Drop a cached build that does not load (corrupt, truncated): the next compile redoes it."""
        self._caches.for_flags(flags).discard(self.key)
