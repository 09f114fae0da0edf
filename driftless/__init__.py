"""Driftless: run WebAssembly components across clouds, edges and devices, the GitOps way."""

__version__ = "0.1.0"
API_VERSION = "driftless.dev/v1alpha1"
