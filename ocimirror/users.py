"""Users of the registry API: accounts, passwords and grants on base-path patterns.

A user has a password (stored only as an argon2id hash), an admin flag, and grants: a role,
``pull`` or ``push``, on every base path a pattern matches, with the wildcards of tag filters
(``team/*``: ``fnmatch.fnmatchcase`` on the whole base path). ``push`` implies ``pull`` and
``delete``; an admin may do everything. :func:`allowed_actions` is that rule, in one place.

:meth:`Users.authenticate` is the one place a password is checked: the token endpoint calls it
once per token, and registry requests carry the token. Hashing runs on a small thread pool of
its own (argon2 releases the GIL, and each hash takes ~64 MiB for a fraction of a second), so a
burst of logins neither stalls the event loop nor exhausts memory. A password never appears in
a repr, a log line, JSON or an error.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar, get_args

from ocimirror.backends.metadata import Role, UserRecord, UserStore
from ocimirror.core.reference import validate_repository_name
from ocimirror.errors import InvalidError, UserNotFound

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = ["ACTIONS", "ROLES", "Users", "allowed_actions", "check_pattern", "check_username"]

log = logging.getLogger("ocimirror.users")

_T = TypeVar("_T")

#: The roles a grant can give.
ROLES: tuple[Role, ...] = get_args(Role)

#: Every repository action (the Docker token spec's): an admin may do them all.
ACTIONS: frozenset[str] = frozenset({"pull", "push", "delete"})

_ROLE_ACTIONS: Mapping[str, frozenset[str]] = {
    "pull": frozenset({"pull"}),
    "push": ACTIONS,
}

# Letters, digits and ``._@-``, beginning and ending with a letter or digit: no ``:`` (Basic
# credentials split there) and nothing that needs quoting in a log line.
_USERNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._@-]{0,253}[A-Za-z0-9])?")
_MAX_PASSWORD = 1024
_WILDCARDS = re.compile(r"[*?\[]")


def check_username(username: str) -> str:
    """Return ``username`` if it can name a user, else raise :class:`InvalidError`."""
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        shown = username[:100] if isinstance(username, str) else type(username).__name__
        raise InvalidError(
            f"username {shown!r} is not valid: use 1-255 letters, digits and '._@-', "
            "beginning and ending with a letter or digit"
        )
    return username


def check_pattern(pattern: str) -> str:
    """Return ``pattern`` if it can match base paths, else raise :class:`InvalidError`.

    A pattern without wildcards must be a valid base path (a repository name).
    """
    if not isinstance(pattern, str) or not pattern or len(pattern) > 255:
        raise InvalidError("a base-path pattern must be 1-255 characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in pattern):
        raise InvalidError(f"base-path pattern {pattern[:100]!r} has spaces or control characters")
    if not _WILDCARDS.search(pattern):
        validate_repository_name(pattern)
    return pattern


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise InvalidError(f"role {str(role)[:20]!r} is not one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def _check_password(password: str) -> str:
    # The message never quotes the password.
    if not isinstance(password, str) or not 1 <= len(password) <= _MAX_PASSWORD:
        raise InvalidError(f"a password must be a string of 1-{_MAX_PASSWORD} characters")
    return password


def allowed_actions(user: UserRecord | None, name: str) -> frozenset[str]:
    """What ``user``'s grants let them do on the repository ``name`` (a base path).

    An admin may do every action; a ``push`` grant gives ``pull``, ``push`` and ``delete``, a
    ``pull`` grant ``pull``. Public distributions are not this function's concern (anyone may
    pull them).
    """
    if user is None:
        return frozenset()
    if user.admin:
        return ACTIONS
    actions: set[str] = set()
    for grant in user.grants:
        if fnmatch.fnmatchcase(name, grant.pattern):
            actions |= _ROLE_ACTIONS[grant.role]
    return frozenset(actions)


def default_hasher() -> PasswordHasher:
    """argon2-cffi's :class:`~argon2.PasswordHasher` with its defaults (argon2id, RFC 9106's
    low-memory profile)."""
    try:
        from argon2 import PasswordHasher
    except ImportError as exc:  # pragma: no cover - the server extra brings it
        raise ImportError(
            "user management needs argon2-cffi: pip install 'ocimirror[server]'"
        ) from exc
    return PasswordHasher()


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


async def _hashing(fn: Callable[..., _T], *args: str) -> _T:
    """Run one hash or verification on the hashing pool (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="ocimirror-hash"
            )
        pool = _pool
    return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))


class Users:
    """User management over a :class:`~ocimirror.backends.metadata.UserStore`.

    ``hasher`` is an argon2-cffi :class:`~argon2.PasswordHasher` (default:
    :func:`default_hasher`); hashes made with other parameters still verify, and are
    re-hashed with the current ones at the next login.
    """

    def __init__(
        self,
        store: UserStore,
        *,
        hasher: PasswordHasher | None = None,
        remember: float = 300.0,
        remember_max: int = 1024,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._dummy: str | None = None
        # Logins verified a moment ago, so a client asking /token again and again (skopeo
        # asks about twice per image) does not pay argon2 (~0.1 s of CPU, 64 MiB) each time.
        # Keyed by the stored hash, so a changed password forgets them; the password itself
        # is kept only as an HMAC under a key that lives in this process's memory.
        self._remember = remember
        self._remember_max = remember_max
        self._remembered: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._secret = secrets.token_bytes(32)

    def __repr__(self) -> str:
        return f"<Users of {self._store!r}>"

    @property
    def hasher(self) -> PasswordHasher:
        """The password hasher (made on first use, so importing this module needs no argon2)."""
        if self._hasher is None:
            self._hasher = default_hasher()
        return self._hasher

    async def create(self, username: str, *, password: str, admin: bool = False) -> UserRecord:
        """Create a user with no grants; AlreadyExists when the name is taken."""
        check_username(username)
        _check_password(password)
        password_hash = await _hashing(self.hasher.hash, password)
        record = await self._store.create_user(username, password_hash=password_hash, admin=admin)
        log.info("created user %r%s", username, " (admin)" if admin else "")
        return record

    async def get(self, username: str) -> UserRecord:
        """The user named ``username``; UserNotFound otherwise."""
        return await self._store.get_user(username)

    async def all(self) -> list[UserRecord]:
        """Every user, by name."""
        return await self._store.list_users()

    async def update(
        self, username: str, *, password: str | None = None, admin: bool | None = None
    ) -> UserRecord:
        """Change a user's password or admin flag (None keeps it)."""
        password_hash = None
        if password is not None:
            _check_password(password)
            password_hash = await _hashing(self.hasher.hash, password)
        return await self._store.update_user(username, password_hash=password_hash, admin=admin)

    async def grant(self, username: str, pattern: str, role: str) -> UserRecord:
        """Give ``username`` ``role`` (``pull`` or ``push``) on the base paths ``pattern``
        matches, replacing the role they had on that pattern."""
        return await self._store.set_grant(username, check_pattern(pattern), _check_role(role))

    async def revoke(self, username: str, pattern: str) -> UserRecord:
        """Take back ``username``'s grant on ``pattern`` (NotFound when there is none)."""
        return await self._store.delete_grant(username, pattern)

    async def delete(self, username: str) -> None:
        """Delete a user and their grants."""
        await self._store.delete_user(username)
        log.info("deleted user %r", username)

    async def authenticate(self, username: str, password: str) -> UserRecord | None:
        """The user, if ``password`` is theirs; else None.

        An unknown user costs one verification too (against a dummy hash), so the time taken
        does not tell which usernames exist.
        """
        known = isinstance(username, str) and _USERNAME.fullmatch(username) is not None
        stored = await self._store.get_password_hash(username) if known else None
        valid = isinstance(password, str) and 1 <= len(password) <= _MAX_PASSWORD
        candidate = password if valid else "-"
        if stored is not None and valid and self._recalls(username, stored, password):
            return await self._user(username)
        ok = await _hashing(self._verify, stored or await self._dummy_hash(), candidate)
        if stored is None:
            log.info("login as an unknown user refused")
            return None
        if not (ok and valid):
            log.info("wrong password for user %r", username)
            return None
        self._memorize(username, stored, password)
        try:
            if self.hasher.check_needs_rehash(stored):
                rehashed = await _hashing(self.hasher.hash, password)
                return await self._store.update_user(username, password_hash=rehashed)
            return await self._store.get_user(username)
        except UserNotFound:  # deleted while logging in
            return None

    async def _user(self, username: str) -> UserRecord | None:
        try:
            return await self._store.get_user(username)
        except UserNotFound:  # deleted while logging in
            return None

    def _mac(self, password: str) -> bytes:
        return hmac.digest(self._secret, password.encode(), "sha256")

    def _recalls(self, username: str, stored: str, password: str) -> bool:
        """Whether this login was verified less than ``remember`` seconds ago."""
        entry = self._remembered.get((username, stored))
        if entry is None:
            return False
        until, mac = entry
        if time.monotonic() >= until:
            del self._remembered[(username, stored)]
            return False
        return hmac.compare_digest(mac, self._mac(password))

    def _memorize(self, username: str, stored: str, password: str) -> None:
        if self._remember <= 0:
            return
        key = (username, stored)
        self._remembered[key] = (time.monotonic() + self._remember, self._mac(password))
        self._remembered.move_to_end(key)
        while len(self._remembered) > self._remember_max:
            self._remembered.popitem(last=False)

    def _verify(self, password_hash: str, password: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await _hashing(self.hasher.hash, "not the password of anyone")
        return self._dummy
