"""k8s/: the KubeRay manifests and their kustomize overlays, checked without a Kubernetes cluster.

What runs here:
- `kubectl kustomize` (or `kustomize build`) renders the base and each overlay; the expected objects come out, in
  the streammine namespace, with no placeholder left in an overlay.
- Every rendered RayJob and RayCluster is validated as a whole object against the OpenAPI v3 schema of KubeRay's
  CRD (vendored in tests/schemas/kuberay), the way the API server would: Kubernetes' extensions made explicit
  (int-or-string, nullable, list-map keys and sets), unknown fields rejected (kubectl's strict field validation),
  CEL rules refused (not evaluated here, so the manifests must not reach one). The KubeRay operator's own checks
  of names and specs (utils/validation.go) are mirrored for what the manifests use. Mutated copies show that the
  validation does fail.
- What the manifests must mean: no credential anywhere, the IRSA service account on every pod, requests and
  limits and a restricted security context on every container, the NetworkPolicy selecting every pod, a GPU group
  with GPU limits, node selector and toleration in prod-gpu and no GPU at all in dev-cpu; each RayJob entrypoint
  runs a script of jobs/ (mine.py, serve.py, online_trainer.py) as the image lays it out, with flags its parser
  accepts and the overlay's config file mounted where the driver runs (which streammine validates), and the mining
  configs' encoders and shards fit the cluster's worker groups (serve: with the trainer beside it).
- The continuous loop on the shared cluster: serve and the trainer run until stopped (no deadline), retry only in
  ways that leave the shared cluster alone (jobs/serve.py --restarts; KubeRay's backoffLimit would delete it),
  while one-shot mining never retries; the trainer reads serve's run and publishes the checkpoints serve follows,
  under the bucket prefixes the IAM role may write; in prod-gpu the trainer asks for a GPU, in dev-cpu for none.
- The image (k8s/image/Dockerfile): Ray version = manifests' rayVersion = the project's Ray; torch in the
  project's range.
- checkov (slow) on k8s/, the rendered overlays and each Ray pod template as a Pod (checkov does not look inside
  RayJob/RayCluster): no failed check; skips are justified in place and each one is applied.

kubectl (or kustomize) is a system tool: tests that render skip with the reason when it is missing.
"""
from __future__ import annotations

import copy
import functools
import importlib.metadata
import json
import math
import os
import re
import shlex
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from iac_tools import REPO, run_checkov

K8S = os.path.join(REPO, "k8s")
SCHEMAS = os.path.join(REPO, "tests", "schemas", "kuberay")
CRD_DIR = os.path.join(os.path.dirname(REPO), "shared", "schemas", "kuberay")  # the CRDs the schemas come from
DOCKERFILE = os.path.join(K8S, "image", "Dockerfile")
OVERLAYS = ["dev-cpu", "prod-gpu"]
NAMESPACE = "streammine"
SERVICE_ACCOUNT = "streammine"  # terraform/ trusts system:serviceaccount:streammine:streammine
EXPECTED_KINDS = sorted(["Namespace", "ServiceAccount", "NetworkPolicy", "ConfigMap", "RayJob", "RayJob",
                         "RayJob", "RayJob", "RayCluster"])
SHARED_CLUSTER = "streammine-shared"
SERVE_JOB, TRAINER_JOB = "streammine-serve-shared", "streammine-trainer-shared"
JOBS_DIR_SCRIPTS = {"jobs/mine.py": "mine", "jobs/serve.py": "serve", "jobs/online_trainer.py": "train"}
GPU = "nvidia.com/gpu"
# KubeRay's limits (ray-operator/controllers/ray/utils): a RayJob's cluster is named <job>-<6 chars>
MAX_NAME = {"RayJob": 47, "RayCluster": 53}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


# ---- rendering ------------------------------------------------------------------------------------------------

def _renderer() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


needs_kustomize = pytest.mark.skipif(_renderer() is None, reason="neither kubectl nor kustomize is installed "
                                     "(needed to render the kustomize overlays)")


@functools.lru_cache(maxsize=None)
def _render_text(path: str) -> str:
    proc = subprocess.run(_renderer() + [os.path.join(K8S, path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"rendering k8s/{path} failed:\n{proc.stderr}"
    return proc.stdout


def render(path: str) -> list[dict]:
    """The objects of a kustomization (k8s/base, k8s/overlays/NAME), as fresh dicts each call."""
    return [d for d in yaml.safe_load_all(_render_text(path)) if d]


def overlay(name: str) -> list[dict]:
    return render(f"overlays/{name}")


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name):
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def cluster_spec_of(docs, job):
    """The Ray cluster a RayJob runs on: its own rayClusterSpec, or the RayCluster its clusterSelector names."""
    if job["spec"].get("rayClusterSpec"):
        return job["spec"]["rayClusterSpec"]
    return one(docs, "RayCluster", job["spec"]["clusterSelector"]["ray.io/cluster"])["spec"]


def pod_templates(doc):
    """(role, pod template) of every pod a RayJob or RayCluster makes: submitter, head, each worker group."""
    spec = doc["spec"]
    out = []
    if doc["kind"] == "RayJob":
        if spec.get("submitterPodTemplate"):
            out.append(("submitter", spec["submitterPodTemplate"]))
        spec = spec.get("rayClusterSpec") or {}
    if spec.get("headGroupSpec"):
        out.append(("head", spec["headGroupSpec"]["template"]))
    for group in spec.get("workerGroupSpecs", []):
        out.append((group["groupName"], group["template"]))
    return out


def all_pod_templates(docs):
    return [(f"{d['kind']}/{d['metadata']['name']}/{role}", t) for d in docs if d["kind"] in ("RayJob", "RayCluster")
            for role, t in pod_templates(d)]


def quantity(value) -> float:
    """A Kubernetes resource quantity as a number (CPUs, bytes, GPUs)."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert m, f"not a quantity: {value!r}"
    number, suffix = float(m.group(1)), m.group(2)
    scale = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}
    assert suffix in scale, f"unknown quantity suffix in {value!r}"
    return number * scale[suffix]


def container(template, name=None):
    containers = template["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


# ---- KubeRay CRD schema validation ----------------------------------------------------------------------------

def _as_json_schema(node):
    """A CRD structural schema as plain JSON Schema: what Kubernetes' extensions mean, made explicit.

    - x-kubernetes-int-or-string: either type (the CRDs also carry the anyOf; added where one is missing);
    - nullable: null allowed;
    - an object with `properties` and no `additionalProperties` rejects other fields, as the API server does
      under strict field validation (kubectl's default), unless x-kubernetes-preserve-unknown-fields.
    """
    if not isinstance(node, dict):
        return node
    out = dict(node)
    for key in ("properties", "patternProperties"):
        if key in out:
            out[key] = {name: _as_json_schema(sub) for name, sub in out[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _as_json_schema(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_as_json_schema(sub) for sub in out[key]]
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _list_type(validator, list_type, instance, schema):
    """x-kubernetes-list-type: `map` items are unique by their x-kubernetes-list-map-keys, `set` items unique."""
    if not validator.is_type(instance, "array"):
        return
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        props = schema.get("items", {}).get("properties", {})
        seen = set()
        for item in instance:
            key = tuple(json.dumps(item.get(k, props.get(k, {}).get("default"))) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"duplicate entry with {dict(zip(keys, key))} in a list keyed by "
                                                 f"{keys}")
            seen.add(key)
    elif list_type == "set":
        items = [json.dumps(item, sort_keys=True) for item in instance]
        if len(items) != len(set(items)):
            yield jsonschema.ValidationError("duplicate items in a list of type set")


def _cel_rules(validator, rules, instance, schema):
    """CEL (x-kubernetes-validations) is not evaluated here: reaching such a field is an error, not a pass."""
    yield jsonschema.ValidationError("this field carries CEL rules this test cannot evaluate: "
                                     + "; ".join(r["rule"] for r in rules))


KubeValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel_rules})


@functools.lru_cache(maxsize=None)
def crd_validator(kind: str):
    with open(os.path.join(SCHEMAS, f"{kind.lower()}.v1.json")) as f:
        schema = _as_json_schema(json.load(f))
    KubeValidator.check_schema(schema)
    return KubeValidator(schema)


def kuberay_errors(doc) -> list[str]:
    """Why the API server (CRD schema) or the KubeRay operator (utils/validation.go) would refuse `doc`."""
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in crd_validator(doc["kind"]).iter_errors(doc)]
    errors += [f"metadata: {m}" for m in _metadata_errors(doc)]
    if not errors:  # the operator only ever sees what the API server accepted
        errors += [f"spec: {m}" for m in _operator_spec_errors(doc)]
    return errors


def _metadata_errors(doc):
    meta = doc.get("metadata", {})
    name = meta.get("name", "")
    if doc.get("apiVersion") != "ray.io/v1":
        yield f"apiVersion {doc.get('apiVersion')!r} is not ray.io/v1"
    if not DNS1035.match(name):
        yield f"name {name!r} is not a DNS-1035 label"
    if len(name) > MAX_NAME[doc["kind"]]:
        yield f"name {name!r} is longer than KubeRay's {MAX_NAME[doc['kind']]} characters"
    for key in ("labels", "annotations"):
        for k, v in (meta.get(key) or {}).items():
            if not isinstance(v, str):
                yield f"{key}[{k}] is not a string: {v!r}"


def _cluster_spec_errors(spec):
    if not spec["headGroupSpec"]["template"]["spec"].get("containers"):
        yield "headGroupSpec has no container"
    for group in spec.get("workerGroupSpecs", []):
        if not group["template"]["spec"].get("containers"):
            yield f"worker group {group['groupName']} has no container"
        if spec.get("enableInTreeAutoscaling") and group.get("suspend"):
            yield f"worker group {group['groupName']} cannot be suspended with the autoscaler on"
        low, high, start = group.get("minReplicas", 0), group.get("maxReplicas"), group.get("replicas", 0)
        if high is not None and not low <= start <= high:
            yield f"worker group {group['groupName']}: need minReplicas <= replicas <= maxReplicas"


def _operator_spec_errors(doc):
    spec = doc.get("spec", {})
    if doc["kind"] == "RayCluster":
        yield from _cluster_spec_errors(spec)
        return
    if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
        yield "a RayJob without shutdownAfterJobFinishes cannot be suspended"
    if spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
        yield "ttlSecondsAfterFinished needs shutdownAfterJobFinishes"
    if "deletionStrategy" in spec:
        yield "deletionStrategy needs the RayJobDeletionPolicy feature gate of the operator"
    selector = spec.get("clusterSelector")
    if not spec.get("rayClusterSpec") and not selector:
        yield "one of rayClusterSpec or clusterSelector must be set"
    if selector and not selector.get("ray.io/cluster"):
        yield "clusterSelector must name the cluster with ray.io/cluster"
    if selector and spec.get("backoffLimit", 0) > 0:
        # a retry deletes and recreates the job's cluster, here one the job does not own: KubeRay 1.5.1 deletes
        # it, operators with ray-project/kuberay#4527 (the vendored CRDs' snapshot) refuse the spec
        yield "a RayJob with a clusterSelector cannot retry (backoffLimit > 0)"
    if spec.get("submissionMode") == "SidecarMode" and (selector or spec.get("submitterPodTemplate")):
        yield "SidecarMode supports neither clusterSelector nor submitterPodTemplate"
    if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
        yield "activeDeadlineSeconds must be positive"
    if spec.get("backoffLimit", 0) < 0:
        yield "backoffLimit must be >= 0"
    if spec.get("runtimeEnvYAML"):
        try:
            yaml.safe_load(spec["runtimeEnvYAML"])
        except yaml.YAMLError as e:
            yield f"runtimeEnvYAML is not YAML: {e}"
    if spec.get("rayClusterSpec"):
        yield from _cluster_spec_errors(spec["rayClusterSpec"])


# ---- the image ------------------------------------------------------------------------------------------------

def dockerfile_args() -> dict:
    with open(DOCKERFILE) as f:
        return dict(re.findall(r"^ARG (\w+)=(\S+)$", f.read(), re.M))


def dockerfile_workdir() -> str:
    with open(DOCKERFILE) as f:
        [workdir] = re.findall(r"^WORKDIR (\S+)$", f.read(), re.M)
    return workdir


# ================================================================================================================
# rendering

@needs_kustomize
@pytest.mark.parametrize("path", ["base", "overlays/dev-cpu", "overlays/prod-gpu"])
def test_kustomizations_render_the_expected_objects(path):
    docs = render(path)
    assert sorted(d["kind"] for d in docs) == EXPECTED_KINDS
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NAMESPACE, f"{d['kind']}/{d['metadata']['name']}"
    assert one(docs, "Namespace", NAMESPACE)
    # the parts one can apply alone (kubectl apply -k DIR -l app.kubernetes.io/component=PART, k8s/README.md)
    parts = {(d["kind"], d["metadata"]["name"]): d["metadata"]["labels"]["app.kubernetes.io/component"] for d in docs}
    assert parts == {("Namespace", NAMESPACE): "setup", ("ServiceAccount", SERVICE_ACCOUNT): "setup",
                     ("NetworkPolicy", "streammine-ray"): "setup", ("ConfigMap", "streammine-config"): "setup",
                     ("RayJob", "streammine-mine"): "mine-job", ("RayCluster", SHARED_CLUSTER): "shared-cluster",
                     ("RayJob", "streammine-mine-shared"): "shared-job", ("RayJob", SERVE_JOB): "serve-job",
                     ("RayJob", TRAINER_JOB): "trainer-job"}
    configs = one(docs, "ConfigMap", "streammine-config")["data"]
    assert sorted(configs) == ["mine.yaml", "online_trainer.yaml", "serve.yaml"]
    if path != "base":  # the overlays replace every placeholder of the base
        assert "CHANGE-ME" not in _render_text(path)


# ================================================================================================================
# KubeRay CRD schemas

@needs_kustomize
@pytest.mark.parametrize("path", ["base", "overlays/dev-cpu", "overlays/prod-gpu"])
def test_ray_objects_are_valid_kuberay_resources(path):
    docs = [d for d in render(path) if d["kind"] in ("RayJob", "RayCluster")]
    assert len(docs) == 5
    for doc in docs:
        errors = kuberay_errors(doc)
        assert not errors, f"{path}: {doc['kind']}/{doc['metadata']['name']}:\n" + "\n".join(errors)


def _worker_group(doc):
    return (doc["spec"].get("rayClusterSpec") or doc["spec"])["workerGroupSpecs"][0]


def _misspell_min_replicas(doc):
    group = _worker_group(doc)
    group["minReplica"] = group.pop("minReplicas")


MUTATIONS = {
    # a misspelled field where the schema lists the fields: unknown field, and the required one is missing
    "misspelled field": (_misspell_min_replicas, ["Additional properties are not allowed ('minReplica'",
                                                  "'minReplicas' is a required property"]),
    "misspelled container field": (
        lambda d: container(_worker_group(d)["template"]).__setitem__("imagePullpolicy", "Always"),
        ["Additional properties are not allowed ('imagePullpolicy'"]),
    "wrong type": (lambda d: _worker_group(d).__setitem__("maxReplicas", "four"), ["'four' is not of type 'integer'"]),
    "bad quantity": (lambda d: container(_worker_group(d)["template"])["resources"]["limits"].__setitem__(
        "memory", "lots"), ["'lots' does not match"]),
    "wrong enum value": (lambda d: (d["spec"].get("rayClusterSpec") or d["spec"])["autoscalerOptions"].__setitem__(
        "upscalingMode", "Fast"), ["'Fast' is not one of"]),
    "duplicate list-map key": (lambda d: container(_worker_group(d)["template"]).__setitem__(
        "ports", [{"containerPort": 8080, "name": "a"}, {"containerPort": 8080, "name": "b"}]),
        ["duplicate entry"]),
    "field with CEL rules": (lambda d: d["spec"].__setitem__("deletionStrategy", {"deletionRules": []}),
                             ["CEL rules"]),
    "operator: ttl without shutdown": (lambda d: d["spec"].__setitem__("shutdownAfterJobFinishes", False),
                                       ["ttlSecondsAfterFinished needs shutdownAfterJobFinishes"]),
    "operator: name too long": (lambda d: d["metadata"].__setitem__("name", "streammine-" + "x" * 40),
                                ["longer than KubeRay's 47"]),
    "operator: replicas above max": (lambda d: _worker_group(d).__setitem__("replicas", 99),
                                     ["minReplicas <= replicas <= maxReplicas"]),
}


@needs_kustomize
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_validation_catches_broken_manifests(mutation):
    """The validation is not vacuous: each mutation of the prod RayJob (valid above) is refused, for its reason."""
    mutate, expected = MUTATIONS[mutation]
    job = copy.deepcopy(one(overlay("prod-gpu"), "RayJob", "streammine-mine"))
    assert not kuberay_errors(job)
    mutate(job)
    errors = "\n".join(kuberay_errors(job))
    for message in expected:
        assert message in errors, f"{mutation}: expected {message!r} among:\n{errors}"


def test_int_or_string_accepts_both_and_nothing_else():
    schema = _as_json_schema({"type": "object", "properties": {
        "q": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}],
              "pattern": "^[0-9]+(m|Gi)?$"}}})
    v = KubeValidator(schema)
    assert v.is_valid({"q": 2}) and v.is_valid({"q": "500m"})
    assert not v.is_valid({"q": "lots"}) and not v.is_valid({"q": 1.5}) and not v.is_valid({"other": 1})


def test_vendored_schemas_are_the_crds_v1_schemas():
    """tests/schemas/kuberay holds exactly the v1 openAPIV3Schema of the CRDs (where those are beside the checkout)."""
    if not os.path.isdir(CRD_DIR):
        pytest.skip(f"the KubeRay CRDs are not at {CRD_DIR}; the vendored schemas cannot be compared")
    import importlib.util
    spec = importlib.util.spec_from_file_location("kuberay_extract", os.path.join(SCHEMAS, "extract.py"))
    extract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extract)
    for kind, crd in extract.CRDS.items():
        with open(os.path.join(SCHEMAS, f"{kind}.v1.json")) as f:
            assert f.read() == extract.extract(os.path.join(CRD_DIR, crd)), \
                f"{kind}.v1.json is stale: run python tests/schemas/kuberay/extract.py {CRD_DIR}"
    with open(os.path.join(SCHEMAS, "README.md")) as f:
        readme = f.read()
    assert "Apache License 2.0" in readme and os.path.exists(os.path.join(SCHEMAS, "LICENSE"))


# ================================================================================================================
# what the manifests mean

CREDENTIAL_PATTERNS = [r"AKIA[0-9A-Z]{16}", r"ASIA[0-9A-Z]{16}", r"(?i)aws_secret_access_key",
                       r"(?i)aws_access_key_id", r"(?i)aws_session_token", r"(?i)secretKeyRef", r"(?i)secretRef",
                       r"(?i)\bkind:\s*Secret\b", r"(?i)password", r"(?i)BEGIN [A-Z ]*PRIVATE KEY"]


def _manifest_files():
    for root, _, files in os.walk(K8S):
        for name in files:
            if name.endswith((".yaml", ".yml")) or name.startswith("Dockerfile"):
                yield os.path.join(root, name)


@needs_kustomize
def test_no_credentials_anywhere():
    """Credentials come from IRSA at run time: no key, secret or Secret reference in any file or rendering."""
    texts = {os.path.relpath(p, REPO): open(p).read() for p in _manifest_files()}
    texts.update({f"rendered {o}": _render_text(f"overlays/{o}") for o in OVERLAYS})
    for where, text in texts.items():
        for pattern in CREDENTIAL_PATTERNS:
            assert not re.search(pattern, text), f"{where}: matches {pattern}"
    for o in OVERLAYS:
        docs = overlay(o)
        assert not by_kind(docs, "Secret")
        for where, t in all_pod_templates(docs):
            for c in t["spec"]["containers"] + t["spec"].get("initContainers", []):
                assert not [e for e in c.get("env", []) if e["name"].startswith("AWS_")], where
                assert not c.get("envFrom"), where


@needs_kustomize
@pytest.mark.parametrize("name", OVERLAYS)
def test_every_pod_runs_as_the_irsa_service_account(name):
    docs = overlay(name)
    sa = one(docs, "ServiceAccount", SERVICE_ACCOUNT)
    assert sa["metadata"]["namespace"] == NAMESPACE
    assert re.fullmatch(r"arn:aws:iam::[0-9]{12}:role/[\w+=,.@-]+",
                        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"])
    assert sa.get("automountServiceAccountToken") is False
    templates = all_pod_templates(docs)
    assert len(templates) == 8  # 4 submitters, 2 heads, 2 worker groups
    for where, t in templates:
        assert t["spec"].get("serviceAccountName") == SERVICE_ACCOUNT, where
        # the Kubernetes API token only where the Ray autoscaler sidecar (on the head) needs it
        needs_api = where.endswith("/head")
        assert t["spec"].get("automountServiceAccountToken") is needs_api, where


@needs_kustomize
@pytest.mark.parametrize("name", OVERLAYS)
def test_network_policy_admits_the_operator_from_its_own_namespace_only(name):
    """Every ingress rule naming a pod outside the namespace also names that pod's namespace by
    kubernetes.io/metadata.name (an empty namespaceSelector admits any pod, anywhere, that copies a label)."""
    [policy] = by_kind(overlay(name), "NetworkPolicy")
    rules = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    crossing = [p for p in rules if "namespaceSelector" in p]
    assert crossing, "no rule for the KubeRay operator"
    for peer in crossing:
        assert peer["namespaceSelector"].get("matchLabels") == {"kubernetes.io/metadata.name": "ray-system"}, peer
        assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}, peer
    # the operator's namespace is the one terraform installs it in
    with open(os.path.join(REPO, "terraform", "kuberay-operator", "variables.tf")) as f:
        assert re.search(r'default\s*=\s*"ray-system"', f.read())


@needs_kustomize
@pytest.mark.parametrize("name", OVERLAYS)
def test_every_container_has_resources_and_a_restricted_security_context(name):
    docs = overlay(name)
    [policy] = by_kind(docs, "NetworkPolicy")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for where, t in all_pod_templates(docs):
        pod_sc = t["spec"]["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        labels = (t.get("metadata") or {}).get("labels", {})
        assert selector.items() <= labels.items(), f"{where}: not selected by the NetworkPolicy"
        for c in t["spec"]["containers"]:
            res = c["resources"]
            for r in ("cpu", "memory"):
                assert quantity(res["requests"][r]) <= quantity(res["limits"][r]), f"{where}: {r}"
            if c["name"].startswith("ray-") and c["name"] != "ray-job-submitter":  # Ray sizes itself on the limit
                memory = quantity(res["limits"]["memory"])
                assert quantity(res["requests"]["memory"]) == memory, where
                # Ray's object store (30% of the memory by default) lives in /dev/shm: a memory emptyDir that
                # holds it (else Ray falls back to slow disk) and counts against the limit
                [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm"]
                [shm] = [v["emptyDir"] for v in t["spec"]["volumes"] if v["name"] == mount["name"]]
                assert shm["medium"] == "Memory" and 0.3 * memory <= quantity(shm["sizeLimit"]) < memory, where
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc.get("privileged") is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert c["imagePullPolicy"] == "Always", where
    for doc in by_kind(docs, "RayJob") + by_kind(docs, "RayCluster"):
        spec = doc["spec"].get("rayClusterSpec") or (doc["spec"] if doc["kind"] == "RayCluster" else None)
        if spec:  # the autoscaler sidecar KubeRay adds to the head is sized and restricted too
            assert spec["enableInTreeAutoscaling"] is True
            opts = spec["autoscalerOptions"]
            assert opts["resources"]["limits"] and opts["securityContext"]["allowPrivilegeEscalation"] is False


def _gpu_limit(template) -> float:
    return quantity(container(template)["resources"].get("limits", {}).get(GPU, 0))


@needs_kustomize
def test_prod_gpu_has_an_autoscaled_gpu_worker_group():
    docs = overlay("prod-gpu")
    clusters = [d["spec"]["rayClusterSpec"] for d in by_kind(docs, "RayJob") if d["spec"].get("rayClusterSpec")]
    clusters += [d["spec"] for d in by_kind(docs, "RayCluster")]
    assert len(clusters) == 2  # the one-shot RayJob's and the shared RayCluster
    for spec in clusters:
        assert spec["enableInTreeAutoscaling"] is True
        head = spec["headGroupSpec"]
        assert _gpu_limit(head["template"]) == 0 and head["rayStartParams"]["num-cpus"] == "0"
        assert not head["template"]["spec"].get("tolerations")  # the head stays off the GPU nodes
        [group] = spec["workerGroupSpecs"]
        t = group["template"]
        res = container(t)["resources"]
        assert _gpu_limit(t) >= 1 and res["requests"][GPU] == res["limits"][GPU]  # extended resources: equal
        assert t["spec"]["nodeSelector"], "GPU workers need a node selector for the GPU node group"
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in t["spec"]["tolerations"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"] and group["maxReplicas"] >= 1
        assert container(t)["image"].endswith("-gpu")
        assert container(head["template"])["image"].endswith("-cpu")


@needs_kustomize
def test_dev_cpu_has_no_gpu():
    docs = overlay("dev-cpu")
    assert GPU not in _render_text("overlays/dev-cpu").replace(f"{GPU}=true", "")  # (not even a toleration)
    for where, t in all_pod_templates(docs):
        assert _gpu_limit(t) == 0 and not t["spec"].get("tolerations") and not t["spec"].get("nodeSelector"), where
        assert container(t)["image"].endswith("-cpu"), where
    for doc in by_kind(docs, "RayJob") + by_kind(docs, "RayCluster"):
        spec = doc["spec"].get("rayClusterSpec") or (doc["spec"] if doc["kind"] == "RayCluster" else None)
        for group in (spec or {}).get("workerGroupSpecs", []):
            assert group["maxReplicas"] <= 3  # small
        if doc["kind"] == "RayJob":
            assert not doc["spec"].get("entrypointNumGpus"), doc["metadata"]["name"]


@functools.lru_cache(maxsize=None)
def job_script(rel: str):
    """A script of the repository's jobs/ as a module (its parser, and jobs/serve.py's supervisor)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("job_" + os.path.basename(rel)[:-3], os.path.join(REPO, rel))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entrypoint(job) -> tuple[str, list[str]]:
    """(script path in the repository, its arguments) of a RayJob's entrypoint: `python SCRIPT ...`, where the
    image (k8s/image/Dockerfile) lays the repository's jobs/ out under its WORKDIR."""
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "python", argv
    script = argv[1]
    workdir = dockerfile_workdir().rstrip("/") + "/"
    assert script.startswith(workdir), f"{script} is not under the image's WORKDIR {workdir}"
    rel = script[len(workdir):]
    assert os.path.isfile(os.path.join(REPO, rel)), f"{script}: no such file in the repository"
    assert rel in JOBS_DIR_SCRIPTS, f"{rel} is not one of the job scripts {sorted(JOBS_DIR_SCRIPTS)}"
    return rel, argv[2:]


def _entrypoint_resources(job) -> tuple[float, float]:
    """(CPUs, GPUs) KubeRay asks Ray to reserve for the job's driver (entrypointNumCpus / entrypointNumGpus)."""
    assert not job["spec"].get("entrypointResources"), "custom entrypoint resources: not modelled here"
    return float(job["spec"].get("entrypointNumCpus", 0)), float(job["spec"].get("entrypointNumGpus", 0))


def _driver_hosts(docs, job) -> list[tuple[str, dict]]:
    """(name, pod template) of the pods where Ray may start the job's driver: the head when the job reserves no
    entrypoint resources, else every worker group that has them (the heads here have num-cpus 0 and no GPU)."""
    spec = cluster_spec_of(docs, job)
    head = spec["headGroupSpec"]
    cpus, gpus = _entrypoint_resources(job)
    if not cpus and not gpus:
        return [("head", head["template"])]
    assert head["rayStartParams"].get("num-cpus") == "0" and _gpu_limit(head["template"]) == 0
    hosts = [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]
             if quantity(container(g["template"])["resources"]["limits"]["cpu"]) >= cpus
             and _gpu_limit(g["template"]) >= gpus]
    assert hosts, f"{job['metadata']['name']}: no worker group has the {cpus} CPUs and {gpus} GPUs its driver asks"
    return hosts


def _mounted_file(docs, job, path: str, tmp_path) -> str:
    """A local copy of the ConfigMap file at `path` as mounted in every pod the job's driver may run in (the same
    ConfigMap in each of them)."""
    config_dir, key = os.path.split(path)
    texts = set()
    for where, template in _driver_hosts(docs, job):
        mounts = [m for c in template["spec"]["containers"] for m in c.get("volumeMounts", [])
                  if m["mountPath"] == config_dir]
        assert len(mounts) == 1, f"{job['metadata']['name']}: {config_dir} is not mounted in {where}"
        [volume] = [v for v in template["spec"]["volumes"] if v["name"] == mounts[0]["name"]]
        data = one(docs, "ConfigMap", volume["configMap"]["name"])["data"]
        assert key in data, f"{job['metadata']['name']}: {path} is not in the ConfigMap mounted in {where}"
        texts.add(data[key])
    [text] = texts
    local = tmp_path / f"{job['metadata']['name']}-{key}"
    local.write_text(text)
    return str(local)


def _job_config(docs, job, tmp_path):
    """The mining config a mining RayJob (jobs/mine.py or jobs/serve.py) ends up with: its flags over the overlay's
    ConfigMap file, built and validated by streammine itself."""
    from streammine.cli import build_parser, overrides_from_args
    from streammine.config import MineConfig

    rel, args = _entrypoint(job)
    command = JOBS_DIR_SCRIPTS[rel]
    assert command in ("mine", "serve"), f"{job['metadata']['name']} does not mine: {rel}"
    if command == "serve":  # jobs/serve.py's own flags (--restarts ...), then those of `streammine serve`
        _, args = job_script(rel).supervisor_parser().parse_known_args(args)
    parsed = build_parser().parse_args([command, *args])
    assert parsed.input.startswith("s3://") and parsed.output.startswith("s3://")
    return MineConfig.from_sources(_mounted_file(docs, job, parsed.config, tmp_path), overrides_from_args(parsed))


def _trainer_config(docs, job, tmp_path):
    """The online trainer's config of a RayJob running jobs/online_trainer.py: --set over the ConfigMap file."""
    from streammine.config import parse_set_items
    from streammine.train import OnlineTrainerConfig

    rel, args = _entrypoint(job)
    assert JOBS_DIR_SCRIPTS[rel] == "train", f"{job['metadata']['name']} is not the trainer: {rel}"
    parsed = job_script(rel).build_parser().parse_args(args)
    return OnlineTrainerConfig.from_sources(_mounted_file(docs, job, parsed.config, tmp_path),
                                            parse_set_items(parsed.set))


def _mining_jobs(docs):
    return [j for j in by_kind(docs, "RayJob") if JOBS_DIR_SCRIPTS[_entrypoint(j)[0]] in ("mine", "serve")]


@needs_kustomize
@pytest.mark.parametrize("name", OVERLAYS)
def test_entrypoints_run_the_jobs_with_a_valid_config(name, tmp_path):
    docs = overlay(name)
    jobs = by_kind(docs, "RayJob")
    assert sorted(JOBS_DIR_SCRIPTS[_entrypoint(j)[0]] for j in jobs) == ["mine", "mine", "serve", "train"]
    outputs = set()
    for job in _mining_jobs(docs):
        cfg = _job_config(docs, job, tmp_path)
        assert cfg.input.path.startswith("s3://") and "/input/" in cfg.input.path  # terraform's read-only prefix
        assert "/negatives/" in cfg.output.path                                    # ... and the outputs' one
        outputs.add(cfg.output.path)
    assert len(outputs) == len(_mining_jobs(docs))  # two jobs never write to the same output
    trainer = _trainer_config(docs, one(docs, "RayJob", TRAINER_JOB), tmp_path)
    assert trainer.feed in outputs
    for job in jobs:
        if job["spec"].get("clusterSelector"):
            assert job["spec"]["clusterSelector"] == {"ray.io/cluster": SHARED_CLUSTER}
            assert one(docs, "RayCluster", SHARED_CLUSTER)
            assert not job["spec"].get("shutdownAfterJobFinishes")  # it must not tear the shared cluster down
        else:
            assert job["metadata"]["name"] == "streammine-mine" and job["spec"]["shutdownAfterJobFinishes"] is True


@needs_kustomize
@pytest.mark.parametrize("name", OVERLAYS)
def test_mining_config_fits_the_worker_groups(name, tmp_path):
    """The encoder plan streammine makes from each mining job's config can be scheduled on the worker groups.

    With the autoscaler, the workers may be down when the plan is made, so the config pins the encoder count and
    per-actor resources; their requests must fit a worker pod, and all of them the groups at maxReplicas. serve
    shares its cluster with the online trainer, whose driver reserves its entrypoint CPUs and GPUs, and keeps the
    old version's shards up while the next version's are built: both count against serve's room."""
    from streammine.encode.plan import LOCAL_TASK_CPUS, MINER_CPUS, ClusterView, plan_encoders

    docs = overlay(name)
    trainer_cpus, trainer_gpus = _entrypoint_resources(one(docs, "RayJob", TRAINER_JOB))
    for job in _mining_jobs(docs):
        cfg = _job_config(docs, job, tmp_path)
        serve = JOBS_DIR_SCRIPTS[_entrypoint(job)[0]] == "serve"
        spec = cluster_spec_of(docs, job)
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        groups = [(g["maxReplicas"], quantity(container(g["template"])["resources"]["limits"]["cpu"]),
                   _gpu_limit(g["template"])) for g in spec["workerGroupSpecs"]]
        if spec["enableInTreeAutoscaling"]:
            e = cfg.encoder
            assert e.num_actors > 0 and e.cpus_per_actor is not None and e.gpus_per_actor is not None, \
                "an autoscaled cluster needs the encoder count and resources pinned in the config"
        view = ClusterView(cpus=sum(n * c for n, c, _ in groups), gpus=sum(n * g for n, _, g in groups),
                           nodes=1 + sum(n for n, _, _ in groups), host_cpus=1)
        plan = plan_encoders(cfg.encoder, view, miner_actors=cfg.run.miner_actors)
        assert plan.on_gpu is (name == "prod-gpu")

        def per_node(cpus, gpus):
            fit_cpu = math.floor(cpus / plan.cpus_per_actor) if plan.cpus_per_actor else math.inf
            fit_gpu = math.floor(gpus / plan.gpus_per_actor) if plan.gpus_per_actor else math.inf
            return min(fit_cpu, fit_gpu)

        assert plan.num_actors <= sum(n * per_node(c, g) for n, c, g in groups), \
            f"{plan.num_actors} encoders do not fit the worker groups {groups}"
        # the index shards ask for CPUs (so they never land on the head, which has none) and fit a worker
        assert 0 < cfg.index.cpus_per_shard <= max(c for _, c, _ in groups)
        shard_sets = 2 if serve else 1
        demand = plan.num_actors * plan.cpus_per_actor + shard_sets * cfg.index.shards * cfg.index.cpus_per_shard \
            + LOCAL_TASK_CPUS + MINER_CPUS * cfg.run.miner_actors + (trainer_cpus if serve else 0)
        assert demand <= view.cpus, f"{job['metadata']['name']}: {demand} CPUs asked, {view.cpus} at maxReplicas"
        if serve:
            gpu_demand = plan.num_actors * plan.gpus_per_actor + trainer_gpus
            assert gpu_demand <= view.gpus, f"serve and the trainer ask {gpu_demand} GPUs, {view.gpus} at maxReplicas"


# ================================================================================================================
# the continuous loop: serve and the online trainer on the shared cluster

@needs_kustomize
@pytest.mark.parametrize("name", OVERLAYS)
def test_serve_restarts_itself_and_one_shot_mining_never_retries(name):
    """serve runs until stopped and is restarted after a failure, which is safe (it resumes exactly once from its
    --output), in a way that leaves the shared cluster alone: jobs/serve.py --restarts, not KubeRay's backoffLimit
    (a RayJob retry deletes the job's cluster, for a clusterSelector job the shared one). Mining jobs never retry
    (a retried run would find its output there) and have a deadline; the loop's jobs have none."""
    docs = overlay(name)
    serve, trainer = one(docs, "RayJob", SERVE_JOB), one(docs, "RayJob", TRAINER_JOB)
    rel, args = _entrypoint(serve)
    supervisor, _ = job_script(rel).supervisor_parser().parse_known_args(args)
    assert supervisor.restarts >= 1 and supervisor.restart_delay > 0
    for job in (serve, trainer):
        spec = job["spec"]
        assert spec["clusterSelector"] == {"ray.io/cluster": SHARED_CLUSTER}
        assert "activeDeadlineSeconds" not in spec, "a deadline would fail a loop that is meant to run for weeks"
        assert spec["backoffLimit"] == 0
        # the submitter pod follows the logs for as long as the job runs; a replacement only re-attaches
        assert spec["submissionMode"] == "K8sJobMode" and spec["submitterConfig"]["backoffLimit"] >= 3
        # `ray job stop` (deleting the RayJob) leaves time to commit the unit in flight / publish a checkpoint
        for where, template in _driver_hosts(docs, job):
            env = {e["name"]: e.get("value") for e in container(template).get("env", [])}
            assert float(env.get("RAY_JOB_STOP_WAIT_TIME_S", 3)) >= 60, f"{job['metadata']['name']} on {where}"
    for job in by_kind(docs, "RayJob"):
        if JOBS_DIR_SCRIPTS[_entrypoint(job)[0]] == "mine":
            assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] > 0
            assert "--restarts" not in job["spec"]["entrypoint"]
        if job["spec"].get("clusterSelector"):
            assert job["spec"].get("backoffLimit", 0) == 0, job["metadata"]["name"]


@needs_kustomize
def test_validation_refuses_retries_on_a_selected_cluster():
    job = copy.deepcopy(one(overlay("prod-gpu"), "RayJob", SERVE_JOB))
    assert not kuberay_errors(job)
    job["spec"]["backoffLimit"] = 3
    assert "a RayJob with a clusterSelector cannot retry (backoffLimit > 0)" in "\n".join(kuberay_errors(job))


def _irsa_read_write_prefixes() -> list[str]:
    """The bucket prefixes the pods' IAM role may write (terraform/modules/irsa-role: read_write_prefixes)."""
    with open(os.path.join(REPO, "terraform", "modules", "irsa-role", "variables.tf")) as f:
        text = f.read()
    block = text[text.index('variable "read_write_prefixes"'):]
    return re.findall(r'"([^"]+/)"', re.search(r"default\s*=\s*\[([^\]]*)\]", block).group(1))


@needs_kustomize
@pytest.mark.parametrize("name", OVERLAYS)
def test_the_trainer_and_serve_close_the_loop(name, tmp_path):
    """ANCE on the shared cluster: the trainer reads serve's run (feed = --output) over serve's corpus, and
    publishes the checkpoints serve follows (checkpoints = serve.checkpoints), where the IAM role may write."""
    docs = overlay(name)
    serve_job, trainer_job = one(docs, "RayJob", SERVE_JOB), one(docs, "RayJob", TRAINER_JOB)
    serve = _job_config(docs, serve_job, tmp_path)
    trainer = _trainer_config(docs, trainer_job, tmp_path)
    assert serve_job["spec"]["clusterSelector"] == trainer_job["spec"]["clusterSelector"]
    assert trainer.feed == serve.output.path
    assert serve.serve.checkpoints and trainer.checkpoints == serve.serve.checkpoints
    assert serve.input.format == "beir" and trainer.corpus == serve.input.path
    assert serve.serve.max_versions == 0 and not serve.serve.idle_exit_seconds  # runs until stopped
    assert trainer.follow and trainer.max_steps is None                         # ... and so does the trainer
    writable = _irsa_read_write_prefixes()
    assert "models/" in writable and "negatives/" in writable
    bucket = serve.output.path.split("/")[2]
    for url in (trainer.checkpoints, serve.output.path):  # written by the pods: under a read-write prefix
        assert url.startswith(f"s3://{bucket}/") and any(
            url.startswith(f"s3://{bucket}/{p}") for p in writable), url
    assert trainer.checkpoints.startswith(f"s3://{bucket}/models/")  # terraform's layout: checkpoints in models/


@needs_kustomize
@pytest.mark.parametrize("name", OVERLAYS)
def test_the_trainer_asks_for_a_gpu_in_prod_only(name, tmp_path):
    """The trainer trains in its driver: its entrypoint resources place it. prod-gpu: one GPU (a GPU worker that has
    it and the CPUs asked); dev-cpu: CPUs only (a worker, since the head has none), and no GPU anywhere."""
    docs = overlay(name)
    job = one(docs, "RayJob", TRAINER_JOB)
    cpus, gpus = _entrypoint_resources(job)
    assert cpus > 0
    hosts = _driver_hosts(docs, job)
    assert all(where != "head" for where, _ in hosts)
    trainer = _trainer_config(docs, job, tmp_path)
    if name == "prod-gpu":
        assert gpus == 1 and all(_gpu_limit(t) >= 1 for _, t in hosts)
        assert trainer.device in ("auto", "cuda") or trainer.device.startswith("cuda:")
    else:
        assert gpus == 0 and "entrypointNumGpus" not in job["spec"] and trainer.device in ("auto", "cpu")
    # the serve driver stays on the head: no entrypoint resources
    assert _entrypoint_resources(one(docs, "RayJob", SERVE_JOB)) == (0, 0)


# ================================================================================================================
# the image

@needs_kustomize
def test_image_versions_agree():
    from packaging.specifiers import SpecifierSet

    args = dockerfile_args()
    ray_version = args["RAY_VERSION"]
    assert ray_version == importlib.metadata.version("ray"), "the image's Ray must be the project's"
    for name in ["base"] + [f"overlays/{o}" for o in OVERLAYS]:
        docs = render(name)
        for d in by_kind(docs, "RayJob") + by_kind(docs, "RayCluster"):
            spec = d["spec"].get("rayClusterSpec") or (d["spec"] if d["kind"] == "RayCluster" else None)
            if spec:
                assert spec["rayVersion"] == ray_version, f"{name}: {d['metadata']['name']}"
        for where, t in all_pod_templates(docs):
            image = container(t)["image"]
            repo, _, tag = image.rpartition(":")
            assert repo and tag and tag != "latest", f"{where}: {image} is not pinned"
            if name != "base":  # the overlays point at a registry
                assert "/" in repo and "." in repo.split("/")[0], f"{where}: {image} has no registry"
    with open(DOCKERFILE) as f:
        text = f.read()
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-${RAY_PLATFORM}" in text
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        [torch_spec] = re.findall(r'"torch([<>=!~][^"]*)"', f.read())
    assert args["TORCH_VERSION"] in SpecifierSet(torch_spec)
    with open(DOCKERFILE + ".dockerignore") as f:
        context = {line.strip().rstrip("/") for line in f if line.strip() and not line.startswith("#")}
    assert "*" in context  # the build context is only what the image needs
    for path in ("pyproject.toml", "README.md", "streammine", "jobs"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", text, re.M), f"the image does not get {path}"
        assert f"!{path}" in context, f"{path} is not in the build context"
        assert os.path.exists(os.path.join(REPO, path))


# ================================================================================================================
# checkov

SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")
SKIP_VALUE = re.compile(r"^(CKV2?_[A-Z0-9]+_[0-9]+)=(.{30,})$", re.S)


def _skips(meta) -> list[str]:
    return [v for k, v in sorted(((meta or {}).get("annotations") or {}).items()) if SKIP_ANNOTATION.match(k)]


def checkov_pods(docs) -> list[dict]:
    """Each Ray pod template as a Pod, with the checkov skips of its RayJob/RayCluster and of the template."""
    pods = []
    for doc in docs:
        if doc["kind"] not in ("RayJob", "RayCluster"):
            continue
        for role, t in pod_templates(doc):
            skips = _skips(doc["metadata"]) + _skips(t.get("metadata"))
            meta = {"name": f"{doc['metadata']['name']}-{role}", "namespace": doc["metadata"]["namespace"],
                    "labels": (t.get("metadata") or {}).get("labels", {}),
                    "annotations": {f"checkov.io/skip{i}": s for i, s in enumerate(skips, 1)}}
            pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": t["spec"]})
    return pods


@needs_kustomize
def test_checkov_skips_carry_reasons():
    """Every in-place skip names one check and says why, in the manifests and in the Dockerfile."""
    count = 0
    for path in _manifest_files():
        with open(path) as f:
            text = f.read()
        if os.path.basename(path).startswith("Dockerfile"):
            for line in text.splitlines():
                if "checkov:skip" in line:
                    assert re.match(r"^# checkov:skip=CKV2?_[A-Z]+_[0-9]+:.{30,}$", line), f"{path}: {line!r}"
                    count += 1
            continue
        for doc in yaml.safe_load_all(text):
            if not isinstance(doc, dict):
                continue
            metas = [doc.get("metadata")] + [t.get("metadata") for _, t in
                                             (pod_templates(doc) if doc.get("kind") in ("RayJob", "RayCluster")
                                              else [])]
            for skip in [s for m in metas for s in _skips(m)]:
                assert SKIP_VALUE.match(skip), f"{path}: skip without a reason: {skip!r}"
                count += 1
    assert count > 0


@pytest.mark.slow
@needs_kustomize
def test_checkov_finds_nothing_unjustified(tmp_path):
    """checkov (kubernetes, dockerfile, secrets) on k8s/, the rendered overlays and every Ray pod as a Pod.

    A canary (a privileged pod without limits, and a file with an AWS key id) shows that pods and secrets are
    checked; apart from it, nothing may fail, and every justification in the manifests must be applied."""
    shutil.copytree(K8S, tmp_path / "k8s")
    (tmp_path / "rendered").mkdir()
    expected_skips = 1  # the Dockerfile's
    for name in OVERLAYS:
        docs = overlay(name)
        pods = checkov_pods(docs)
        assert len(pods) == 8
        expected_skips += sum(len(p["metadata"]["annotations"]) for p in pods)
        with open(tmp_path / "rendered" / f"{name}.yaml", "w") as f:
            yaml.safe_dump_all(docs + pods, f)
    (tmp_path / "canary").mkdir()
    canary_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "canary", "namespace": "canary"},
                  "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                           "securityContext": {"privileged": True}}]}}
    (tmp_path / "canary" / "pod.yaml").write_text(yaml.safe_dump(canary_pod))
    fake_key_id = "AKIA" + "IOSFODNN7" + "CANARY1"  # not a real key; assembled so no scanner flags this file
    (tmp_path / "canary" / "settings.yaml").write_text(f"aws_access_key_id: {fake_key_id}\n")

    report = run_checkov(str(tmp_path), "kubernetes,dockerfile,secrets")
    failed = report["results"]["failed_checks"]
    canary = {f["check_id"] for f in failed if f["file_path"].startswith("/canary/")}
    assert {"CKV_K8S_16", "CKV_K8S_13", "CKV_K8S_11"} <= canary, f"the canary pod was not checked: {canary}"
    assert any(c.startswith("CKV_SECRET") for c in canary), f"the canary key was not found: {canary}"
    rest = [f for f in failed if not f["file_path"].startswith("/canary/")]
    assert not rest, "checkov findings (fix, or justify in place with a checkov.io/skipN annotation):\n" + "\n".join(
        f"{f['check_id']} {f['check_name']}: {f['file_path']} {f.get('resource')}" for f in rest)
    assert report["summary"]["skipped"] == expected_skips, \
        f"checkov applied {report['summary']['skipped']} skips, the manifests carry {expected_skips}"
