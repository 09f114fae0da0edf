"""The manifest model: public types for Environment and Application, and the loader/validator.

Public face (everything else in this package is machinery)::

    from model import load_tree, ManifestTree, Environment, Application, Problem

    load_tree(root, *, max_file_bytes=1 MiB) -> ManifestTree          a directory such as manifests/
    load_revision(repo_path, revision, *, subdir="manifests") -> ManifestTree   straight from a Git commit
    check_registry(tree, *, registry_url, credentials=None) -> list[Problem]  images exist, links fit WIT imports/exports
    check_file(path, *, max_file_bytes=1 MiB) -> list[Problem]         one file on its own
"""

from model.loader import (
    DEFAULT_MAX_FILE_BYTES,
    RevisionNotFound,
    check_file,
    load_revision,
    load_tree,
)
from model.registry_check import check_registry
from model.types import (
    Application,
    Component,
    Daemon,
    Environment,
    HostSelector,
    Limits,
    Link,
    ManifestTree,
    Placement,
    Problem,
    PromotionPolicy,
    Spread,
    SpreadRequirement,
    SyncMode,
    SyncPolicy,
)

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "RevisionNotFound",
    "check_file",
    "check_registry",
    "load_revision",
    "load_tree",
    "Application",
    "Component",
    "Daemon",
    "Environment",
    "HostSelector",
    "Limits",
    "Link",
    "ManifestTree",
    "Placement",
    "Problem",
    "PromotionPolicy",
    "Spread",
    "SpreadRequirement",
    "SyncMode",
    "SyncPolicy",
]
