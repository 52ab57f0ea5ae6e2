"""Typed API errors and spec errors: callers catch the case they mean, not a status code."""

from __future__ import annotations

from typing import Any

import pytest

from svoe.operator.controller import InvalidSpec, parse_feed
from svoe.operator.errors import ApiClientError, ApiConflictError, ApiError, ApiNotFoundError, ApiServerError, api_error


def test_status_codes_map_to_the_error_a_caller_catches() -> None:
    assert isinstance(api_error(404, "NotFound", "pods x"), ApiNotFoundError)
    assert isinstance(api_error(409, "AlreadyExists", "pods x"), ApiConflictError)
    assert type(api_error(422, "Invalid", "spec")) is ApiClientError
    assert isinstance(api_error(503, "ServiceUnavailable", ""), ApiServerError)
    err = api_error(409, "Conflict", "uid precondition failed")
    assert isinstance(err, ApiClientError) and isinstance(err, ApiError)
    assert (err.status, err.reason, err.message, err.transient) == (409, "Conflict", "uid precondition failed", True)
    assert not api_error(404, "NotFound", "").transient and api_error(500, "x", "").transient


def body(spec: dict[str, Any]) -> Any:
    return {"apiVersion": "svoe.io/v1alpha1", "kind": "DataFeed",
            "metadata": {"name": "demo", "namespace": "md", "uid": "u"}, "spec": spec}  # fmt: skip


def test_parse_feed_raises_with_the_field_and_what_is_allowed() -> None:
    feed = parse_feed(body({"exchange": "BINANCE", "channels": ["trades"], "symbols": ["BTC-USDT"]}))
    assert feed.spec.exchange == "BINANCE"
    with pytest.raises(InvalidSpec) as err:
        parse_feed(body({"exchange": "BINANCE", "channels": ["tradez"], "symbols": ["BTC-USDT"]}))
    assert "spec.channels" in str(err.value) and "trades" in str(err.value) and "\n" not in str(err.value)
