"""The svoe-thanos chart rendered for every cluster of kops/values, validated like the svoe chart
(kubernetes-validate --strict), and checked against the clustermesh it federates."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from ._infra import ENVIRONMENTS, THANOS, Cluster, clusters, helm, load_yaml, render_thanos, run, thanos_values_files

K8S_VERSION = "1.33.0"
CLUSTERS = clusters()
IDS = [c.key for c in CLUSTERS]
OBSERVER_WORKLOADS = {
    ("Deployment", "thanos-query"),
    ("Deployment", "thanos-query-frontend"),
    ("StatefulSet", "thanos-store"),
    ("StatefulSet", "thanos-compactor"),
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    out = {}
    for c in CLUSTERS:
        res = render_thanos(c)
        assert res.returncode == 0, f"helm template thanos/chart for {c.key} failed:\n{res.stderr}"
        out[c.key] = [d for d in yaml.safe_load_all(res.stdout) if d]
    return out


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _args(doc: dict[str, Any]) -> list[str]:
    return [a for c in doc["spec"]["template"]["spec"]["containers"] for a in c.get("args", [])]


@pytest.mark.parametrize("cluster", CLUSTERS, ids=IDS)
def test_helm_lint_strict(cluster: Cluster) -> None:
    cmd = [helm(), "lint", "--strict", str(THANOS / "chart"), "--namespace", "monitoring"]
    for f in thanos_values_files(cluster):
        cmd += ["--values", str(f)]
    res = run(cmd)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("cluster", CLUSTERS, ids=IDS)
def test_manifests_validate_strict(cluster: Cluster, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered[cluster.key]
    assert docs
    for d in docs:
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{cluster.key}: {d['kind']}/{d['metadata']['name']}: {e.message} at {list(e.path)}")
        assert d["metadata"]["namespace"] == "monitoring", f"{d['kind']}/{d['metadata']['name']}"


@pytest.mark.parametrize("cluster", CLUSTERS, ids=IDS)
def test_every_cluster_exports_its_sidecar(cluster: Cluster, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered[cluster.key]
    svc = _by_kind(docs, "Service")[f"thanos-sidecar-{cluster.key}"]
    assert svc["metadata"]["annotations"]["service.cilium.io/global"] == "true"
    assert svc["metadata"]["annotations"]["service.cilium.io/shared"] == "true"
    assert svc["spec"]["type"] == "ClusterIP", "Cilium global services need a ClusterIP"
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "prometheus"}
    assert svc["spec"]["ports"][0]["port"] == 10901

    # objstore from a Secret, credentials from IRSA only.
    secret = _by_kind(docs, "Secret")["thanos-objstore"]
    objstore = yaml.safe_load(secret["stringData"]["objstore.yml"])
    env = load_yaml(THANOS / "values" / f"{cluster.env}.yaml")
    assert objstore["type"] == "S3"
    assert objstore["config"]["bucket"] == env["objstore"]["bucket"]
    assert objstore["config"]["aws_sdk_auth"] is True
    assert not {"access_key", "secret_key", "session_token"} & set(objstore["config"]), "no static keys"
    sas = _by_kind(docs, "ServiceAccount")
    assert (
        sas["prometheus"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == env["serviceAccount"]["roleArn"]
    )

    workloads = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    if cluster.name == "observer":
        assert workloads == OBSERVER_WORKLOADS
    else:
        assert not workloads, "query path runs on the observer only"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_observer_queries_every_cluster(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    members = [c for c in CLUSTERS if c.env == env]
    docs = rendered[f"{env}-observer"]
    services = _by_kind(docs, "Service")
    deployments = _by_kind(docs, "Deployment")
    statefulsets = _by_kind(docs, "StatefulSet")
    query_args = _args(deployments["thanos-query"])
    for m in members:
        name = f"thanos-sidecar-{m.key}"
        svc = services[name]
        assert svc["metadata"]["annotations"]["service.cilium.io/global"] == "true"
        if m.name != "observer":
            # The observer's copy must not add (empty) local backends.
            assert svc["metadata"]["annotations"]["service.cilium.io/shared"] == "false"
            assert "selector" not in svc["spec"]
        assert f"--endpoint={name}.monitoring.svc.cluster.local:10901" in query_args
    assert "--endpoint=dnssrv+_grpc._tcp.thanos-store-headless.monitoring.svc.cluster.local" in query_args
    assert "--query.replica-label=prometheus_replica" in query_args
    assert services["thanos-store-headless"]["spec"]["clusterIP"] == "None"
    # Grafana reads the frontend (helmfile.d/values/kube-prometheus-stack.yaml.gotmpl: port 9090).
    assert services["thanos-query-frontend"]["spec"]["ports"][0]["port"] == 9090
    assert statefulsets["thanos-compactor"]["spec"]["replicas"] == 1, "one compactor per bucket"
    assert "--deduplication.replica-label=prometheus_replica" in _args(statefulsets["thanos-compactor"])

    # Bucket access with IRSA for store and compactor; none for query.
    role = load_yaml(THANOS / "values" / f"{env}.yaml")["serviceAccount"]["roleArn"]
    sas = _by_kind(docs, "ServiceAccount")
    assert sas["thanos-storage"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == role
    assert "annotations" not in sas["thanos-query"]["metadata"]
    for sts in statefulsets.values():
        pod = sts["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "thanos-storage"
        assert {"name": "objstore", "secret": {"secretName": "thanos-objstore"}} in pod["volumes"]
        assert "--objstore.config-file=/etc/thanos/objstore/objstore.yml" in _args(sts)
    for dep in deployments.values():
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "thanos-query"
    frontend = _args(deployments["thanos-query-frontend"])
    assert "--query-frontend.downstream-url=http://thanos-query.monitoring.svc.cluster.local:9090" in frontend
    # Every Thanos pod is covered by a NetworkPolicy.
    policies = _by_kind(docs, "NetworkPolicy")
    for w in [*deployments.values(), *statefulsets.values()]:
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert any(
            all(labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())
            for p in policies.values()
        ), f"{w['metadata']['name']} has no NetworkPolicy"


@pytest.mark.parametrize("cluster", CLUSTERS, ids=IDS)
def test_cluster_identity_is_one_everywhere(cluster: Cluster) -> None:
    """Cilium (kops), the Prometheus external labels and the chart's cluster/mesh agree."""
    kops = cluster.values()["cilium"]
    ident = load_yaml(THANOS / "values" / "clusters" / f"{cluster.key}.yaml")
    labels = ident["prometheus"]["prometheusSpec"]["externalLabels"]
    assert ident["cluster"] == {"name": kops["clusterName"], "id": kops["clusterID"]}
    assert labels == {"cluster": kops["clusterName"], "cluster_id": str(kops["clusterID"])}
    mesh = load_yaml(THANOS / "values" / f"{cluster.env}.yaml")["mesh"]["clusters"]
    assert {"name": kops["clusterName"], "id": kops["clusterID"]} in mesh


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_mesh_lists_exactly_the_kops_clusters(env: str) -> None:
    mesh = load_yaml(THANOS / "values" / f"{env}.yaml")["mesh"]["clusters"]
    assert sorted(m["name"] for m in mesh) == sorted(c.key for c in CLUSTERS if c.env == env)


def test_prometheus_sidecar_values_match_chart() -> None:
    """kube-prometheus-stack's sidecar reads the Secret and uses the ServiceAccount svoe-thanos makes."""
    kps = load_yaml(THANOS / "values" / "prometheus-sidecar.yaml")["prometheus"]
    chart = load_yaml(THANOS / "chart" / "values.yaml")
    assert kps["serviceAccount"] == {"create": False, "name": chart["prometheus"]["serviceAccountName"]}
    assert kps["prometheusSpec"]["thanos"]["objectStorageConfig"]["existingSecret"] == {
        "name": chart["objstore"]["secretName"],
        "key": "objstore.yml",
    }
    assert kps["prometheusSpec"]["replicaExternalLabelName"] == chart["replicaLabel"]
    assert kps["prometheusSpec"]["replicas"] >= 2


def test_chart_rejects_inconsistent_identity() -> None:
    eu = next(c for c in CLUSTERS if c.key == "prod-eu-1")
    res = render_thanos(eu, ["--set", "cluster.id=200"])
    assert res.returncode != 0 and "differs from mesh.clusters" in res.stderr
    res = render_thanos(eu, ["--set", "serviceAccount.roleArn="])
    assert res.returncode != 0 and "serviceAccount.roleArn is required" in res.stderr
