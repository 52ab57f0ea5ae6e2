"""Terraform, checked without a terraform binary: every file parses, every module call wires
exactly the module's variables, and the environments agree with kops and Thanos on names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ._infra import (
    ENVIRONMENTS,
    KOPS,
    TERRAFORM,
    THANOS,
    attr,
    clusters,
    dir_blocks,
    labelled_blocks,
    load_yaml,
    parse_tf,
    tf_dirs,
    tfvars,
)

MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md")
META_ARGS = {"source", "version", "providers", "count", "for_each", "depends_on"}
MODULES = sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())
ENV_DIRS = [TERRAFORM / "environments" / e for e in ENVIRONMENTS]
STACK_SOURCE = "../../modules/svoe-stack"


def test_terraform_tree_exists() -> None:
    assert {m.name for m in MODULES} >= {"data-lake", "glue-athena", "irsa", "ecr"}
    assert all(d.is_dir() for d in ENV_DIRS)


@pytest.mark.parametrize("path", sorted(TERRAFORM.rglob("*.tf")), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_tf_file_parses(path: Path) -> None:
    assert parse_tf(path), f"{path} parsed to nothing"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_module_layout_and_docs(module: Path) -> None:
    missing = [f for f in MODULE_FILES if not (module / f).is_file()]
    assert not missing, f"{module} lacks {missing}"
    variables = dir_blocks(module, "variable")
    outputs = dir_blocks(module, "output")
    assert outputs, f"{module} has no outputs"
    for name, body in variables.items():
        assert attr(body, "description"), f"{module.name}: variable {name} has no description"
        assert "type" in body, f"{module.name}: variable {name} has no type"
    for name, body in outputs.items():
        assert attr(body, "description"), f"{module.name}: output {name} has no description"
    # Variables and outputs live in their own files, where readers look for them.
    for tf in module.glob("*.tf"):
        doc = parse_tf(tf)
        if tf.name != "variables.tf":
            assert not doc.get("variable"), f"{tf}: declare variables in variables.tf"
        if tf.name != "outputs.tf":
            assert not doc.get("output"), f"{tf}: declare outputs in outputs.tf"
    # The README documents every input and output by name.
    readme = (module / "README.md").read_text()
    undocumented = [n for n in [*variables, *outputs] if f"`{n}`" not in readme]
    assert not undocumented, f"{module.name}/README.md does not mention {undocumented}"


def _module_calls() -> list[tuple[Path, str, dict[str, object]]]:
    calls = []
    for d in tf_dirs():
        for name, body in dir_blocks(d, "module").items():
            calls.append((d, name, body))
    return calls


CALLS = _module_calls()


def test_module_calls_found() -> None:
    callers = {d.relative_to(TERRAFORM).as_posix() for d, _, _ in CALLS}
    assert {"environments/dev", "environments/prod", "modules/svoe-stack", "modules/data-lake"} <= callers


@pytest.mark.parametrize(
    ("caller", "name", "body"), CALLS, ids=[f"{d.relative_to(TERRAFORM)}:{n}" for d, n, _ in CALLS]
)
def test_module_call_wires_variables(caller: Path, name: str, body: dict[str, object]) -> None:
    source = attr(body, "source")
    assert isinstance(source, str) and source.startswith("../"), f"{caller}:{name}: expected a local module source"
    target = (caller / source).resolve()
    assert target.is_dir(), f"{caller}:{name}: source {source} does not exist"
    declared = dir_blocks(target, "variable")
    required = {v for v, b in declared.items() if "default" not in b}
    passed = set(body) - META_ARGS
    assert not required - passed, (
        f"{caller.name}:{name} leaves required variables of {source} unset: {sorted(required - passed)}"
    )
    assert not passed - set(declared), (
        f"{caller.name}:{name} passes variables {source} does not declare: {sorted(passed - set(declared))}"
    )


@pytest.mark.parametrize("env_dir", ENV_DIRS, ids=lambda p: p.name)
def test_environment_backend_provider_and_vars(env_dir: Path) -> None:
    terraform_blocks = [b for tf in env_dir.glob("*.tf") for b in parse_tf(tf).get("terraform", [])]
    backends = [bk for b in terraform_blocks for bk in b.get("backend", [])]
    assert len(backends) == 1, f"{env_dir}: exactly one backend block expected"
    s3 = labelled_blocks({"backend": backends}, "backend").get("s3")
    assert s3 is not None, f"{env_dir}: backend must be s3"
    assert attr(s3, "encrypt") is True, f"{env_dir}: backend must encrypt state"
    assert attr(s3, "use_lockfile") is True or attr(s3, "dynamodb_table"), f"{env_dir}: backend needs a lock"
    assert f"/{env_dir.name}/" in attr(s3, "key"), f"{env_dir}: state key should name the environment"

    providers = [p for tf in env_dir.glob("*.tf") for p in parse_tf(tf).get("provider", [])]
    aws = labelled_blocks({"provider": providers}, "provider").get("aws")
    assert aws is not None and "region" in aws and "allowed_account_ids" in aws, f"{env_dir}: aws provider incomplete"

    declared = dir_blocks(env_dir, "variable")
    values = tfvars(env_dir / "terraform.tfvars")
    unset = {v for v, b in declared.items() if "default" not in b} - set(values)
    assert not unset, f"{env_dir}/terraform.tfvars does not set {sorted(unset)}"
    unknown = set(values) - set(declared)
    assert not unknown, f"{env_dir}/terraform.tfvars sets undeclared variables {sorted(unknown)}"
    assert values["environment"] == env_dir.name


def _assigns(hcl: str, name: str, value: str) -> bool:
    """`name = value` appears in the HCL text, whatever the alignment."""
    return re.search(rf"^\s*{re.escape(name)}\s*=\s*{re.escape(value)}\s*$", hcl, re.MULTILINE) is not None


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_environment_matches_kops_and_thanos(env: str) -> None:
    """The names Terraform creates are the names kops and the Thanos values use."""
    values = tfvars(TERRAFORM / "environments" / env / "terraform.tfvars")
    account, region = values["account_id"], values["region"]
    # The names live in modules/svoe-stack, which the environment calls once.
    stack = dir_blocks(TERRAFORM / "environments" / env, "module").get("stack")
    assert stack is not None and attr(stack, "source") == STACK_SOURCE, f"environments/{env} does not call svoe-stack"
    main = (TERRAFORM / "modules" / "svoe-stack" / "main.tf").read_text()

    # kops: one trusted issuer per cluster, the buckets kops-state creates.
    kops_names = sorted(c.values()["clusterName"] for c in clusters() if c.env == env)
    assert sorted(values["kops_clusters"]) == kops_names
    kops_env = load_yaml(KOPS / "values" / f"{env}.yaml")
    assert _assigns(main, "discovery_bucket", '"${local.name_prefix}-oidc-${var.account_id}"')
    assert kops_env["discoveryBucket"] == f"svoe-{env}-oidc-{account}"
    assert _assigns(main, "state_bucket_name", '"${local.name_prefix}-kops-state-${var.account_id}"')
    assert kops_env["stateStore"] == f"s3://svoe-{env}-kops-state-{account}"
    assert kops_env["stateStoreKmsAlias"] == f"alias/s3/svoe-{env}-kops-state-{account}"  # modules/s3-bucket alias
    assert kops_env["stateStoreRegion"] == region

    # Thanos: bucket and role (modules/irsa names it <name_prefix>-thanos).
    th = load_yaml(THANOS / "values" / f"{env}.yaml")
    assert _assigns(main, "name", '"${local.name_prefix}-thanos-${var.account_id}"')
    assert th["objstore"]["bucket"] == f"svoe-{env}-thanos-{account}"
    irsa_main = (TERRAFORM / "modules" / "irsa" / "main.tf").read_text()
    assert _assigns(irsa_main, "name", '"${var.name_prefix}-thanos"')
    assert th["serviceAccount"]["roleArn"] == f"arn:aws:iam::{account}:role/svoe-{env}-thanos"
    assert th["aws"]["region"] == region

    # The Thanos ServiceAccounts trusted by the role are the ones the chart creates.
    chart_values = load_yaml(THANOS / "chart" / "values.yaml")
    irsa_vars = (TERRAFORM / "modules" / "irsa" / "variables.tf").read_text()
    for sa in (chart_values["prometheus"]["serviceAccountName"], chart_values["serviceAccount"]["storageName"]):
        assert re.search(rf'namespace = "monitoring", name = "{sa}"', irsa_vars), f"IRSA trust lacks monitoring/{sa}"
