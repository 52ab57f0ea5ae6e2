"""Kubernetes timestamps: written as RFC 3339 in UTC to the second, as metav1.Time renders them;
read as any RFC 3339 time (the collectors' `/stats` carry milliseconds)."""

from __future__ import annotations

import datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def rfc3339(when: datetime.datetime) -> str:
    """`when` (timezone-aware) as a Kubernetes timestamp, e.g. 2025-04-23T12:00:00Z."""
    return when.astimezone(datetime.UTC).strftime(FORMAT)


def now_rfc3339() -> str:
    """The current time as a Kubernetes timestamp."""
    return rfc3339(datetime.datetime.now(datetime.UTC))


def parse_rfc3339(ts: str) -> datetime.datetime | None:
    """An RFC 3339 time (fractions of a second allowed; UTC if it names no zone) as an aware
    datetime, or None if it is not one."""
    try:
        t = datetime.datetime.fromisoformat(ts)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=datetime.UTC)
