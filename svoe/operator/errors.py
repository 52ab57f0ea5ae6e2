"""Typed errors of the Kubernetes API, as kopf's `_cogs/clients/errors.py` has them: callers catch
the case they mean (`ApiNotFoundError`) instead of comparing status codes."""

from __future__ import annotations


class ApiError(Exception):
    """A request the API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying as is: timeouts, conflicts, throttling and server errors."""
        return self.status in (408, 409, 425, 429) or self.status >= 500


class ApiClientError(ApiError):
    """4xx: the request was wrong for the object's current state."""


class ApiNotFoundError(ApiClientError):
    """404: the object (or its namespace) does not exist, or no longer does."""


class ApiConflictError(ApiClientError):
    """409: AlreadyExists on create, or a precondition (uid, resourceVersion) that failed."""


class ApiServerError(ApiError):
    """5xx."""


_BY_STATUS: dict[int, type[ApiError]] = {404: ApiNotFoundError, 409: ApiConflictError}


def api_error(status: int, reason: str, message: str) -> ApiError:
    cls = _BY_STATUS.get(status) or (ApiServerError if status >= 500 else ApiClientError)
    return cls(status, reason, message)
