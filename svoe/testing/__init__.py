"""Test support for svoe, in the spirit of `kopf.testing`: for tests, e2e runs and benchmarks only.

- `svoe.testing.kube`: a Kubernetes API emulator (`KubeEmulator`, `ApiServer`) built on kmock;
- `svoe.testing.waiting`: `wait_for`, polling a probe until it returns something truthy.

`svoe.testing.kube` needs the dev dependencies (kmock, jsonpatch, jsonschema, cel-python), which a
production install does not have: nothing in the product imports this package, and importing
`svoe.testing.kube` outside a dev environment fails with an ImportError. `svoe.testing` itself and
`svoe.testing.waiting` use only the standard library.
"""
