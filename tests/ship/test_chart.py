"""charts/svoe: helm lint/template, kubernetes-validate --strict, checkov, and the chart's contracts."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from kubernetes_validate import validate as kv_validate

from svoe.operator.config import OperatorConfig
from tests.ship.conftest import CHART, KUBE_VERSION, ROOT, helm, render_chart, run_checkov, tool

# Value sets that switch the chart's branches; every one must lint, render and validate.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {
        "operator": {"watchNamespace": "md-eu"},
        "feedServiceAccount": {"roleArns": {"md-eu": "arn:aws:iam::111122223333:role/svoe-dev-feed-eu"}},
    },
    "observer": {
        "operator": {"enabled": False},
        "monitoring": {
            "podMonitor": {"enabled": False},
            "serviceMonitor": {"enabled": False},
            "prometheusRule": {"enabled": False},
            "dashboards": {"namespace": "monitoring"},
        },
    },
    "compaction": {
        "compaction": {
            "enabled": True,
            "lake": "s3://svoe-dev-lake/md",
            "scheduler": "tcp://dask-scheduler.dask:8786",
            "serviceAccount": {"roleArn": "arn:aws:iam::111122223333:role/svoe-dev-compaction"},
            "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}],
        },
    },
    "pinned": {
        "image": {"digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
        "operator": {
            "replicas": 1,
            "extraArgs": ["--verbose"],
            "extraEnv": [{"name": "X", "value": "1"}],
            "feedCaConfigMap": "corp-ca:bundle.crt",
            "feedExtraEnv": {"AWS_ENDPOINT_URL": "http://minio:9000"},
        },
        "monitoring": {"labels": {"release": "kube-prometheus-stack"}},
    },
}

# Kinds of CRDs that kubernetes-validate has no schema for, and how each is checked instead.
CUSTOM_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule", "ClusterKopfPeering", "KopfPeering", "DataFeed"}


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


@pytest.fixture(scope="module")
def variants() -> dict[str, list[dict[str, Any]]]:
    return {name: render_chart(values) for name, values in VARIANTS.items()}


def test_helm_lint_strict() -> None:
    for name, values in VARIANTS.items():
        proc = subprocess.run(
            [
                helm(),
                "lint",
                "--strict",
                str(CHART),
                "--namespace",
                "svoe",
                "--kube-version",
                KUBE_VERSION,
                "--values",
                "-",
            ],
            input=yaml.safe_dump(values),
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"helm lint ({name}) failed:\n{proc.stdout}\n{proc.stderr}"


def test_every_builtin_object_validates_strictly(variants: dict[str, list[dict[str, Any]]]) -> None:
    assert KUBE_VERSION in kv_utils.all_versions() or "1.33" in {
        kv_utils.major_minor(v) for v in kv_utils.all_versions()
    }
    checked = 0
    for name, objs in variants.items():
        for obj in objs:
            if obj["kind"] in CUSTOM_KINDS:
                continue
            try:
                kv_validate(obj, KUBE_VERSION, strict=True)
            except Exception as e:
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} does not validate: {e}")
            checked += 1
    assert checked > 30


def test_kopf_peering_objects_match_their_crd(variants: dict[str, list[dict[str, Any]]]) -> None:
    crds = {
        c["spec"]["names"]["kind"]: c for c in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text())
    }
    seen = set()
    for objs in variants.values():
        for kind in ("ClusterKopfPeering", "KopfPeering"):
            for obj in by_kind(objs, kind):
                crd = crds[kind]
                version = next(v for v in crd["spec"]["versions"] if v["storage"])
                assert obj["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
                assert ("namespace" in obj["metadata"]) == (crd["spec"]["scope"] == "Namespaced")
                jsonschema.validate(obj, version["schema"]["openAPIV3Schema"])
                seen.add(kind)
    assert seen == {"ClusterKopfPeering", "KopfPeering"}


def test_monitoring_coreos_kinds(variants: dict[str, list[dict[str, Any]]]) -> None:
    """monitoring.coreos.com/v1 objects.

    The published schema (prometheus-operator's CRDs) is not available offline here: no PyPI
    package ships the CRD YAML (cloudcoil-models-prometheus-operator is pydantic models that
    ignore unknown fields; @kubernetes-models/prometheus-operator on npm ships compiled ajv
    validators that need a node toolchain CI does not install). So schema validation of these kinds
    is skipped; instead the rule groups go through `promtool check rules` (the parser Prometheus
    uses on them), and the fields the operator relies on are checked against docs/contracts.md.
    """
    objs = variants["defaults"]
    monitors = {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in by_kind(objs, "PodMonitor")}
    assert set(monitors) == {"feed", "featurizer"}
    featurizers = monitors["featurizer"]["spec"]
    assert featurizers["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "svoe",
        "app.kubernetes.io/component": "featurizer",  # svoe/operator/featureset_render.py
    }
    assert [(e["port"], e["path"]) for e in featurizers["podMetricsEndpoints"]] == [("metrics", "/metrics")]
    assert featurizers["namespaceSelector"] == {"any": True}
    pm = monitors["feed"]
    ep = pm["spec"]["podMetricsEndpoints"]
    assert [(e["port"], e["path"]) for e in ep] == [("metrics", "/metrics")]
    assert pm["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "svoe",
        "app.kubernetes.io/component": "feed",
    }
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in ep[0]["relabelings"]}
    assert relabel == {
        "datafeed": ["__meta_kubernetes_pod_label_svoe_io_datafeed"],
        "shard": ["__meta_kubernetes_pod_label_svoe_io_shard"],
    }
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    for m in by_kind(variants["namespaced"], "PodMonitor"):
        assert m["spec"]["namespaceSelector"] == {"matchNames": ["md-eu"]}

    sm = one(objs, "ServiceMonitor")
    svc = one(objs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in svc["spec"]["ports"]] == ["metrics"]
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True
    assert svc["spec"]["ports"][0]["port"] == 8090  # docs/contracts.md: the operator's metrics port

    for o in (
        by_kind(variants["pinned"], "PodMonitor")
        + by_kind(variants["pinned"], "ServiceMonitor")
        + by_kind(variants["pinned"], "PrometheusRule")
    ):
        assert o["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheusrule_is_monitoring_alerts_verbatim(chart_objects: list[dict[str, Any]], tmp_path: Path) -> None:
    rule = one(chart_objects, "PrometheusRule")
    source = yaml.safe_load((ROOT / "monitoring" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    # And what the chart ships passes the same parser Prometheus runs.
    f = tmp_path / "rendered-rules.yaml"
    f.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run([tool("promtool"), "check", "rules", str(f)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_chart_copies_equal_their_sources() -> None:
    """Helm reads only files inside the chart: tools/sync_chart_crds.sh keeps these copies."""
    assert (CHART / "files" / "alerts.yaml").read_bytes() == (ROOT / "monitoring" / "alerts.yaml").read_bytes()
    sources = sorted((ROOT / "monitoring" / "dashboards").glob("*.json"))
    copies = sorted((CHART / "files" / "dashboards").glob("*.json"))
    assert [p.name for p in copies] == [p.name for p in sources]
    for s, c in zip(sources, copies, strict=True):
        assert c.read_bytes() == s.read_bytes(), f"{c} differs from {s}: run tools/sync_chart_crds.sh"


@pytest.mark.parametrize("kind", ["datafeed", "featureset"])
def test_chart_crd_equals_generated_crd(variants: dict[str, list[dict[str, Any]]], kind: str) -> None:
    src = ROOT / "crds" / f"{kind}.yaml"
    if not src.exists():
        pytest.skip(f"crds/{kind}.yaml does not exist yet (`make crds` generates it); nothing to compare")
    copy = CHART / "crds" / f"{kind}.yaml"
    assert copy.exists(), f"the chart does not carry the {kind} CRD: run tools/sync_chart_crds.sh"
    assert copy.read_bytes() == src.read_bytes(), f"charts/svoe/crds/{kind}.yaml differs: run tools/sync_chart_crds.sh"
    rendered = [o for o in variants["defaults"] if o["kind"] == "CustomResourceDefinition"]
    assert f"{kind}s.svoe.io" in {o["metadata"]["name"] for o in rendered}


def test_sync_script_restores_the_copies(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    for rel in ("tools/sync_chart_crds.sh", "monitoring", "charts/svoe/files", "crds"):
        src = ROOT / rel
        if not src.exists():
            continue
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    (work / "charts/svoe/crds").mkdir(parents=True, exist_ok=True)
    (work / "crds").mkdir(exist_ok=True)
    (work / "crds" / "datafeed.yaml").write_text("# stand-in for the generated CRD\n")
    (work / "crds" / "featureset.yaml").write_text("# stand-in for the FeatureSet CRD\n")
    (work / "charts/svoe/files/alerts.yaml").write_text("stale\n")
    stale = work / "charts/svoe/files/dashboards/removed.json"
    stale.write_text("{}")
    subprocess.run(["bash", str(work / "tools/sync_chart_crds.sh")], check=True, capture_output=True)
    assert (work / "charts/svoe/crds/datafeed.yaml").read_text() == "# stand-in for the generated CRD\n"
    assert (work / "charts/svoe/crds/featureset.yaml").read_text() == "# stand-in for the FeatureSet CRD\n"
    assert (work / "charts/svoe/files/alerts.yaml").read_bytes() == (ROOT / "monitoring/alerts.yaml").read_bytes()
    assert not stale.exists()


def test_rbac_is_exactly_what_the_operator_uses(variants: dict[str, list[dict[str, Any]]]) -> None:
    def rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
        return {
            (g, r, v)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }

    common = {
        ("svoe.io", r, v)
        for r in ("datafeeds", "datafeeds/status", "featuresets", "featuresets/status")
        for v in ("get", "list", "watch", "patch", "update")
    }
    common.add(("svoe.io", "featuresets/finalizers", "update"))  # blockOwnerDeletion on the featurizer
    common |= {
        (g, r, v)
        for g, r in (("", "pods"), ("", "configmaps"), ("", "services"), ("apps", "deployments"))
        for v in ("create", "get", "list", "watch", "patch", "delete")
    }
    common |= {("", "events", v) for v in ("create", "patch")}
    common.add(("", "pods/proxy", "get"))  # the health reads (svoe/operator/health_reader.py)

    cluster = one(variants["defaults"], "ClusterRole")
    assert rules(cluster) == common | {
        ("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")
    } | {("", "namespaces", "list"), ("", "namespaces", "watch")}
    binding = one(variants["defaults"], "ClusterRoleBinding")
    sa = next(o for o in variants["defaults"] if o["kind"] == "ServiceAccount" and "operator" in o["metadata"]["name"])
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "svoe"}]
    assert binding["roleRef"]["name"] == cluster["metadata"]["name"]

    roles = by_kind(variants["namespaced"], "Role")
    assert {r["metadata"]["namespace"] for r in roles} == {"md-eu"}
    for r in roles:
        assert rules(r) == common | {("kopf.dev", "kopfpeerings", v) for v in ("get", "list", "watch", "patch")}
    assert not by_kind(variants["namespaced"], "ClusterRole")
    for objs in variants.values():
        for role in by_kind(objs, "ClusterRole") + by_kind(objs, "Role"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
                assert "coordination.k8s.io" not in rule["apiGroups"]  # kopf peering uses no leases
    assert not [o for o in variants["observer"] if o["kind"] in ("ClusterRole", "Role", "Deployment")]


def test_operator_deployment(variants: dict[str, list[dict[str, Any]]]) -> None:
    dep = one(variants["defaults"], "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["svoe"]
    assert c["args"][:2] == ["operator", "--all-namespaces"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert "--peering=svoe" in c["args"]
    assert one(variants["defaults"], "ClusterKopfPeering")["metadata"]["name"] == "svoe"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 8090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SVOE_FEED_IMAGE"] == "svoe-feedpod:0.1.0"
    assert env["SVOE_OPERATOR_METRICS_PORT"] == "8090"
    # featurizer.resources, as the operator reads it (svoe/operator/config.py).
    featurizer = OperatorConfig.from_env({"SVOE_FEATURIZER_RESOURCES": env["SVOE_FEATURIZER_RESOURCES"]})
    assert featurizer.resources["featurizer"].as_k8s() == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }

    # Restricted Pod Security Standard, field by field.
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 10000
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = c["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")

    ns_dep = one(variants["namespaced"], "Deployment")
    args = ns_dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=md-eu"]

    pinned = one(variants["pinned"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert pinned["image"] == "svoe-operator@sha256:" + "a" * 64
    assert "--verbose" in pinned["args"]
    assert not by_kind(variants["pinned"], "PodDisruptionBudget")  # one replica: no PDB to block drains


def test_feed_service_accounts(variants: dict[str, list[dict[str, Any]]]) -> None:
    feed = [o for o in variants["namespaced"] if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "svoe-feed"]
    assert {o["metadata"]["namespace"] for o in feed} == {"svoe", "md-eu"}
    arns = {
        o["metadata"]["namespace"]: o["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn") for o in feed
    }
    assert arns == {"svoe": None, "md-eu": "arn:aws:iam::111122223333:role/svoe-dev-feed-eu"}
    assert all(o["automountServiceAccountToken"] is False for o in feed)


def test_dashboard_configmaps(chart_objects: list[dict[str, Any]], variants: dict[str, list[dict[str, Any]]]) -> None:
    cms = [o for o in chart_objects if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]]
    assert len(cms) == 3
    sources = {p.stem: json.loads(p.read_text()) for p in (ROOT / "monitoring" / "dashboards").glob("*.json")}
    seen = {}
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = cm["data"].items()
        seen[key.removeprefix("svoe-").removesuffix(".json")] = json.loads(text)
    assert seen == sources
    obs = [o for o in variants["observer"] if o["kind"] == "ConfigMap"]
    assert {o["metadata"]["namespace"] for o in obs} == {"monitoring"}


def test_values_yaml_documents_every_key() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_.\-/]+):", line)
        if not m:
            continue
        prev = lines[i - 1].strip() if i else ""
        if not prev.startswith("#") and "#" not in line.split(":", 1)[1]:
            undocumented.append(f"line {i + 1}: {line.strip()}")
    assert not undocumented, "values.yaml keys without a comment:\n" + "\n".join(undocumented)


def test_notes_render(tmp_path: Path) -> None:
    # `helm template` never prints NOTES.txt and `helm install --dry-run` wants a cluster: render a
    # copy of the chart in which NOTES.txt is an ordinary template.
    chart = tmp_path / "svoe"
    subprocess.run(["cp", "-a", str(CHART), str(chart)], check=True)
    notes = chart / "templates" / "NOTES.txt"
    (chart / "templates" / "_notes-under-test.tpl").write_text('{{ define "notes" }}' + notes.read_text() + "{{ end }}")
    notes.unlink()
    (chart / "templates" / "notes-under-test.yaml").write_text('notes: {{ include "notes" . | toJson }}\n')
    for values, expected in (
        ({}, "DataFeeds and FeatureSets in all namespaces"),
        ({"operator": {"watchNamespace": "md-eu"}}, "DataFeeds and FeatureSets in namespace md-eu"),
    ):
        proc = subprocess.run(
            [
                helm(),
                "template",
                "svoe",
                str(chart),
                "--namespace",
                "svoe",
                "--show-only",
                "templates/notes-under-test.yaml",
                "--values",
                "-",
            ],
            input=yaml.safe_dump(values),
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        text = yaml.safe_load(proc.stdout)["notes"]
        assert expected in text
        assert "kubectl -n svoe rollout status deploy/svoe-operator" in text
        assert "FeedDisconnected" in text


def test_checkov_passes_on_rendered_chart(variants: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    for name, objs in variants.items():
        d = tmp_path / name
        d.mkdir()
        for i, obj in enumerate(objs):
            (d / f"{i:02d}-{obj['kind']}.yaml").write_text(yaml.safe_dump(obj))
    report = run_checkov(tmp_path, "kubernetes")
    failed = report["results"]["failed_checks"]
    assert not failed, "checkov failures:\n" + "\n".join(
        f"{f['check_id']} {f['resource']} ({f['file_path']})" for f in failed
    )
    skipped = report["results"]["skipped_checks"]
    # A skip is allowed only with a written reason (checkov.io/skipN: ID=reason).
    assert {s["check_id"] for s in skipped} <= {"CKV_K8S_15", "CKV_K8S_38", "CKV_K8S_43"}, skipped
    for s in skipped:
        assert len(s["check_result"].get("suppress_comment") or "") > 40, s
    assert report["summary"]["passed"] > 100


def parse_cli(argv: list[str]) -> None:
    """Parse argv with the real `svoe` argument parser; fail with its message if it rejects it."""
    import contextlib
    import io

    from svoe.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"`svoe {' '.join(argv)}` is rejected by svoe.cli (exit {e.code}): {err.getvalue().strip()}")


def test_operator_args_are_accepted_by_the_cli(variants: dict[str, list[dict[str, Any]]]) -> None:
    for name in ("defaults", "namespaced"):
        (c,) = one(variants[name], "Deployment")["spec"]["template"]["spec"]["containers"]
        assert c["command"] == ["svoe"]
        parse_cli(c["args"])


def test_compaction_cronjob_runs_the_cli_with_least_privilege(variants: dict[str, list[dict[str, Any]]]) -> None:
    assert not by_kind(variants["defaults"], "CronJob")  # off unless asked for
    objs = variants["compaction"]
    job = one(objs, "CronJob")
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["svoe"] and c["args"][:3] == ["lake", "compact", "s3://svoe-dev-lake/md"]
    assert "--scheduler=tcp://dask-scheduler.dask:8786" in c["args"]
    parse_cli(c["args"])
    sa = [o for o in objs if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == pod["serviceAccountName"]]
    assert (
        len(sa) == 1 and sa[0]["automountServiceAccountToken"] is False and pod["automountServiceAccountToken"] is False
    )
    assert sa[0]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/svoe-dev-compaction")
    bound = [s for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in o.get("subjects", [])]
    assert pod["serviceAccountName"] not in {s["name"] for s in bound}  # no Kubernetes API access at all


def test_compaction_without_a_lake_fails_to_render() -> None:
    res = subprocess.run(
        [str(helm()), "template", "svoe", str(CHART), "--set", "compaction.enabled=true"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode != 0 and "compaction.lake" in res.stderr


def test_feed_pod_settings_reach_the_operator_as_it_reads_them(variants: dict[str, list[dict[str, Any]]]) -> None:
    from svoe.operator.config import OperatorConfig

    (c,) = one(variants["pinned"], "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    config = OperatorConfig.from_env(env)
    assert config.feed_ca_configmap == ("corp-ca", "bundle.crt")
    assert config.feed_extra_env == {"AWS_ENDPOINT_URL": "http://minio:9000"}
    (d,) = one(variants["defaults"], "Deployment")["spec"]["template"]["spec"]["containers"]
    assert not {"SVOE_FEED_CA_CONFIGMAP", "SVOE_FEED_EXTRA_ENV"} & {e["name"] for e in d["env"]}
