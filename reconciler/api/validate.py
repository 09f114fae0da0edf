"""``POST /api/v1/validate``: check a manifests tree sent as a tar (what ``git archive REV DIR`` writes),
with the reconciler's own loader, and answer its problems.

Why here: the pre-receive hook ``driftless up`` installs (driftless/pre_receive.py) must refuse an
invalid push before the ref moves, and a fresh Python process that imports the model and reads the
revision takes 1-2 s on a busy machine, on the path of every push. The reconciler has all of that
loaded: the hook pipes ``git archive`` here and gets the answer in milliseconds (it checks locally
when the reconciler does not answer). Reads only, so any credential (viewer and up) may ask.

    git archive --format=tar REV manifests | curl --data-binary @- -H 'Authorization: Bearer T' \\
        'http://127.0.0.1:8080/api/v1/validate?subdir=manifests'
    -> 200 {"problems": [{"level", "file", "line", "column", "path", "message", "code"}, ...]}
    -> 400 when the body is not such a tar (absolute or ``..`` paths, a path through a symlink, devices)

The tree is unpacked into a temporary directory: regular files, folders and symlinks as they are
(the loader refuses a symlink leading out of the tree, as it does for a Git revision); nothing is
ever written through a symlink or outside that directory.
"""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from aiohttp import web

from reconciler.api.context import error, read_auth
from wire.control import PREFIX

MAX_MEMBERS = 20_000


class BadArchive(ValueError):
    """The body is not a tar of a manifests tree this endpoint unpacks."""


@read_auth
async def validate(request: web.Request) -> web.StreamResponse:
    subdir = request.query.get("subdir", "manifests").strip("/") or "."
    body = await request.read()  # bounded by the application's client_max_size
    try:
        problems = await asyncio.to_thread(check_archive, body, subdir=subdir)
    except BadArchive as exc:
        return error(400, f"not a manifests archive: {exc}")
    return web.json_response({"problems": problems})


def check_archive(data: bytes, *, subdir: str) -> list[dict[str, object]]:
    """The problems of the tree ``subdir`` inside the tar ``data`` (files relative to ``subdir``, as
    ``model.load_revision`` names them)."""
    from model import Problem, load_tree

    if PurePosixPath(subdir).is_absolute() or ".." in PurePosixPath(subdir).parts:
        raise BadArchive(f"subdir {subdir!r} must be a relative path inside the tree")
    with tempfile.TemporaryDirectory(prefix="driftless-validate-") as tmp:
        root = Path(tmp)
        unpack(data, root)
        folder = root / subdir
        if not folder.is_dir() or folder.is_symlink():  # the words load_revision uses
            return [Problem(level="error", file=subdir, line=0, column=0, path="", code="not-found",
                            message=f"the pushed revision has no folder '{subdir}'").to_json()]
        return [p.to_json() for p in load_tree(folder).problems]


def unpack(data: bytes, dest: Path) -> None:
    links: set[PurePosixPath] = set()
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except tarfile.TarError as exc:
        raise BadArchive(str(exc)) from None
    with archive:
        try:
            _unpack_members(archive, dest, links)
        except (OSError, tarfile.TarError) as exc:  # a duplicate entry, a file where a folder should be
            raise BadArchive(str(exc)) from None


def _unpack_members(archive: tarfile.TarFile, dest: Path, links: set[PurePosixPath]) -> None:
    for count, member in enumerate(archive):
        if count >= MAX_MEMBERS:
            raise BadArchive(f"more than {MAX_MEMBERS} entries")
        if member.type == tarfile.XGLTYPE or member.name == "pax_global_header":
            continue  # git archive's commit id header
        rel = PurePosixPath(member.name)
        if rel.is_absolute() or ".." in rel.parts:
            raise BadArchive(f"{member.name!r} leads out of the tree")
        if any(parent in links for parent in rel.parents):
            raise BadArchive(f"{member.name!r} lies under a symlink")
        target = dest.joinpath(*rel.parts) if rel.parts else dest
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif member.isfile():
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(source.read())
        elif member.issym():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(member.linkname, target)  # created, never followed here: the loader judges it
            links.add(rel)
        else:
            raise BadArchive(f"{member.name!r} is neither a file, a folder nor a symlink")


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/validate", validate)
