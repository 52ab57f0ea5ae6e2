"""kops cluster templates, rendered for every cluster of kops/values with Go templates (helm's
`tpl`, the engine of `kops toolbox template`), checked for what a clustermesh of private
clusters needs."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from ._infra import ENVIRONMENTS, TERRAFORM, Cluster, clusters, load_yaml, net, render_kops, tfvars

CLUSTERS = clusters()
IDS = [c.key for c in CLUSTERS]
FEED_LABEL = ("svoe.io/node-role", "feed")
FEED_TAINT = "svoe.io/feed=true:NoSchedule"
CILIUM_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    work = tmp_path_factory.mktemp("kops")
    return {c.key: render_kops(c, work) for c in CLUSTERS}


def _cluster_doc(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == "Cluster"]
    assert len(found) == 1, "exactly one kops Cluster per rendering"
    return found[0]


def _igs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "InstanceGroup"}


def test_inventory() -> None:
    assert {c.env for c in CLUSTERS} == set(ENVIRONMENTS)
    for env in ENVIRONMENTS:
        names = {c.name for c in CLUSTERS if c.env == env}
        assert "observer" in names and len(names) >= 2, f"{env}: needs feed clusters and an observer"


@pytest.mark.parametrize("cluster", CLUSTERS, ids=IDS)
def test_values_files_do_not_overlap(cluster: Cluster) -> None:
    """kops merges --values files; keeping their top-level keys disjoint makes the merge order moot."""
    seen: dict[str, Path] = {}
    for f in cluster.values_files:
        for key in load_yaml(f):
            assert key not in seen, f"{key} set in both {seen[key]} and {f}"
            seen[key] = f


@pytest.mark.parametrize("cluster", CLUSTERS, ids=IDS)
def test_rendered_cluster(cluster: Cluster, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered[cluster.key]
    v = cluster.values()
    assert {d["apiVersion"] for d in docs} == {"kops.k8s.io/v1alpha2"}
    c = _cluster_doc(docs)
    spec = c["spec"]
    assert c["metadata"]["name"] == v["clusterName"]
    assert spec["cloudProvider"] == "aws"
    assert spec["configBase"] == f"{v['stateStore']}/{v['clusterName']}"

    # Addresses come straight from the values (checked across clusters below).
    assert spec["networkCIDR"] == v["networkCIDR"]
    assert spec["podCIDR"] == v["podCIDR"]
    assert spec["serviceClusterIPRange"] == v["serviceCIDR"]
    nonmasq = net(spec["nonMasqueradeCIDR"])
    assert net(spec["podCIDR"]).subnet_of(nonmasq), "podCIDR must lie in nonMasqueradeCIDR"  # type: ignore[arg-type]
    assert net(spec["serviceClusterIPRange"]).subnet_of(nonmasq)  # type: ignore[arg-type]
    assert not net(spec["podCIDR"]).overlaps(net(spec["serviceClusterIPRange"]))
    assert not nonmasq.overlaps(net(spec["networkCIDR"])), "nonMasqueradeCIDR must not overlap the VPC"

    # Private topology: nodes and control plane only in Private subnets; Utility for LB/NAT/bastion.
    subnets = {s["name"]: s for s in spec["subnets"]}
    vpc = net(spec["networkCIDR"])
    for a, b in itertools.combinations(subnets.values(), 2):
        assert not net(a["cidr"]).overlaps(net(b["cidr"])), f"subnets {a['name']} and {b['name']} overlap"
    assert all(net(s["cidr"]).subnet_of(vpc) for s in subnets.values())  # type: ignore[arg-type]
    assert {s["type"] for s in subnets.values()} == {"Private", "Utility"}
    assert spec["topology"]["bastion"]["bastionPublicName"].endswith(v["clusterName"])

    # API and SSH only from admin networks.
    for field in ("kubernetesApiAccess", "sshAccess"):
        cidrs = spec[field]
        assert cidrs, f"{field} is empty"
        for cidr in cidrs:
            n = net(cidr)
            assert n.prefixlen >= 16, f"{field} {cidr} is open to the world or far too wide"

    # Cilium clustermesh identity.
    cilium = spec["networking"]["cilium"]
    assert cilium["clusterName"] == v["cilium"]["clusterName"] == cluster.key
    assert CILIUM_NAME.match(cilium["clusterName"]), "Cilium cluster names: <= 32 lower-case alphanumerics and '-'"
    assert isinstance(cilium["clusterID"], int) and 1 <= cilium["clusterID"] <= 255
    assert spec["kubeProxy"]["enabled"] is False and cilium["enableNodePort"] is True

    # IRSA plumbing matches terraform (modules/irsa trusts <bucket>.s3.<region>.amazonaws.com/<cluster>/discovery).
    sad = spec["serviceAccountIssuerDiscovery"]
    assert sad["discoveryStore"] == f"s3://{v['discoveryBucket']}/{v['clusterName']}/discovery"
    assert sad["enableAWSOIDCProvider"] is True
    assert spec["iam"]["useServiceAccountExternalPermissions"] is True
    assert spec["podIdentityWebhook"]["enabled"] is True
    stack_main = (TERRAFORM / "modules" / "svoe-stack" / "main.tf").read_text()  # what every environment calls
    assert '"${local.discovery_bucket}.s3.${var.region}.amazonaws.com/${c}/discovery"' in stack_main
    assert v["clusterName"] in tfvars(TERRAFORM / "environments" / cluster.env / "terraform.tfvars")["kops_clusters"]

    # Instance groups.
    igs = _igs(docs)
    for name, ig in igs.items():
        assert ig["metadata"]["labels"]["kops.k8s.io/cluster"] == v["clusterName"], name
        assert ig["spec"]["rootVolumeEncryption"] is True, name
        assert ig["spec"]["instanceMetadata"]["httpTokens"] == "required", f"{name}: IMDSv2 only"
        for s in ig["spec"]["subnets"]:
            assert s in subnets, f"{name}: unknown subnet {s}"
            wanted = "Utility" if ig["spec"]["role"] == "Bastion" else "Private"
            assert subnets[s]["type"] == wanted, f"{name} runs in {subnets[s]['type']} subnet {s}"
    control = [ig for ig in igs.values() if ig["spec"]["role"] == "ControlPlane"]
    assert len(control) in (1, 3), "etcd quorum needs 1 or 3 control-plane nodes"
    for etcd in spec["etcdClusters"]:
        assert {m["instanceGroup"] for m in etcd["etcdMembers"]} == {ig["metadata"]["name"] for ig in control}
        assert all(m["encryptedVolume"] for m in etcd["etcdMembers"])


@pytest.mark.parametrize("cluster", CLUSTERS, ids=IDS)
def test_feed_instance_group(cluster: Cluster, rendered: dict[str, list[dict[str, Any]]]) -> None:
    feed = [
        ig
        for ig in _igs(rendered[cluster.key]).values()
        if ig["spec"].get("nodeLabels", {}).get(FEED_LABEL[0]) == FEED_LABEL[1]
    ]
    assert len(feed) == 1, f"{cluster.key}: exactly one instance group labelled {FEED_LABEL[0]}={FEED_LABEL[1]}"
    spec = feed[0]["spec"]
    assert spec["role"] == "Node"
    assert spec["taints"] == [FEED_TAINT], "feed nodes keep everything but feed pods off"
    mip = spec["mixedInstancesPolicy"]
    assert mip["onDemandBase"] == 0 and mip["onDemandAboveBase"] == 0, "feed group must be all spot"
    assert len(mip["instances"]) >= 3, "spread spot capacity over several instance types"
    assert 0 <= spec["minSize"] <= spec["maxSize"]
    # No other group carries the feed label or taint.
    others = [
        ig
        for ig in _igs(rendered[cluster.key]).values()
        if ig is not feed[0]
        and (
            FEED_TAINT in ig["spec"].get("taints", [])
            or ig["spec"].get("nodeLabels", {}).get(FEED_LABEL[0]) == FEED_LABEL[1]
        )
    ]
    assert not others
    # Spot interruptions drain the node, giving feed pods their grace period to flush.
    assert _cluster_doc(rendered[cluster.key])["spec"]["nodeTerminationHandler"]["enabled"] is True


def _ranges(rendered: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
    ranges: list[tuple[str, str]] = []
    for key, docs in rendered.items():
        spec = _cluster_doc(docs)["spec"]
        ranges += [
            (f"{key} network", spec["networkCIDR"]),
            (f"{key} pod", spec["podCIDR"]),
            (f"{key} service", spec["serviceClusterIPRange"]),
        ]
    return ranges


def _clashes(ranges: list[tuple[str, str]]) -> list[str]:
    return [
        f"{a} {ca} / {b} {cb}" for (a, ca), (b, cb) in itertools.combinations(ranges, 2) if net(ca).overlaps(net(cb))
    ]


def test_cidrs_do_not_overlap_across_clusters(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Clustermesh routes pod and service addresses between clusters and peers the VPCs: no range
    of one cluster may overlap any range of another (dev and prod included, so they can be meshed)."""
    clashes = _clashes(_ranges(rendered))
    assert not clashes, "overlapping ranges: " + "; ".join(clashes)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_cilium_identity_unique_per_mesh(env: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    ids = [_cluster_doc(rendered[c.key])["spec"]["networking"]["cilium"] for c in CLUSTERS if c.env == env]
    assert len({c["clusterName"] for c in ids}) == len(ids)
    assert len({c["clusterID"] for c in ids}) == len(ids)


def test_overlap_check_catches_a_clash(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """A new cluster that reuses part of an existing pod range is reported."""
    ranges = _ranges(rendered)
    pod = next(cidr for name, cidr in ranges if name.endswith(" pod"))
    inside = str(next(net(pod).subnets(new_prefix=16)))
    clashes = _clashes([*ranges, ("new-cluster service", inside)])
    assert len(clashes) == 1 and "new-cluster service" in clashes[0]
