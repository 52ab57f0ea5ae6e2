"""Test support for svoe, in the spirit of `kopf.testing`: for tests, e2e runs and benchmarks only.

- `svoe.testing.kube`: a Kubernetes API emulator (`KubeEmulator`, `ApiServer`) built on kmock;
- `svoe.testing.operator`: `OperatorProcess`, the real operator as a child process against it;
- `svoe.testing.waiting`: `wait_for`, polling a probe until it returns something truthy.

`svoe.testing.kube` needs the dev dependencies (kmock, jsonpatch, jsonschema, cel-python), which a
production install does not have: the product imports this package only inside `svoe bench
operator` when it runs (which then says to install them), and importing `svoe.testing.kube` outside
a dev environment fails with an ImportError. `svoe.testing` itself and `svoe.testing.waiting` use
only the standard library.
"""
