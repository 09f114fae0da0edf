"""The shared bottom layer: what the registry, the reconciler, the host agent and the CLI all use.

OCI references, the one registry client, component inspection, the error tree, parsers for
durations and listen addresses, retry, HTTP and Prometheus helpers. It imports nothing else of
Driftless.
"""

__version__ = "0.1.0"
