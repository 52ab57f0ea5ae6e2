"""Kubernetes timestamps: RFC 3339 in UTC to the second, as metav1.Time renders them."""

from __future__ import annotations

import datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def rfc3339(when: datetime.datetime) -> str:
    """`when` (timezone-aware) as a Kubernetes timestamp, e.g. 2025-04-23T12:00:00Z."""
    return when.astimezone(datetime.UTC).strftime(FORMAT)


def now_rfc3339() -> str:
    """The current time as a Kubernetes timestamp."""
    return rfc3339(datetime.datetime.now(datetime.UTC))


def parse_rfc3339(ts: str) -> datetime.datetime:
    """A Kubernetes timestamp (as `rfc3339` writes it) as an aware UTC datetime."""
    return datetime.datetime.strptime(ts, FORMAT).replace(tzinfo=datetime.UTC)
