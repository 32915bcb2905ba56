"""Regenerates the vendored schemas from KubeRay's CRDs (needs the CRD files, e.g. ../shared/schemas/kuberay).

    python tests/schemas/kuberay/extract.py [CRD_DIR]

Writes <kind>.v1.json: the `openAPIV3Schema` of the served, stored `v1` version of each CRD, unmodified (keys
sorted, compact JSON). tests/test_k8s.py checks that the vendored files equal this extraction when CRD_DIR exists.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CRD_DIR = os.path.join(HERE, "..", "..", "..", "..", "shared", "schemas", "kuberay")
CRDS = {"rayjob": "ray.io_rayjobs.yaml", "raycluster": "ray.io_rayclusters.yaml"}
VERSION = "v1"


def extract(crd_path: str) -> str:
    """The compact JSON text of the v1 openAPIV3Schema in one CRD file."""
    with open(crd_path) as f:
        crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == VERSION]
    assert version["served"] and version["storage"], f"{crd_path}: {VERSION} is not the served, stored version"
    return json.dumps(version["schema"]["openAPIV3Schema"], sort_keys=True, separators=(",", ":")) + "\n"


def main(crd_dir: str = DEFAULT_CRD_DIR) -> None:
    for kind, name in CRDS.items():
        path = os.path.join(crd_dir, name)
        text = extract(path)
        with open(os.path.join(HERE, f"{kind}.{VERSION}.json"), "w") as f:
            f.write(text)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        print(f"{kind}.{VERSION}.json <- {name} (sha256 {digest}), {len(text)} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:])
