"""The fields of a Git-writing request (``POST /api/v1/promote``, ``/rollback``, ``/approvals``): who
approves and who authors is the authenticated user, never a name the body gives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.errors import UsageError


def approval(body: Mapping[str, Any], *, user: str, author: str) -> str | None:
    """The approver of a request: the authenticated ``user`` when the body approves (``"approve": true``,
    or the user's own name or ``Name <email>``), None when it does not; someone else's name is refused."""
    given = [(k, body[k]) for k in ("approve", "approver") if body.get(k) not in (None, False, "")]
    if not given:
        return None
    for key, value in given:
        if value is True or value in (user, author):
            continue
        if not isinstance(value, str):
            raise TypeError(f"field {key!r} must be true or a string")
        raise UsageError(
            f"{key} {value!r} is not the authenticated user {user!r}: an approval is recorded as the user "
            "whose credential makes the request",
            hint=f"send \"approve\": true (recorded as Approved-By: {user}), or use {value}'s own credential",
        )
    return user


def check_author(body: Mapping[str, Any], *, author: str) -> None:
    """A body ``author`` must be the authenticated user's ``Name <email>`` (the commit is authored by it)."""
    given = optional_text(body, "author")
    if given is not None and given != author:
        raise UsageError(
            f"author {given!r} is not the authenticated user {author!r}: commits are authored by the user "
            "whose credential makes the request",
            hint="leave author out of the request",
        )


def required_text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        # TypeError: the reconciler's handler answers 400 (a client mistake) for it
        raise TypeError(f"field {key!r} is required and must be a non-empty string")
    return value


def optional_text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"field {key!r} must be a string")
    return value or None
