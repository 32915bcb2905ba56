"""terraform/: the bucket, the IRSA role, the EKS cluster with its GPU node group, the KubeRay operator.

What runs here, without a cloud account:
- python-hcl2 parses every module: documented variables and outputs, public access block, encryption, lifecycle,
  the GPU taint, the IAM statements, local module sources only, pinned providers and charts, README in step.
- `terraform fmt -check`.
- `terraform init -backend=false` against the AWS provider filesystem mirror (no download) and `terraform
  validate` on every root module that needs only the AWS provider (roots needing another provider, like
  kuberay-operator with helm, are parsed only).
- `terraform plan` of terraform/aws with fake credentials, STS answered by the session's moto server: the
  rendered lifecycle rules, node groups and cluster settings, and the IAM policy JSON of the IRSA module (given
  literal inputs, so that the document is known at plan time) are checked for what they allow.
- checkov on terraform/: no failed check; each skip carries its reason in place.

terraform and the mirror come from the machine: TF mirror path in $STREAMMINE_TF_MIRROR (default /opt/tf-plugins);
tests that need them skip with the reason when they are missing. Everything terraform writes (.terraform/, lock
files, state, plans) goes to a temporary copy of terraform/, never into the checkout.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import textwrap

import pytest

from iac_tools import REPO, run_checkov

TF_DIR = os.path.join(REPO, "terraform")
ROOTS = ["aws", "kuberay-operator"]
MODULES = ["modules/bucket", "modules/irsa-role", "modules/eks"]
LAYOUT = {"input": "input/", "models": "models/", "embeddings": "embeddings/", "negatives": "negatives/"}
MIRROR = os.environ.get("STREAMMINE_TF_MIRROR", "/opt/tf-plugins")
AWS_MIRROR = os.path.join(MIRROR, "registry.terraform.io", "hashicorp", "aws")


# --- HCL parsing ----------------------------------------------------------------------------------------------------

def _norm(node):
    """python-hcl2 >= 7 keeps the quotes of string literals and block labels and adds __is_block__/__comments__
    keys; older releases do neither. Normalise to the old form: no quotes, no bookkeeping keys."""
    if isinstance(node, dict):
        return {_norm(k): _norm(v) for k, v in node.items() if not (isinstance(k, str) and k.startswith("__"))}
    if isinstance(node, list):
        return [_norm(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"':
        return node[1:-1]
    return node


def load_dir(rel: str) -> dict:
    """All .tf files of a module directory, merged: {block type: [blocks]} as python-hcl2 gives them."""
    import hcl2
    merged: dict = {}
    files = sorted(glob.glob(os.path.join(TF_DIR, rel, "*.tf")))
    assert files, f"no .tf files in terraform/{rel}"
    for path in files:
        with open(path) as f:
            for key, blocks in _norm(hcl2.load(f)).items():
                merged.setdefault(key, []).extend(blocks)
    return merged


def named(parsed: dict, kind: str) -> dict:
    """{name: body} of the variable/output/module blocks of a parsed directory."""
    out = {}
    for block in parsed.get(kind, []):
        out.update(block)
    return out


def resources(parsed: dict, rtype: str, kind: str = "resource") -> dict:
    """{name: body} of the resources (or data sources) of one type."""
    out = {}
    for block in parsed.get(kind, []):
        out.update(block.get(rtype, {}))
    return out


def locals_of(parsed: dict) -> dict:
    out = {}
    for block in parsed.get("locals", []):
        out.update(block)
    return out


def required_providers(parsed: dict) -> dict:
    out = {}
    for block in parsed.get("terraform", []):
        for rp in block.get("required_providers", []):
            out.update(rp)
    return out


def providers_needed(rel: str, seen: set | None = None) -> set:
    """Provider names a module needs, through its local modules too."""
    seen = set() if seen is None else seen
    rel = os.path.normpath(rel)
    if rel in seen:
        return set()
    seen.add(rel)
    parsed = load_dir(rel)
    needed = set(required_providers(parsed))
    for body in named(parsed, "module").values():
        needed |= providers_needed(os.path.join(rel, body["source"]), seen)
    return needed


# --- version constraints (the subset terraform modules here use) -----------------------------------------------------

def _vtuple(v: str) -> tuple:
    return tuple(int(x) for x in v.strip().split("."))


def satisfies(version: str, constraint: str) -> bool:
    v = _vtuple(version)
    for part in constraint.split(","):
        m = re.fullmatch(r"\s*(>=|<=|!=|~>|>|<|=)?\s*([0-9.]+)\s*", part)
        assert m, f"unparsed version constraint {constraint!r}"
        op, ref = m.group(1) or "=", _vtuple(m.group(2))
        padded = ref + (0,) * (len(v) - len(ref))
        ok = {">=": v >= padded, "<=": v <= padded, ">": v > padded, "<": v < padded, "=": v == padded,
              "!=": v != padded}.get(op)
        if op == "~>":  # ~> 5.70 allows >= 5.70, < 6.0; ~> 5.70.1 allows >= 5.70.1, < 5.71
            upper = ref[:-2] + (ref[-2] + 1,) if len(ref) > 1 else (ref[0] + 1,)
            ok = v >= padded and v[:len(upper)] < upper
        if not ok:
            return False
    return True


def mirror_aws_versions() -> list[str]:
    if not os.path.isdir(AWS_MIRROR):
        return []
    found = set()
    for entry in os.listdir(AWS_MIRROR):  # unpacked layout: VERSION/OS_ARCH/; packed: terraform-provider-aws_VERSION_OS_ARCH.zip
        m = re.fullmatch(r"(?:terraform-provider-aws_)?([0-9]+\.[0-9]+\.[0-9]+)(?:_[a-z0-9]+_[a-z0-9]+\.zip)?", entry)
        if m:
            found.add(m.group(1))
    return sorted(found, key=_vtuple)


# --- static checks (python-hcl2) -------------------------------------------------------------------------------------

def test_layout_and_readme_cover_every_module():
    for rel in ROOTS + MODULES:
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
            assert os.path.exists(os.path.join(TF_DIR, rel, name)), f"terraform/{rel}/{name} missing"
    found = {os.path.relpath(os.path.dirname(p), TF_DIR) for p in glob.glob(os.path.join(TF_DIR, "**", "*.tf"),
                                                                                recursive=True)}
    assert found == set(ROOTS + MODULES), f"unexpected module directories: {found ^ set(ROOTS + MODULES)}"
    readme = open(os.path.join(TF_DIR, "README.md")).read()
    for rel in ROOTS + MODULES:
        assert f"terraform/{rel}" in readme or f"`{rel}`" in readme, f"README does not describe {rel}"
    # the README's input/output tables name every variable and output of both root modules
    for rel in ROOTS:
        parsed = load_dir(rel)
        for kind in ("variable", "output"):
            for name in named(parsed, kind):
                assert f"`{name}`" in readme, f"README table lacks {kind} `{name}` of terraform/{rel}"


def test_every_variable_and_output_has_a_description():
    for rel in ROOTS + MODULES:
        parsed = load_dir(rel)
        for kind in ("variable", "output"):
            blocks = named(parsed, kind)
            assert blocks, f"terraform/{rel} declares no {kind}"
            for name, body in blocks.items():
                desc = body.get("description")
                assert isinstance(desc, str) and len(desc.strip()) >= 10, \
                    f"terraform/{rel}: {kind} {name!r} has no real description"
                if kind == "variable":
                    assert "type" in body, f"terraform/{rel}: variable {name!r} has no type"


def test_modules_are_local_and_providers_pinned():
    aws_constraints = set()
    for rel in ROOTS + MODULES:
        parsed = load_dir(rel)
        for name, body in named(parsed, "module").items():
            src = body["source"]
            assert src.startswith(("./", "../")), \
                f"terraform/{rel}: module {name} comes from {src!r}; only local modules (no registry download)"
        providers = required_providers(parsed)
        assert "aws" in providers, f"terraform/{rel} does not pin the AWS provider"
        for pname, spec in providers.items():
            assert spec.get("source") == f"hashicorp/{pname}", f"terraform/{rel}: provider {pname} source {spec}"
            assert re.search(r"[0-9]", spec.get("version", "")), f"terraform/{rel}: provider {pname} not pinned"
        aws_constraints.add(providers["aws"]["version"])
        for block in parsed.get("terraform", []):
            assert block.get("required_version"), f"terraform/{rel} sets no required_version"
    assert len(aws_constraints) == 1, f"modules disagree on the AWS provider version: {aws_constraints}"
    constraint = aws_constraints.pop()
    assert not satisfies("6.0.0", constraint), "the modules use the 5.x AWS provider schema (data.aws_region.name)"
    versions = mirror_aws_versions()
    if versions:
        assert any(satisfies(v, constraint) for v in versions), \
            f"no AWS provider in the mirror ({versions}) satisfies {constraint!r}"
    helm = required_providers(load_dir("kuberay-operator"))["helm"]["version"]
    assert satisfies("2.17.0", helm) and not satisfies("3.0.0", helm), \
        f"kuberay-operator uses helm provider 2.x block syntax; constraint {helm!r}"


def test_constraint_checker_itself():
    assert satisfies("5.100.0", ">= 5.70, < 6.0") and not satisfies("6.2.0", ">= 5.70, < 6.0")
    assert satisfies("5.100.0", "~> 5.70") and not satisfies("6.0.0", "~> 5.70")
    assert satisfies("2.17.3", "~> 2.17.0") and not satisfies("2.18.0", "~> 2.17.0")
    assert not satisfies("5.69.9", ">= 5.70")


def test_bucket_blocks_public_access_encrypts_and_expires():
    parsed = load_dir("modules/bucket")
    (pab,) = resources(parsed, "aws_s3_bucket_public_access_block").values()
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert pab.get(flag) is True, f"public access block: {flag} must be true, got {pab.get(flag)!r}"
    (own,) = resources(parsed, "aws_s3_bucket_ownership_controls").values()
    assert own["rule"][0]["object_ownership"] == "BucketOwnerEnforced"  # ACLs off
    (ver,) = resources(parsed, "aws_s3_bucket_versioning").values()
    assert ver["versioning_configuration"][0]["status"] == "Enabled"
    (sse,) = resources(parsed, "aws_s3_bucket_server_side_encryption_configuration").values()
    default = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == "aws:kms" and "aws_kms_key." in default["kms_master_key_id"]
    assert all(k.get("enable_key_rotation") is True for k in resources(parsed, "aws_kms_key").values())
    # TLS only
    (tls,) = resources(parsed, "aws_iam_policy_document", "data").values()
    deny = tls["statement"][0]
    assert deny["effect"] == "Deny" and deny["condition"][0]["variable"] == "aws:SecureTransport"
    assert deny["condition"][0]["values"] == ["false"]
    # the application's layout, and what expires
    assert locals_of(parsed)["prefixes"] == LAYOUT
    (lc,) = resources(parsed, "aws_s3_bucket_lifecycle_configuration").values()
    whole = lc["rule"][0]
    assert whole["filter"] == [{}], "the first rule applies to the whole bucket"
    assert whole["noncurrent_version_expiration"][0]["noncurrent_days"] == "${var.noncurrent_version_retention_days}"
    assert whole["abort_incomplete_multipart_upload"][0]["days_after_initiation"] \
        == "${var.abort_incomplete_multipart_upload_days}"
    expirations = locals_of(parsed)["expirations"]
    for name, var in (("models", "model_version_retention_days"), ("embeddings", "model_version_retention_days"),
                      ("negatives", "negatives_retention_days")):
        assert re.search(rf"\b{name}\s*=\s*var\.{var}\b", expirations), f"{name}/ does not expire after {var}"
    assert "input" not in expirations, "input/ (the user's corpora) must never expire"


def _allow_statements(parsed: dict):
    for name, doc in resources(parsed, "aws_iam_policy_document", "data").items():
        for st in doc.get("statement", []):
            if st.get("effect", "Allow") == "Allow":
                yield name, st


def test_iam_documents_grant_no_wildcards():
    for rel in MODULES:
        for doc, st in _allow_statements(load_dir(rel)):
            for action in st.get("actions", []):
                assert "*" not in action, f"terraform/{rel} {doc}: wildcard action {action!r}"
            res = st.get("resources", [])
            assert res != ["*"] and "*" not in (res if isinstance(res, list) else []), \
                f"terraform/{rel} {doc}: statement on every resource"


def test_irsa_policy_is_limited_to_the_bucket_prefixes():
    parsed = load_dir("modules/irsa-role")
    docs = resources(parsed, "aws_iam_policy_document", "data")
    statements = {st["sid"]: st for st in docs["access"]["statement"]}
    listing = statements["ListProjectPrefixes"]
    assert listing["actions"] == ["s3:ListBucket"] and listing["resources"] == ["${var.bucket_arn}"]
    assert [c["variable"] for c in listing["condition"]] == ["s3:prefix"], "listing must be conditioned on s3:prefix"
    for st in statements.values():
        for r in st["resources"] if isinstance(st["resources"], list) else [st["resources"]]:
            assert "var.bucket_arn" in r or r == "${var.kms_key_arn}", f"{st['sid']}: resource outside the bucket {r}"
            if "var.bucket_arn}/" in r:
                assert r.endswith("/${p}*\"]}"), f"{st['sid']}: object resource not per prefix: {r}"
    assert "var.read_write_prefixes" in statements["WriteProjectObjects"]["resources"]
    assert "read_only" not in statements["WriteProjectObjects"]["resources"]
    trust = docs["assume"]["statement"][0]
    assert trust["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert trust["principals"][0] == {"type": "Federated", "identifiers": ["${var.oidc_provider_arn}"]}
    subjects = {c["variable"]: c["values"] for c in trust["condition"]}
    assert subjects["${local.issuer}:sub"] == ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    assert subjects["${local.issuer}:aud"] == ["sts.amazonaws.com"]
    variables = named(parsed, "variable")
    assert variables["namespace"]["default"] == "streammine"
    assert variables["service_account"]["default"] == "streammine"
    # the root wires the bucket's own layout in: input/ read-only, the rest read-write
    irsa = named(load_dir("aws"), "module")["irsa"]
    assert irsa["read_only_prefixes"] == ["${module.bucket.prefixes.input}"]
    assert sorted(irsa["read_write_prefixes"]) == sorted(f"${{module.bucket.prefixes.{p}}}"
                                                         for p in ("models", "embeddings", "negatives"))
    assert not any(k in "".join(open(p).read() for p in glob.glob(os.path.join(TF_DIR, "**", "*.tf"),
                                                                   recursive=True))
                   for k in ("aws_iam_access_key", "access_key =", "secret_key =")), "no keys anywhere"


def test_eks_has_a_tainted_gpu_pool_and_a_closed_control_plane():
    parsed = load_dir("modules/eks")
    variables = named(parsed, "variable")
    groups = resources(parsed, "aws_eks_node_group")
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]
    taint = {k: v.split(".")[-1].rstrip("}") if v.startswith("${local.") else v for k, v in gpu["taint"][0].items()}
    resolved = {k: locals_of(parsed)["gpu_taint"][v] for k, v in taint.items()}
    assert resolved == {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
    assert gpu["ami_type"] == "${var.gpu_ami_type}" and "NVIDIA" in variables["gpu_ami_type"]["default"]
    assert gpu["labels"]["nvidia.com/gpu.present"] == "true"  # what the device plugin and k8s/ GPU workers select
    assert "taint" not in groups["cpu"] and "GPU" not in groups["cpu"]["ami_type"].upper()
    for g in groups.values():
        assert "remote_access" not in g, "no SSH access to nodes"
    (cluster,) = resources(parsed, "aws_eks_cluster").values()
    vpc = cluster["vpc_config"][0]
    assert vpc["endpoint_private_access"] is True
    assert vpc["endpoint_public_access"] == "${var.endpoint_public_access}"
    assert variables["endpoint_public_access"]["default"] is False
    assert cluster["encryption_config"][0]["resources"] == ["secrets"]
    assert set(variables["cluster_log_types"]["default"]) == {"api", "audit", "authenticator", "controllerManager",
                                                              "scheduler"}
    (oidc,) = resources(parsed, "aws_iam_openid_connect_provider").values()
    assert oidc["client_id_list"] == ["sts.amazonaws.com"]
    assert "tls" not in required_providers(parsed)


def test_kuberay_operator_root_is_pinned():
    parsed = load_dir("kuberay-operator")
    releases = resources(parsed, "helm_release")
    variables = named(parsed, "variable")
    op = releases["kuberay_operator"]
    assert op["chart"] == "kuberay-operator"
    assert op["repository"] == "https://ray-project.github.io/kuberay-helm/"
    assert op["version"] == "${var.kuberay_version}"
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", variables["kuberay_version"]["default"])
    assert op["namespace"] == "${var.operator_namespace}" and variables["operator_namespace"]["default"]
    assert op["create_namespace"] is True
    plugin = releases["nvidia_device_plugin"]
    assert plugin["chart"] == "nvidia-device-plugin" and plugin["version"] == "${var.nvidia_device_plugin_version}"
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", variables["nvidia_device_plugin_version"]["default"])
    assert "nvidia.com/gpu" in plugin["values"][0], "the device plugin must tolerate the GPU taint"
    # it needs helm, which cannot be installed here: parsed only, and the README says so
    assert providers_needed("kuberay-operator") == {"aws", "helm"}
    readme = open(os.path.join(TF_DIR, "README.md")).read()
    assert re.search(r"kuberay-operator[^\n]*(not|never)[^\n]*validate", readme, re.I) or \
        re.search(r"not validated[^\n]*kuberay-operator", readme, re.I), "README must say kuberay-operator is not validated"


def test_checkov_skips_carry_reasons():
    """Every in-place checkov skip names a check and says why (the test below counts them as checkov's skips)."""
    for path in glob.glob(os.path.join(TF_DIR, "**", "*.tf"), recursive=True):
        for line in open(path):
            if "checkov:skip" in line:
                m = re.search(r"#\s*checkov:skip=(CKV2?_[A-Z]+_[0-9]+):(.*)$", line)
                assert m, f"{path}: malformed skip {line.strip()!r}"
                assert len(m.group(2).strip()) >= 40, f"{path}: {m.group(1)} skipped without a real reason"


# --- terraform CLI ---------------------------------------------------------------------------------------------------

def _terraform() -> str:
    exe = shutil.which("terraform")
    if not exe:
        pytest.skip("terraform is not installed (needed for fmt/init/validate/plan)")
    return exe


@pytest.fixture(scope="module")
def tf_env(tmp_path_factory):
    """Environment for terraform: a CLI config that takes the AWS provider from the filesystem mirror and
    nothing else from the network, data and plugin caches in a temporary directory, no AWS identity."""
    _terraform()
    if not mirror_aws_versions():
        pytest.skip(f"no AWS provider in the terraform mirror {AWS_MIRROR} (set STREAMMINE_TF_MIRROR)")
    tmp = tmp_path_factory.mktemp("tf")
    cli = tmp / "cli.tfrc"
    cli.write_text(textwrap.dedent(f"""\
        provider_installation {{
          filesystem_mirror {{
            path    = {json.dumps(MIRROR)}
            include = ["registry.terraform.io/hashicorp/aws"]
          }}
          direct {{
            exclude = ["registry.terraform.io/hashicorp/aws"]
          }}
        }}
        """))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update(TF_CLI_CONFIG_FILE=str(cli), TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1",
               AWS_EC2_METADATA_DISABLED="true")
    return {"env": env, "tmp": tmp}


def tf(env: dict, cwd, *args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([_terraform(), *args, "-no-color"], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"terraform {' '.join(args)} in {cwd} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_terraform_fmt():
    exe = _terraform()
    env = dict(os.environ, TF_CLI_CONFIG_FILE=os.devnull, CHECKPOINT_DISABLE="1")
    proc = subprocess.run([exe, "fmt", "-check", "-recursive", "-diff", "-no-color", TF_DIR], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"terraform fmt would change:\n{proc.stdout[-3000:]}{proc.stderr[-1000:]}"


@pytest.fixture(scope="module")
def tf_copy(tf_env):
    """A copy of terraform/ to run terraform in (its .terraform/, lock files and state stay out of the repo)."""
    dst = tf_env["tmp"] / "terraform"
    shutil.copytree(TF_DIR, dst, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", ".terraform.lock.hcl"))
    return dst


@pytest.mark.slow
def test_init_and_validate_every_aws_only_root(tf_env, tf_copy):
    validated, parsed_only = [], []
    for rel in ROOTS:
        needed = providers_needed(rel)
        if needed != {"aws"}:
            parsed_only.append(rel)
            continue
        tf(tf_env["env"], tf_copy / rel, "init", "-backend=false", "-input=false")
        proc = tf(tf_env["env"], tf_copy / rel, "validate")
        assert "Success" in proc.stdout, proc.stdout
        assert "Warning" not in proc.stdout + proc.stderr, f"terraform/{rel}: {proc.stdout}{proc.stderr}"
        validated.append(rel)
    assert validated == ["aws"] and parsed_only == ["kuberay-operator"]
    assert not glob.glob(os.path.join(TF_DIR, "**", ".terraform*"), recursive=True), "terraform wrote into the repo"


BUCKET = "streammine-plan-test"
FIXED = {"bucket_arn": f"arn:aws:s3:::{BUCKET}",
         "kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555",
         "oidc_provider_arn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC123",
         "oidc_issuer_url": "https://oidc.eks.us-east-1.amazonaws.com/id/ABC123"}


@pytest.fixture(scope="module")
def plan(tf_env, tf_copy, s3_endpoint):
    """terraform plan of terraform/aws with fake credentials (nothing reaches AWS: STS, the only API a plan of new
    resources calls, is the moto server) plus the IRSA module with literal inputs, as JSON."""
    work = tf_env["tmp"] / "plan"
    shutil.copytree(tf_copy, work, ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl"))
    root = work / "aws"
    (root / "zz_test_override.tf").write_text(textwrap.dedent(f"""\
        terraform {{
          backend "local" {{
            path = "{work}/test.tfstate"
          }}
        }}

        provider "aws" {{
          access_key                  = "testing"
          secret_key                  = "testing"
          skip_credentials_validation = true
          skip_requesting_account_id  = true
          skip_metadata_api_check     = true
          endpoints {{
            sts = "{s3_endpoint}"
          }}
        }}
        """))
    (root / "zz_test_irsa.tf").write_text(textwrap.dedent(f"""\
        module "irsa_fixed" {{
          source            = "../modules/irsa-role"
          role_name         = "streammine-test"
          oidc_provider_arn = "{FIXED['oidc_provider_arn']}"
          oidc_issuer_url   = "{FIXED['oidc_issuer_url']}"
          bucket_arn        = "{FIXED['bucket_arn']}"
          kms_key_arn       = "{FIXED['kms_key_arn']}"
        }}

        output "test_policy" {{
          value = module.irsa_fixed.policy_json
        }}

        output "test_trust" {{
          value = module.irsa_fixed.assume_role_policy_json
        }}
        """))
    env = tf_env["env"]
    tf(env, root, "init", "-input=false")
    args = ["-var", f"bucket_name={BUCKET}", "-var", 'subnet_ids=["subnet-0aaa", "subnet-0bbb"]',
            "-var", "model_version_retention_days=45", "-var", "negatives_retention_days=20",
            "-var", "noncurrent_version_retention_days=9"]
    tf(env, root, "plan", "-input=false", "-out=tfplan", *args)
    shown = json.loads(tf(env, root, "show", "-json", "tfplan").stdout)
    return {"root": root, "env": env, "args": args, "json": shown}


def _planned(plan_json: dict) -> dict:
    """address => planned values of every resource in the plan."""
    out = {}

    def walk(module):
        for r in module.get("resources", []):
            out[r["address"]] = r.get("values", {})  # absent when every attribute is unknown
        for child in module.get("child_modules", []):
            walk(child)
    walk(plan_json["planned_values"]["root_module"])
    return out


@pytest.mark.slow
def test_plan_renders_bucket_rules(plan):
    res = _planned(plan["json"])
    pab = res["module.bucket.aws_s3_bucket_public_access_block.this"]
    assert all(pab[k] is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls",
                                        "restrict_public_buckets"))
    assert res["module.bucket.aws_s3_bucket.this"]["bucket"] == BUCKET
    rules = res["module.bucket.aws_s3_bucket_lifecycle_configuration.this"]["rule"]
    by_prefix, whole = {}, []
    for rule in rules:
        assert rule["status"] == "Enabled"
        prefix = (rule["filter"] or [{}])[0].get("prefix") or ""
        if prefix:
            assert not rule["noncurrent_version_expiration"] and not rule["abort_incomplete_multipart_upload"]
            by_prefix[prefix] = rule["expiration"][0]["days"]
        else:
            whole.append(rule)
    # the -var values of the fixture, carried through the root into the rendered rules
    assert by_prefix == {"models/": 45, "embeddings/": 45, "negatives/": 20}
    (w,) = whole
    assert w["noncurrent_version_expiration"][0]["noncurrent_days"] == 9
    assert w["abort_incomplete_multipart_upload"][0]["days_after_initiation"] == 2
    assert not w["expiration"], "no rule may expire current objects bucket-wide (input/ stays)"
    sse = res["module.bucket.aws_s3_bucket_server_side_encryption_configuration.this"]["rule"][0]
    assert sse["apply_server_side_encryption_by_default"][0]["sse_algorithm"] == "aws:kms"
    assert res["module.bucket.aws_kms_key.bucket"]["enable_key_rotation"] is True
    assert plan["json"]["planned_values"]["outputs"]["s3_urls"]["value"] == {
        name: f"s3://{BUCKET}/{prefix}" for name, prefix in LAYOUT.items()}


@pytest.mark.slow
def test_plan_renders_cluster_and_gpu_pool(plan):
    res = _planned(plan["json"])
    cluster = res["module.eks.aws_eks_cluster.this"]
    assert cluster["vpc_config"][0]["endpoint_public_access"] is False
    assert cluster["vpc_config"][0]["endpoint_private_access"] is True
    assert cluster["encryption_config"][0]["resources"] == ["secrets"]
    assert set(cluster["enabled_cluster_log_types"]) == {"api", "audit", "authenticator", "controllerManager",
                                                         "scheduler"}
    gpu = res["module.eks.aws_eks_node_group.gpu"]
    assert gpu["taint"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
    assert gpu["ami_type"] == "AL2023_x86_64_NVIDIA"
    assert gpu["labels"]["nvidia.com/gpu.present"] == "true"
    cpu = res["module.eks.aws_eks_node_group.cpu"]
    assert not cpu.get("taint") and cpu["ami_type"] == "AL2023_x86_64_STANDARD"
    assert res["module.eks.aws_cloudwatch_log_group.cluster"]["retention_in_days"] >= 365
    assert not any(k.startswith("module.irsa.aws_iam_access_key") for k in res)


@pytest.mark.slow
def test_plan_irsa_policy_allows_only_the_project_prefixes(plan):
    outputs = plan["json"]["planned_values"]["outputs"]
    policy = json.loads(outputs["test_policy"]["value"])
    bucket, key = FIXED["bucket_arn"], FIXED["kms_key_arn"]
    rw = {"models/", "embeddings/", "negatives/"}
    seen_objects = set()
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources_ = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        assert not any("*" in a for a in actions), f"wildcard action in {st}"
        assert "*" not in resources_, f"statement on every resource: {st}"
        for r in resources_:
            if r.startswith(bucket + "/"):
                prefix = r[len(bucket) + 1:]
                assert prefix.endswith("/*") and prefix[:-1] in LAYOUT.values(), f"object resource {r}"
                seen_objects.add(prefix[:-1])
                if any(a in actions for a in ("s3:PutObject", "s3:DeleteObject")):
                    assert prefix[:-1] in rw, f"the role may write {r}; input/ is read-only"
            else:
                assert r in (bucket, key), f"resource outside the bucket and its key: {r}"
        if "s3:ListBucket" in actions:
            assert resources_ == [bucket]
            allowed = st["Condition"]["StringLike"]["s3:prefix"]
            allowed = allowed if isinstance(allowed, list) else [allowed]
            assert allowed and all(any(p == pre or p == pre + "*" for pre in LAYOUT.values()) for p in allowed), \
                f"listing reaches beyond the project prefixes: {allowed}"
        if key in resources_:
            assert resources_ == [key] and set(actions) == {"kms:Decrypt", "kms:GenerateDataKey"}
            assert st["Condition"]["StringEquals"]["kms:ViaService"] == "s3.us-east-1.amazonaws.com"
    assert seen_objects == set(LAYOUT.values())
    writes = [st for st in policy["Statement"] if "s3:PutObject" in st["Action"]]
    assert len(writes) == 1 and sorted(writes[0]["Resource"]) == sorted(f"{bucket}/{p}*" for p in rw)

    trust = json.loads(outputs["test_trust"]["value"])
    (st,) = trust["Statement"]
    issuer = FIXED["oidc_issuer_url"].removeprefix("https://")
    assert st["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert st["Principal"] == {"Federated": FIXED["oidc_provider_arn"]}
    assert st["Condition"]["StringEquals"] == {f"{issuer}:sub": "system:serviceaccount:streammine:streammine",
                                              f"{issuer}:aud": "sts.amazonaws.com"}


@pytest.mark.slow
def test_plan_refuses_a_world_open_api_endpoint(plan):
    proc = tf(plan["env"], plan["root"], "plan", "-input=false", *plan["args"], "-var", "endpoint_public_access=true",
              "-var", 'public_access_cidrs=["0.0.0.0/0"]', check=False)
    assert proc.returncode != 0
    assert "0.0.0.0/0 is not accepted" in proc.stderr + proc.stdout, proc.stderr[-2000:]


# --- checkov ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_checkov_finds_nothing_unjustified():
    report = run_checkov(TF_DIR, "terraform")
    failed = report["results"].get("failed_checks", [])
    assert not failed, "checkov findings (fix, or justify in place with #checkov:skip=ID:reason):\n" + "\n".join(
        f"  {f['check_id']} {f['check_name']}: {f['resource']} ({f['file_path']}:{f['file_line_range']})"
        for f in failed)
    summary = report.get("summary", {})
    assert summary.get("parsing_errors") == 0, summary
    assert summary.get("resource_count", 0) >= 25 and summary.get("passed", 0) >= 80, \
        f"checkov scanned too little to mean anything: {summary}"
    skips = sum(open(p).read().count("checkov:skip=")
                for p in glob.glob(os.path.join(TF_DIR, "**", "*.tf"), recursive=True))
    assert summary.get("skipped") == skips, \
        f"checkov applied {summary.get('skipped')} skips, the files carry {skips}: a stale or misplaced skip comment"
