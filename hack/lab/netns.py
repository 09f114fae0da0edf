"""The lab's network: Linux network namespaces joined by veth pairs to a router namespace.

    core (router, ip_forward)  c-<site> 10.77.N.1/24  <-veth->  eth0 10.77.N.2/24 (+ service addresses)  <site>

Every namespace is named ``dlab-<name>``; nothing is added to the root namespace (no address, no
route, no listener), so lab traffic cannot leave the namespaces the lab made. Faults:

    cut_site(site) / heal_site(site)          the site's link in the router goes down / up (``ip link``)
    block(src, dst) / unblock(src, dst)       iptables DROP in the router, both directions (a partition
                                              between two address ranges that leaves the rest reachable)
    block_local(ns, src, dst)                 iptables DROP between two addresses inside one namespace

``in_namespace(ns)`` is a one-thread executor whose thread joined ``ns`` (setns(2) is per thread):
sockets it opens live in that namespace, so the tests reach the lab without any route from outside.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

PREFIX = "dlab-"
CORE = "core"
T = TypeVar("T")


class LabUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no `ip`, no iptables...): the lab refuses to start."""


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def ns_name(name: str) -> str:
    return PREFIX + name


def nsrun(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", ns_name(ns), *args, check=check)


def preflight() -> None:
    """Refuse, saying why, where namespaces cannot be made: CI fails then instead of skipping."""
    if os.geteuid() != 0:
        raise LabUnavailable("the lab needs root (network namespaces, veth pairs, iptables); run it as root")
    for tool in ("ip", "iptables"):
        if run("sh", "-c", f"command -v {tool}", check=False).returncode != 0:
            raise LabUnavailable(f"the lab needs `{tool}` (Debian: iproute2, iptables)")
    probe = ns_name("probe")
    r = run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        raise LabUnavailable(f"cannot make a network namespace here: {r.stderr.strip()}")
    try:
        r = run("ip", "netns", "exec", probe, "iptables", "-L", "-n", check=False)
        if r.returncode != 0:
            raise LabUnavailable(f"iptables does not work inside a namespace here: {r.stderr.strip()}")
    finally:
        run("ip", "netns", "del", probe, check=False)


def existing() -> list[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def remove_all() -> list[str]:
    """Delete every ``dlab-*`` namespace (a stale lab's too); deleting one removes its veth ends."""
    gone = existing()
    for ns in gone:
        run("ip", "netns", "del", ns, check=False)
    return gone


def pids_in(ns: str) -> list[int]:
    r = run("ip", "netns", "pids", ns_name(ns), check=False)
    return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []


def make_core() -> None:
    run("ip", "netns", "add", ns_name(CORE))
    nsrun(CORE, "ip", "link", "set", "lo", "up")
    nsrun(CORE, "sysctl", "-qw", "net.ipv4.ip_forward=1")


def make_site(name: str, number: int, extra_addresses: list[str]) -> str:
    """The site's namespace linked to the router: 10.77.N.2/24 and ``extra_addresses`` on its eth0,
    a default route through the router (10.77.N.1). Returns the site's subnet."""
    ns, core_end = ns_name(name), f"c-{name}"[:15]
    run("ip", "netns", "add", ns)
    nsrun(name, "ip", "link", "set", "lo", "up")
    # made inside the router namespace: neither end ever exists in the root namespace
    nsrun(CORE, "ip", "link", "add", core_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
    nsrun(CORE, "ip", "addr", "add", f"10.77.{number}.1/24", "dev", core_end)
    nsrun(CORE, "ip", "link", "set", core_end, "up")
    nsrun(name, "ip", "addr", "add", f"10.77.{number}.2/24", "dev", "eth0")
    for address in extra_addresses:
        nsrun(name, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
    nsrun(name, "ip", "link", "set", "eth0", "up")
    nsrun(name, "ip", "route", "add", "default", "via", f"10.77.{number}.1")
    return f"10.77.{number}.0/24"


def cut_site(name: str) -> None:
    nsrun(CORE, "ip", "link", "set", f"c-{name}"[:15], "down")


def heal_site(name: str) -> None:
    nsrun(CORE, "ip", "link", "set", f"c-{name}"[:15], "up")


def _drop(ns: str, action: str, chain: str, src: str, dst: str) -> None:
    nsrun(ns, "iptables", action, chain, "-s", src, "-d", dst, "-j", "DROP")


def block(src: str, dst: str) -> None:
    """Drop everything between the ranges ``src`` and ``dst`` in the router, both ways."""
    _drop(CORE, "-I", "FORWARD", src, dst)
    _drop(CORE, "-I", "FORWARD", dst, src)


def unblock(src: str, dst: str) -> None:
    _drop(CORE, "-D", "FORWARD", src, dst)
    _drop(CORE, "-D", "FORWARD", dst, src)


def block_local(ns: str, src: str, dst: str) -> None:
    """Drop traffic between two addresses of one namespace (both on its eth0: it goes through lo)."""
    _drop(ns, "-I", "OUTPUT", src, dst)
    _drop(ns, "-I", "OUTPUT", dst, src)


def unblock_local(ns: str, src: str, dst: str) -> None:
    _drop(ns, "-D", "OUTPUT", src, dst)
    _drop(ns, "-D", "OUTPUT", dst, src)


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _enter(ns: str) -> None:
    fd = os.open(f"/run/netns/{ns_name(ns)}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns_name(ns)}: {os.strerror(err)}")
    finally:
        os.close(fd)


class Namespaced:
    """Calls run on one thread that joined the namespace ``ns``: ``call(fn, *args)``."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lab-{ns}", initializer=_enter,
                                        initargs=(ns,))  # fmt: skip
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._pool.submit(fn, *args, **kwargs).result()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Any:
        return self._pool.submit(fn, *args, **kwargs)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
