"""The manifest model: public types for Environment and Application, and the loader/validator.

Public face (everything else in this package is machinery)::

    from reconciler.model import load_tree, ManifestTree, Environment, Application, Problem
"""

from reconciler.model.types import (
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
