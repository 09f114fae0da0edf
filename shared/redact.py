"""Credentials never shown: the one helper for every URL (or text holding URLs) the platform displays.

    redact_url("https://user:token@git.example.com/m.git")   # 'https://***@git.example.com/m.git'
    redact_text("fatal: unable to access 'http://u:p@h/x.git/': ...")   # the same inside any text

The whole userinfo goes (a token is often the user part alone: ``https://TOKEN@host/...``); paths
and scp-like ``git@host:org/repo.git`` addresses (a user name, no secret) are left as they are.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://userinfo@ : userinfo is anything up to the last '@' before the host's end (a password may hold '@')
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s'\"<>]*)@")


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
