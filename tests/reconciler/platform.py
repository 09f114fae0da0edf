"""The reconciler tests' names for pieces of the one test platform (``tests/support/platform.py``).

``Registry``, ``Reconciler`` and ``GitRepo(root)`` keep the spelling tests/host/test_control.py and
hack/bench/reconcile.py use; each is a ``LocalPlatform`` (``driftless up``'s machinery) started in part.
New tests use ``local_platform`` directly.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.support import platform as support
from tests.support.platform import (  # noqa: F401  (re-exported)
    LocalPlatform,
    NothingToCommit,
    application,
    environment,
    local_platform,
    with_custom_section,
)


class GitRepo(support.GitRepo):
    """A bare repository at ROOT/manifests.git (what a reconciler follows) and a working clone at ROOT/work."""

    def __init__(self, root: Path) -> None:
        bare = root / "manifests.git"
        LocalPlatform(data=root, repo=bare).init_git()
        super().__init__(bare, root / "work")


class Registry(support.Registry):
    """A platform that runs only its registry (storage under ``root``)."""

    def __init__(self, root: Path, log_dir: Path | None = None) -> None:
        super().__init__(local_platform(root))

    def start(self) -> Registry:
        self.p.prepare()
        self.p.start_registry()
        return self

    def stop(self) -> None:
        self.p.stop()


class Reconciler(support.Reconciler):
    """A platform that runs only its reconciler, following ``repo`` and pointing at ``registry``."""

    def __init__(self, *, repo: Path, registry: str, data: Path, log_dir: Path | None = None, token_file: Path,
                 heartbeat: float = 0.5, interval: float = 30.0, extra: list[str] | None = None) -> None:
        super().__init__(local_platform(data, heartbeat=heartbeat, external_registry=registry, repo=repo,
                                        token_path=token_file,
                                        reconciler_args=["--interval", str(interval), *(extra or [])]))

    @property
    def args(self) -> list[str]:
        return self.p.reconciler_command()

    def start(self) -> Reconciler:
        if not self.p.commands:
            self.p.prepare()
        super().start()
        return self


def new_token(path: Path) -> Path:
    path.write_text(secrets.token_urlsafe(24))
    return path
