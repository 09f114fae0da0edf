"""The check at the end of the test run (tests/conftest.py) sees a process a test left behind, even one
that left pytest's process tree (a new session, its parent gone), and not the processes of others."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import leftovers


def test_a_detached_process_of_this_run_is_found_and_a_strangers_is_not(tmp_path: Path) -> None:
    mark = os.environ[leftovers.MARK]
    # a grandchild in its own session whose parent exits at once: re-parented, out of pytest's tree
    script = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], " \
             "start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print('started')"
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=30)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
                                env={k: v for k, v in os.environ.items() if k != leftovers.MARK})
    try:
        found = leftovers.find(root=os.getpid(), mark=mark, temp_dir=str(tmp_path))
        marked = [p for p in found if p.why == "started by this run" and "time.sleep(60)" in p.command]
        assert len(marked) == 1, found
        # a child without the mark is found as a child
        assert [p.why for p in found if p.pid == stranger.pid] == ["a child of pytest"]
        # another run's check does not take the detached process for its own
        assert marked[0].pid not in {p.pid for p in leftovers.find(root=os.getpid(), mark="another-run",
                                                                   temp_dir="/nowhere")}
        leftovers.kill(marked)
        assert not [p for p in leftovers.settle(root=os.getpid(), mark=mark, temp_dir=str(tmp_path), grace=5)
                    if p.pid == marked[0].pid]
    finally:
        stranger.kill()
        stranger.wait(10)
