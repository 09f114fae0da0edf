"""Per-repository access control (``driftless registry serve --access-policy FILE``), like zot's
``accessControl``.

The policy file (YAML or JSON) maps repository globs to the actions ``pull``, ``push`` and
``delete``, for users of the htpasswd file and for anonymous callers; ``admins`` may do everything::

    admins: [root]
    repositories:
      "**":                        # every repository...
        defaultPolicy: [pull]      # ...any authenticated user may pull
      "demo/**":
        policies:
          - users: [alice]
            actions: [pull, push, delete]
        defaultPolicy: [pull]
        anonymousPolicy: [pull]    # no credentials needed to pull demo/...

Globs: ``*`` matches within one path component, ``**`` any run of characters (``/`` included), ``?``
one character other than ``/``. The longest pattern that matches a repository applies (the first in
the file on a tie); a repository no pattern matches is closed to everyone but the admins. A user's
actions on a repository are the rule's ``anonymousPolicy``, its ``defaultPolicy`` and the actions of
every ``policies`` entry naming them.

Without a policy file the server builds the equivalent of today's switches with
:meth:`AccessPolicy.implicit`: no htpasswd, everyone may do everything; htpasswd, every user may do
everything and anonymous callers nothing (pull, with ``--anonymous-pull``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import UsageError

ACTIONS = ("pull", "push", "delete")
ALL_ACTIONS = frozenset(ACTIONS)
NOTHING: frozenset[str] = frozenset()
_PATTERN_CHARS = re.compile(r"^[a-z0-9._\-/*?]+$")
_RULE_KEYS = {"policies", "defaultPolicy", "anonymousPolicy"}
_TOP_KEYS = {"repositories", "admins"}


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """``**`` -> any characters, ``*`` -> any but ``/``, ``?`` -> one but ``/``; the rest literally."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$")


@dataclass(frozen=True)
class RepositoryRule:
    pattern: str
    users: dict[str, frozenset[str]] = field(default_factory=dict)
    default: frozenset[str] = NOTHING  # any authenticated user
    anonymous: frozenset[str] = NOTHING
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", glob_to_regex(self.pattern))

    def actions(self, user: str | None) -> frozenset[str]:
        if user is None:
            return self.anonymous
        return self.anonymous | self.default | self.users.get(user, NOTHING)


@dataclass(frozen=True)
class AccessPolicy:
    rules: tuple[RepositoryRule, ...] = ()
    admins: frozenset[str] = NOTHING
    # anonymous callers may use the registry-wide endpoints (/v2/, /v2/_catalog, /metrics) without
    # credentials: true without users and with --anonymous-pull; with a policy file and users, those
    # endpoints ask for credentials so clients learn to send them
    anonymous_registry: bool = False
    source: str = "built-in"

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def implicit(cls, *, users: bool, anonymous_pull: bool = False) -> AccessPolicy:
        """Today's switches as a policy: no users -> all for everyone; users -> all for them."""
        if not users:
            return cls((RepositoryRule("**", anonymous=ALL_ACTIONS),), anonymous_registry=True)
        anonymous = frozenset({"pull"}) if anonymous_pull else NOTHING
        return cls((RepositoryRule("**", default=ALL_ACTIONS, anonymous=anonymous),), anonymous_registry=anonymous_pull)

    @classmethod
    def load(cls, path: Path) -> AccessPolicy:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read access policy {path}: {exc.strerror}") from None
        if Path(path).suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise UsageError(f"{path}: not valid JSON: {exc}") from None
        else:
            import yaml  # JSON is YAML too

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise UsageError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        return cls.parse(data, source=str(path))

    @classmethod
    def parse(cls, data: Any, *, source: str = "policy") -> AccessPolicy:
        def fail(where: str, problem: str) -> UsageError:
            return UsageError(f"{source}: {where}: {problem}",
                              hint="see 'Access control' in docs/registry.md for the format")

        if not isinstance(data, dict):
            raise fail("top level", "expected a mapping with 'repositories' (and 'admins')")
        for k in data:
            if k not in _TOP_KEYS:
                raise fail(str(k), f"unknown key; expected {', '.join(sorted(_TOP_KEYS))}")
        admins = frozenset(_names(data.get("admins") or [], "admins", fail))
        repositories = data.get("repositories") or {}
        if not isinstance(repositories, dict):
            raise fail("repositories", "expected a mapping of repository globs to rules")
        rules = []
        for pattern, body in repositories.items():
            where = f"repositories.{pattern!r}"
            if not isinstance(pattern, str) or not pattern or not _PATTERN_CHARS.match(pattern):
                raise fail(where, "a repository glob uses lowercase letters, digits, '._-/' and '*', '**', '?'")
            if not isinstance(body, dict):
                raise fail(where, "expected a mapping with policies, defaultPolicy and/or anonymousPolicy")
            for k in body:
                if k not in _RULE_KEYS:
                    raise fail(f"{where}.{k}", f"unknown key; expected {', '.join(sorted(_RULE_KEYS))}")
            users: dict[str, frozenset[str]] = {}
            entries = body.get("policies") or []
            if not isinstance(entries, list):
                raise fail(f"{where}.policies", "expected a list of {users: [...], actions: [...]}")
            for i, entry in enumerate(entries):
                at = f"{where}.policies[{i}]"
                if not isinstance(entry, dict) or set(entry) - {"users", "actions"}:
                    raise fail(at, "expected {users: [...], actions: [...]}")
                actions = _actions(entry.get("actions") or [], f"{at}.actions", fail)
                for user in _names(entry.get("users") or [], f"{at}.users", fail):
                    users[user] = users.get(user, NOTHING) | actions
            rules.append(RepositoryRule(
                pattern,
                users=users,
                default=_actions(body.get("defaultPolicy") or [], f"{where}.defaultPolicy", fail),
                anonymous=_actions(body.get("anonymousPolicy") or [], f"{where}.anonymousPolicy", fail),
            ))
        return cls(tuple(rules), admins, anonymous_registry=False, source=source)

    # -- questions ----------------------------------------------------------------------------------
    def named_users(self) -> set[str]:
        named = set(self.admins)
        for rule in self.rules:
            named |= set(rule.users)
        return named

    def names_any_user(self) -> bool:
        return bool(self.named_users()) or any(rule.default for rule in self.rules)

    def rule_for(self, repository: str) -> RepositoryRule | None:
        best: RepositoryRule | None = None
        for rule in self.rules:
            if rule.regex.match(repository) and (best is None or len(rule.pattern) > len(best.pattern)):
                best = rule
        return best

    def actions(self, user: str | None, repository: str) -> frozenset[str]:
        if user is not None and user in self.admins:
            return ALL_ACTIONS
        rule = self.rule_for(repository)
        return rule.actions(user) if rule is not None else NOTHING

    def allows(self, user: str | None, repository: str, action: str) -> bool:
        return action in self.actions(user, repository)

    def is_admin(self, user: str | None) -> bool:
        return user is not None and user in self.admins


def _names(value: Any, where: str, fail: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise fail(where, "expected a list of user names")
    if "anonymous" in value:
        raise fail(where, "'anonymous' is not a user: give anonymous callers their actions with anonymousPolicy")
    return list(value)


def _actions(value: Any, where: str, fail: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(where, f"expected a list of actions ({', '.join(ACTIONS)})")
    unknown = [v for v in value if v not in ALL_ACTIONS]
    if unknown:
        raise fail(where, f"unknown action {unknown[0]!r}; the actions are {', '.join(ACTIONS)}")
    return frozenset(value)

