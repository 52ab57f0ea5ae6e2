"""The emulator's vocabulary: resource keys, API errors, resource types, request paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

JSON = dict[str, Any]
ResKey = tuple[str, str, str]  # group, version, plural
ObjKey = tuple[ResKey, str | None, str]

PODS: ResKey = ("", "v1", "pods")
CONFIGMAPS: ResKey = ("", "v1", "configmaps")
SERVICES: ResKey = ("", "v1", "services")
DEPLOYMENTS: ResKey = ("apps", "v1", "deployments")
EVENTS: ResKey = ("", "v1", "events")
NAMESPACES: ResKey = ("", "v1", "namespaces")
CRDS: ResKey = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def resource_key(api_version: str, plural: str) -> ResKey:
    group, _, version = api_version.rpartition("/")
    return (group, version, plural)


class ApiError(Exception):
    """An API error rendered as a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> JSON:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclass
class CelRule:
    """One x-kubernetes-validations rule of a CRD schema, compiled by cel-python."""

    rule: str
    message: str | None
    message_expression: str | None
    field_path: str | None
    program: Any
    message_program: Any


@dataclass
class ResourceType:
    key: ResKey
    kind: str
    namespaced: bool
    singular: str
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status_subresource: bool = False
    printer_columns: list[JSON] = field(default_factory=list)
    schema: JSON | None = None
    validator: jsonschema.Draft4Validator | None = None
    cel: dict[str, list[CelRule]] = field(default_factory=dict)  # schema path -> rules

    @property
    def api_version(self) -> str:
        g, v, _ = self.key
        return f"{g}/{v}" if g else v

    @property
    def plural(self) -> str:
        return self.key[2]


# The built-in resources: key, kind, namespaced, status subresource, short names.
BUILTINS: list[tuple[ResKey, str, bool, bool, list[str]]] = [
    (PODS, "Pod", True, True, ["po"]),
    (CONFIGMAPS, "ConfigMap", True, False, ["cm"]),
    (SERVICES, "Service", True, True, ["svc"]),
    (EVENTS, "Event", True, False, ["ev"]),
    (NAMESPACES, "Namespace", False, True, ["ns"]),
    (("", "v1", "secrets"), "Secret", True, False, []),
    (("", "v1", "serviceaccounts"), "ServiceAccount", True, False, ["sa"]),
    (("events.k8s.io", "v1", "events"), "Event", True, False, ["ev"]),
    (("coordination.k8s.io", "v1", "leases"), "Lease", True, False, []),
    (CRDS, "CustomResourceDefinition", False, True, ["crd"]),
    # Stored only: no controller runs their pods (tests set the status they need).
    (DEPLOYMENTS, "Deployment", True, True, ["deploy"]),
]


@dataclass
class LogEntry:
    """One watch event in a resource's event log."""

    rv: int
    type: str
    obj: JSON
    old: JSON | None
    at: float


@dataclass(frozen=True)
class ApiPath:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_api_path(path: str) -> ApiPath | None:
    """An object or collection URL, or None for discovery and anything else.

    (kmock's parser reads /api/v1/namespaces as "the namespace called nothing".)
    """
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    elif len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    return ApiPath(group, version, rest[0], namespace, name, sub)
