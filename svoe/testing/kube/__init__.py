"""A Kubernetes API emulator for tests, e2e and benchmarks: kmock with an API server's manners.

For tests only: it needs the dev dependencies (kmock, jsonpatch, jsonschema, cel-python), and
nothing in the product imports it but `svoe bench operator`, when it runs.

kmock (0.8) stores objects and streams watch events, but it assigns no uid, resourceVersion or
generation, ignores generateName, label selectors and the status subresource, returns lists
without a kind and watch streams without a JSON content type. kopf needs uids and
resourceVersions (its finalizer patch is a JSON patch that tests the resourceVersion), kubectl
needs list kinds, content types, tables and CRD discovery. `ApiServer` subclasses kmock's
`KubernetesEmulator` and serves every object request itself:

- create: generateName, uid, resourceVersion, generation, creationTimestamp; 409 on conflict;
- CustomResourceDefinitions register their resources (discovery, short names, categories,
  printer columns) and validate custom resources like the API server: structural-schema
  defaulting and pruning, types/enums/patterns/bounds, list types, and CEL rules (cel-python);
- get / list / watch with label and field selectors, list kinds, server-side tables for kubectl,
  watch resume from a resourceVersion, bookmarks and `sendInitialEvents`;
- merge, strategic-merge (as merge) and JSON patches (a failed `test` is 422), PUT with
  optimistic concurrency, the status subresource, generation bumps on spec changes;
- delete with finalizers (deletionTimestamp, then removal when the last finalizer goes) and,
  optionally, the ownerReference garbage collector;
- optionally, graceful pod deletion: a pod deleted with a grace period keeps running with a
  deletionTimestamp until its kubelet deletes it again with gracePeriodSeconds=0 (e2e/local).

Discovery, the HTTP server and object storage (`.objects`, with histories) are kmock's.
`KubeEmulator` runs it on a background thread so synchronous tests, kubectl and a real operator
process can all talk to it through a kubeconfig.

The modules, each with one job:

- `model`: resource keys (`PODS`, ...), `ApiError`, `ResourceType`, request paths;
- `selectors`: label and field selectors, RFC 7386 merge patch;
- `schema`: CRD schemas: defaulting, pruning, OpenAPI validation, CEL rules, ratcheting;
- `registry`: resource types, stored objects, the resourceVersion counter, event logs;
- `store`: the object operations (create, get, list, update, patch, delete, garbage collection);
- `tables`: server-side tables and the JSONPath of printer columns;
- `server`: `ApiServer`, the HTTP handling: object requests, watches, discovery, OpenAPI;
- `emulator`: `KubeEmulator`, the threaded runner with a kubeconfig and an HTTP client.
"""

from svoe.testing.kube.emulator import KubeEmulator, pod_status
from svoe.testing.kube.model import (
    CONFIGMAPS,
    CRDS,
    DEPLOYMENTS,
    EVENTS,
    JSON,
    NAMESPACES,
    PODS,
    SERVICES,
    ApiError,
    ResKey,
    ResourceType,
    parse_api_path,
    resource_key,
)
from svoe.testing.kube.selectors import merge_patch, parse_field_selector, parse_label_selector
from svoe.testing.kube.server import ApiServer
from svoe.testing.kube.tables import jsonpath

__all__ = [
    "CONFIGMAPS",
    "CRDS",
    "DEPLOYMENTS",
    "EVENTS",
    "JSON",
    "NAMESPACES",
    "PODS",
    "SERVICES",
    "ApiError",
    "ApiServer",
    "KubeEmulator",
    "ResKey",
    "ResourceType",
    "jsonpath",
    "merge_patch",
    "parse_api_path",
    "parse_field_selector",
    "parse_label_selector",
    "pod_status",
    "resource_key",
]
