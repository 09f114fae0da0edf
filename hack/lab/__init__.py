"""The multi-site lab of network namespaces (docs/lab.md): ``hack/lab/run`` by hand, tests/lab/ in CI."""
