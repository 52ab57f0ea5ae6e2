"""Resource bodies (kopf's views or plain dicts) -> the pydantic models, with the field named on failure. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from svoe.api.load import format_validation_error


def plain(value: Any) -> Any:
    """kopf's body views -> plain JSON data."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class InvalidSpec(ValueError):
    """A DataFeed or FeatureSet whose spec does not validate; the message names the fields and what is allowed."""


def parse_resource[M: BaseModel](model: type[M], body: Mapping[str, Any]) -> M:
    """A DataFeed or FeatureSet from its body; InvalidSpec when its spec does not validate."""
    meta = body.get("metadata") or {}
    doc = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": plain(body.get("spec") or {}),
    }
    try:
        return model.model_validate(doc)
    except ValidationError as err:
        raise InvalidSpec(format_validation_error(err).replace("\n", "; ")) from None
