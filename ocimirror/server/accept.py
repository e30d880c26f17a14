"""Content negotiation for manifests: does the client's ``Accept`` allow the stored type?

Manifests are served exactly as stored, never converted, so negotiation is a yes/no question
about one media type. The rules are RFC 9110's (section 12.5.1):

* no ``Accept`` header (or only empty ones) accepts anything;
* several headers, and comma-separated lists in each, are one list of media ranges;
* the most specific range that matches decides (``type/subtype`` over ``type/*`` over
  ``*/*``), and ``q=0`` means "not acceptable";
* parameters other than ``q`` are ignored, letter case too; a lone ``*`` (sent by some Java
  clients) counts as ``*/*``; a malformed ``q`` counts as 1 and entries without a ``/`` are
  skipped, rather than refusing the whole request.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MediaRange", "acceptable", "parse_accept"]

#: A media range: (type, subtype, q). ``*`` stands for any.
MediaRange = tuple[str, str, float]

_CACHE_LIMIT = 1024
_parsed: dict[tuple[str, ...], tuple[MediaRange, ...] | None] = {}
_answers: dict[tuple[tuple[str, ...], str], bool] = {}


def parse_accept(values: Sequence[str]) -> tuple[MediaRange, ...] | None:
    """The media ranges of ``Accept`` header values; ``None`` when they accept anything."""
    ranges: list[MediaRange] = []
    for value in values:
        for item in value.split(","):
            media_type, *params = item.split(";")
            media_type = media_type.strip().lower()
            if not media_type:
                continue
            if media_type == "*":
                media_type = "*/*"
            main, slash, sub = media_type.partition("/")
            if not slash or not main or not sub:
                continue
            ranges.append((main.strip(), sub.strip(), _quality(params)))
    return tuple(ranges) if ranges else None


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() != "q":
            continue
        try:
            q = float(value.strip())
        except ValueError:
            return 1.0
        if q != q:  # NaN
            return 1.0
        return min(max(q, 0.0), 1.0)
    return 1.0


def _decide(ranges: tuple[MediaRange, ...] | None, media_type: str) -> bool:
    if ranges is None:
        return True
    main, _, sub = media_type.partition(";")[0].strip().lower().partition("/")
    best = -1
    q = 0.0
    for r_main, r_sub, r_q in ranges:
        if r_main == "*":
            rank = 0 if r_sub == "*" else -1
        elif r_main != main:
            rank = -1
        elif r_sub == "*":
            rank = 1
        else:
            rank = 2 if r_sub == sub else -1
        if rank > best:
            best, q = rank, r_q
        elif rank == best and rank >= 0:
            q = max(q, r_q)
    return best >= 0 and q > 0


def acceptable(values: Sequence[str], media_type: str) -> bool:
    """Whether ``Accept`` header ``values`` allow ``media_type`` (answers are memoised)."""
    key = (tuple(values), media_type)
    answer = _answers.get(key)
    if answer is None:
        ranges = _parsed.get(key[0])
        if ranges is None and key[0] not in _parsed:
            ranges = parse_accept(values)
            if len(_parsed) >= _CACHE_LIMIT:
                _parsed.clear()
            _parsed[key[0]] = ranges
        answer = _decide(ranges, media_type)
        if len(_answers) >= _CACHE_LIMIT:
            _answers.clear()
        _answers[key] = answer
    return answer
