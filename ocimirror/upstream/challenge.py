"""``WWW-Authenticate`` challenges (RFC 9110 section 11.6.1), parsed leniently.

A header may hold several challenges (``Basic realm="x", Bearer realm="y",service="z"``), and a
response may carry several headers. Parameter values are tokens or quoted strings, which may
hold commas and backslash escapes; registries in the wild also send unquoted URLs, which are
accepted up to the next comma or space.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import attrs

__all__ = ["Challenge", "parse_www_authenticate"]

_TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN = re.compile(rf"{_TCHAR}+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(?:,|$))")
_PARAM = re.compile(rf"({_TCHAR}+)[ \t]*=[ \t]*")
_BARE = re.compile(r"[^,\s]*")
_SPACE = re.compile(r"[ \t]*")


@attrs.frozen
class Challenge:
    """One authentication challenge: a scheme (lowercased) and its parameters.

    Parameter names are lowercased; the first occurrence of a name wins. ``token68`` holds the
    bare credentials-style value some schemes use instead of parameters.
    """

    scheme: str
    params: Mapping[str, str] = attrs.field(factory=dict)
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        """The ``realm`` parameter (for Bearer: the token endpoint URL)."""
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        """The ``service`` parameter of a Bearer challenge."""
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scopes a Bearer challenge asks for (its ``scope`` split on spaces)."""
        return tuple(self.params.get("scope", "").split())

    @property
    def error(self) -> str | None:
        """The ``error`` parameter (``invalid_token``, ``insufficient_scope``), if any."""
        return self.params.get("error")


def parse_www_authenticate(headers: str | Iterable[str]) -> list[Challenge]:
    """Every challenge in one ``WWW-Authenticate`` value or in several, in order.

    Never raises: malformed parts are skipped.
    """
    values = [headers] if isinstance(headers, str) else list(headers)
    found: list[Challenge] = []
    for value in values:
        found.extend(_parse(value))
    return found


def _value(s: str, i: int) -> tuple[str, int]:
    """A parameter value (quoted string or bare run) at ``i``, and where it ends."""
    if i < len(s) and s[i] == '"':
        out: list[str] = []
        j = i + 1
        while j < len(s):
            c = s[j]
            if c == "\\" and j + 1 < len(s):
                out.append(s[j + 1])
                j += 2
            elif c == '"':
                return "".join(out), j + 1
            else:
                out.append(c)
                j += 1
        return "".join(out), j  # unterminated: take the rest
    m = _BARE.match(s, i)
    assert m is not None  # _BARE matches the empty string
    return m.group(), m.end()


def _skip_space(s: str, i: int) -> int:
    m = _SPACE.match(s, i)
    assert m is not None  # _SPACE matches the empty string
    return m.end()


def _parse(s: str) -> list[Challenge]:
    challenges: list[Challenge] = []
    i, n = 0, len(s)
    while i < n:
        while i < n and s[i] in " \t,":
            i += 1
        m = _TOKEN.match(s, i)
        if m is None:
            i += 1  # a stray character
            continue
        scheme = m.group().lower()
        i = _skip_space(s, m.end())
        if i < n and s[i] == "=":  # a parameter without a scheme: skip it
            _, i = _value(s, _skip_space(s, i + 1))
            continue
        params: dict[str, str] = {}
        token68: str | None = None
        m68 = _TOKEN68.match(s, i)
        if m68 is not None:
            token68, i = m68.group(), m68.end()
        else:
            while (pm := _PARAM.match(s, i)) is not None:
                value, i = _value(s, pm.end())
                params.setdefault(pm.group(1).lower(), value)
                i = _skip_space(s, i)
                if i >= n:
                    break
                if s[i] != ",":
                    if _PARAM.match(s, i) is None:
                        break
                    continue  # a missing comma between parameters
                k = i + 1
                while k < n and s[k] in " \t,":
                    k += 1
                i = k
                if _PARAM.match(s, k) is None:
                    break  # the next challenge starts here
        challenges.append(Challenge(scheme, params, token68))
    return challenges
