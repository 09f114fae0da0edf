"""Errors of the host agent. Each message says what went wrong and, where it helps, how to fix it."""

from __future__ import annotations

from shared.errors import DriftlessError, NotReachable


class HostError(DriftlessError):
    """A host-side failure reported per instance (lastError) or, for the CLI, as one line."""


class PullError(HostError):
    """The component could not be fetched from its registry."""


class RegistryUnreachable(PullError, NotReachable):
    pass


class DigestMismatch(PullError):
    pass


class NotAComponent(HostError):
    """The blob is not Wasm, or is a core module rather than a component."""


class MissingImport(HostError):
    """The component imports something this host does not provide (and no link wires it)."""


class Incompatible(HostError):
    """The component exports a host interface with another shape than the WIT defines."""


class CapabilityDenied(HostError):
    """The component imports a WASI interface its manifest does not allow."""


class Unavailable(HostError):
    """A call could not be served (limit hit, trap, back-off, draining): the ingress answers 503."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # short stable word: fuel, deadline, memory, concurrency, trap, backoff, draining
        self.fuel: int | None = None  # fuel the trapped call consumed (in-process components), for the counters
