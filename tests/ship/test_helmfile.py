"""helmfile.yaml.gotmpl and helmfile.d/: every environment renders, every reference resolves.

No helmfile binary exists here; tests/ship/helmfile_state.py renders the Go templates (a subset
renderer that rejects what it does not know) and walks the states like helmfile does. The svoe
release's rendered values then go through the real `helm template` and kubernetes-validate.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import validate as kv_validate

from tests.ship.conftest import KUBE_VERSION, ROOT, helm, render_chart
from tests.ship.gotmpl import Renderer, TemplateError
from tests.ship.helmfile_state import ClusterState, cluster_states, environments

ENVS = ["dev", "prod"]
PINNED = re.compile(r"^\d+\.\d+\.\d+$")


def test_environments_are_dev_and_prod_with_shared_global_values() -> None:
    head = yaml.safe_load((ROOT / "helmfile.yaml.gotmpl").read_text().split("\n---\n")[0])
    assert set(head["environments"]) == set(ENVS)
    for spec in head["environments"].values():
        assert spec["values"][0] == "helmfile.d/environments/global.yaml"
    envs = environments()
    for env in ENVS:
        assert envs[env]["environment"] == env
        assert envs[env]["charts"] == envs["dev"]["charts"], "chart versions are global"


@pytest.mark.parametrize("env", ENVS)
def test_one_state_per_cluster_and_one_observer(env: str) -> None:
    states = cluster_states(env)
    clusters = [s.cluster for s in states]
    assert [c["name"] for c in clusters] == [c["name"] for c in environments()[env]["clusters"]]
    assert len({c["kubeContext"] for c in clusters}) == len(clusters)
    assert len({c["clusterId"] for c in clusters}) == len(clusters)
    for s in states:
        assert s.state["helmDefaults"]["kubeContext"] == s.cluster["kubeContext"]
        assert s.state["commonLabels"]["cluster"] == s.cluster["name"]
    observers = [s for s in states if "observer" in s.cluster["roles"]]
    assert len(observers) == 1
    assert any("feed" in s.cluster["roles"] for s in states)
    for s in states:
        thanos = s.release("thanos")
        # Query, query-frontend, store gateway and compactor come with observer.yaml, on the observer only.
        has_observer_values = any(f.name == "observer.yaml" for f in thanos.values_files)
        assert has_observer_values == (s in observers)


def test_cluster_names_match_the_kops_clusters() -> None:
    kops = ROOT / "kops" / "values"
    if not kops.exists():
        pytest.skip("kops/values does not exist")
    for env in ENVS:
        kops_clusters = {}
        for f in sorted((kops / env).glob("*.yaml")):
            v = yaml.safe_load(f.read_text())
            kops_clusters[v["cilium"]["clusterName"]] = (v["clusterName"], v["cilium"]["clusterID"])
        ours = {c["name"]: (c["kubeContext"], c["clusterId"]) for c in environments()[env]["clusters"]}
        assert ours == kops_clusters, f"{env}: helmfile clusters differ from kops/values/{env}/"


@pytest.mark.parametrize("env", ENVS)
def test_every_chart_and_values_file_resolves(env: str) -> None:
    for s in cluster_states(env):
        repos = {r["name"]: r for r in s.state["repositories"]}
        names = set()
        for rel in s.releases():
            names.add(rel.name)
            if rel.chart.startswith((".", "/")):
                chart_dir = (s.path.parent / rel.chart).resolve()
                assert (chart_dir / "Chart.yaml").exists(), f"{rel.name}: no chart at {chart_dir}"
                assert rel.version is None
            else:
                repo = rel.chart.split("/", 1)[0]
                assert repo in repos, f"{rel.name}: repository {repo} is not declared"
                assert rel.version and PINNED.match(rel.version), f"{rel.name}: version not pinned ({rel.version})"
            for need in rel.spec.get("needs", []):
                assert need.split("/")[-1] in {r.name for r in s.releases()}
            for f in rel.values_files:
                assert f.exists(), f"{s.cluster['name']}/{rel.name}: values file {f} does not exist"
                try:
                    values = s.render_values(f)
                except TemplateError as e:
                    pytest.fail(f"{f}: {e}")
                assert isinstance(values, dict) and values, f"{f} renders to nothing"
        assert names == {"svoe", "kube-prometheus-stack", "thanos", "dask"}


def svoe_values(s: ClusterState, tmp_path: Path) -> list[Path]:
    files = []
    for i, f in enumerate(s.release("svoe").values_files):
        out = tmp_path / f"{s.cluster['name']}-{i}.yaml"
        out.write_text(yaml.safe_dump(s.render_values(f)))
        files.append(out)
    return files


@pytest.mark.parametrize("env", ENVS)
def test_svoe_release_renders_and_validates_per_cluster(env: str, tmp_path: Path) -> None:
    for s in cluster_states(env):
        objs = render_chart(values_files=svoe_values(s, tmp_path), namespace=s.state["releases"][1]["namespace"])
        kinds = {o["kind"] for o in objs}
        feed = "feed" in s.cluster["roles"]
        assert ("Deployment" in kinds) == feed
        assert ("PodMonitor" in kinds) == feed
        assert ("ConfigMap" in kinds) == ("observer" in s.cluster["roles"]), "dashboards go where Grafana runs"
        for o in objs:
            # kubernetes-validate knows no custom resources; svoe's own are checked against the
            # svoe models in test_helmfile_feeds.py.
            if o["apiVersion"].startswith(("monitoring.coreos.com", "kopf.dev", "svoe.io")):
                continue
            kv_validate(o, KUBE_VERSION, strict=True)
        if feed:
            dep = next(o for o in objs if o["kind"] == "Deployment")
            image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
            aws = s.values["aws"]
            assert (
                image
                == f"{aws['accountId']}.dkr.ecr.{aws['region']}.amazonaws.com/svoe/operator:{s.values['imageTag']}"
            )
            sas = [o for o in objs if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "svoe-feed"]
            arn = sas[0]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            assert f"::{s.values['aws']['accountId']}:" in arn


@pytest.mark.parametrize("env", ENVS)
def test_thanos_release_renders_per_cluster(env: str) -> None:
    for s in cluster_states(env):
        rel = s.release("thanos")
        cmd = [helm(), "template", rel.name, str((s.path.parent / rel.chart).resolve()), "--namespace", rel.namespace]
        for f in rel.values_files:
            cmd += ["--values", str(f)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{s.cluster['name']}: {proc.stderr}"
        kinds = {d["kind"] for d in yaml.safe_load_all(proc.stdout) if d}
        assert ("Deployment" in kinds or "StatefulSet" in kinds) == ("observer" in s.cluster["roles"]), kinds


def test_kube_prometheus_stack_values_wire_svoe() -> None:
    for s in cluster_states("prod"):
        kps = s.release("kube-prometheus-stack")
        own = s.render_values(next(f for f in kps.values_files if f.name == "kube-prometheus-stack.yaml.gotmpl"))
        spec = own["prometheus"]["prometheusSpec"]
        for key in (
            "ruleSelectorNilUsesHelmValues",
            "serviceMonitorSelectorNilUsesHelmValues",
            "podMonitorSelectorNilUsesHelmValues",
        ):
            assert spec[key] is False
        allow = own["kube-state-metrics"]["metricLabelsAllowlist"]
        assert any("svoe.io/datafeed" in a and "app.kubernetes.io/component" in a for a in allow), (
            "FeedPodCrashLooping joins kube_pod_labels on these labels"
        )
        assert own["grafana"]["enabled"] == ("observer" in s.cluster["roles"])
        sidecar = own["grafana"]["sidecar"]["dashboards"]
        chart_values = yaml.safe_load((ROOT / "charts/svoe/values.yaml").read_text())["monitoring"]["dashboards"]
        assert (
            sidecar["label"] == chart_values["sidecarLabel"]
            and sidecar["labelValue"] == chart_values["sidecarLabelValue"]
        )


def test_renderer_rejects_what_it_does_not_know() -> None:
    r = Renderer(ROOT)
    with pytest.raises(TemplateError):
        r.render("{{ .Values.x | b64enc }}", {"Values": {"x": "a"}})
    with pytest.raises(TemplateError):
        r.render("{{ .Values.m }}", {"Values": {"m": {"a": 1}}})
    with pytest.raises(TemplateError):
        r.render("{{ if .Values.x }}", {"Values": {}})
    assert (
        r.render(
            "a {{- ` b` }} {{ .Values.n }}{{ if has 1 .Values.l }}!{{ else }}?{{ end }}", {"Values": {"n": 3, "l": [1]}}
        )
        == "a b 3!"
    )


@pytest.mark.parametrize("env", ENVS)
def test_lake_jobs_compaction_and_dask_fit_together(env: str, tmp_path: Path) -> None:
    for s in cluster_states(env):
        jobs, feed = s.values["lakeJobs"], "feed" in s.cluster["roles"]
        dask = s.release("dask")
        assert dask.installed == (feed and bool(jobs["dask"]))
        objs = render_chart(values_files=svoe_values(s, tmp_path), namespace=s.state["releases"][1]["namespace"])
        cronjobs = [o for o in objs if o["kind"] == "CronJob"]
        assert len(cronjobs) == (1 if feed and jobs["compaction"] else 0)
        if not cronjobs or not dask.installed:
            continue
        pod = cronjobs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        # The job reaches the scheduler the dask/dask chart creates (release "dask": dask-scheduler).
        assert f"--scheduler=tcp://dask-scheduler.{dask.namespace}:8786" in args
        assert dask.namespace == s.state["releases"][1]["namespace"]
        values = s.render_values(dask.values_files[0])
        assert values["worker"]["serviceAccountName"] == pod["serviceAccountName"]  # IRSA for the workers
        assert values["worker"]["image"]["repository"].endswith("/svoe/feedpod")
        assert values["jupyter"]["enabled"] is False
