"""deploy/: Kubernetes manifests validated against the Kubernetes schemas (kubernetes-validate ships
them offline), and the Dockerfiles, compose file and its nginx front checked against what the
server accepts and exports. These are static checks; tests/deploy/test_image.py builds and runs
the image (slow)."""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from codeassist.remote.cli import add_arguments
from codeassist.remote.metrics import ServerMetrics
from codeassist.remote.session import HEADER
from codeassist.remote.settings import ServerSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.37.0"


def manifests() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def serve_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    return parser.parse_args(args)


@pytest.mark.parametrize("kind", ["Deployment", "Service", "HorizontalPodAutoscaler", "Secret", "Ingress",
                                  "ConfigMap"])
def test_each_manifest_is_valid_against_the_kubernetes_schema(kind: str) -> None:
    kubernetes_validate.validate(manifests()[kind], K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    broken = copy.deepcopy(manifests()["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = {"no": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    typo = copy.deepcopy(manifests()["Service"])
    typo["spec"]["selectr"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


@pytest.mark.parametrize("breakage", ["ingress port", "ingress path type", "hpa metric typo", "hpa target",
                                      "configmap data"])
def test_the_validator_rejects_broken_affinity_and_autoscaling_manifests(breakage: str) -> None:
    docs = copy.deepcopy(manifests())
    ingress, hpa, adapter = docs["Ingress"], docs["HorizontalPodAutoscaler"], docs["ConfigMap"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    broken = {"ingress port": lambda: (backend["port"].update(number="http"), ingress)[1],
              "ingress path type": lambda: (ingress["spec"]["rules"][0]["http"]["paths"][0]
                                            .update(pathType=None), ingress)[1],
              "hpa metric typo": lambda: (hpa["spec"]["metrics"][0].update(pod=hpa["spec"]["metrics"][0]
                                                                           .pop("pods")), hpa)[1],
              "hpa target": lambda: (hpa["spec"]["metrics"][0]["pods"]["target"].update(averageValue=[4]),
                                     hpa)[1],
              "configmap data": lambda: (adapter["data"].update({"config.yaml": {"rules": []}}), adapter)[1]}
    doc = broken[breakage]()
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_ingress_hashes_by_the_session_header_the_server_reads() -> None:
    docs = manifests()
    annotations = docs["Ingress"]["metadata"]["annotations"]
    # nginx names a request header $http_<name>, lowercased, dashes as underscores
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_" + HEADER.replace("-", "_")
    (path,) = docs["Ingress"]["spec"]["rules"][0]["http"]["paths"]
    backend = path["backend"]["service"]
    assert backend["name"] == docs["Service"]["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in docs["Service"]["spec"]["ports"]}
    size = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert size == f"{ServerSettings().max_body_bytes >> 20}m"  # nginx refuses no body the server takes


def test_the_autoscaler_scales_on_the_queue_gauge_the_server_exports_through_the_adapter() -> None:
    docs = manifests()
    (metric,) = docs["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    (rule,) = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == name
    series = rule["seriesQuery"].split("{")[0]
    assert re.fullmatch(rule["name"]["matches"], series)
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    exported = ServerMetrics().render().decode()
    assert f"# TYPE {series} gauge" in exported  # a gauge of this very name is on /metrics


def test_the_deployment_probes_resources_keys_and_drain() -> None:
    docs = manifests()
    pod = docs["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    args = serve_args(container["args"])
    assert args.host == "0.0.0.0" and args.api_key_file  # exposed, so keys are required
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert str(Path(args.api_key_file).parent) == mounts["api-keys"]
    assert volumes["api-keys"]["secret"]["secretName"] == docs["Secret"]["metadata"]["name"]
    assert Path(args.api_key_file).name in docs["Secret"]["stringData"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > args.drain_timeout
    assert container["ports"][0]["containerPort"] == args.port


def test_the_service_and_autoscaler_point_at_the_deployment() -> None:
    docs = manifests()
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", docs["Deployment"]["metadata"]["name"])


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_the_dockerfiles_install_every_package_and_run_a_valid_serve_command(name: str) -> None:
    ins = dockerfile_instructions(DEPLOY / name)
    assert ins[0][0] in ("FROM", "ARG")
    copied = {rest.split()[0] for word, rest in ins if word == "COPY" and not rest.startswith("--from")}
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    folders = {"cli", "model", "lsp", "training", "quantization", "remote"}
    assert all(f'= "{f}"' in pyproject for f in folders)  # the folders pyproject maps
    assert folders <= copied and "pyproject.toml" in copied
    assert ("ENTRYPOINT", '["codeassist", "serve"]') in ins
    cmd = json.loads(next(rest for word, rest in ins if word == "CMD"))
    args = serve_args(cmd)
    assert args.host == "0.0.0.0" and args.api_key_file
    ServerSettings(host=args.host, api_keys=("k",))  # what the container would start with is accepted
    assert ("EXPOSE", str(args.port)) in ins
    user = next(rest for word, rest in ins if word == "USER")
    assert user not in ("root", "0")
    assert "torch==2.13.0" in " ".join(rest for word, rest in ins if word == "RUN")
    assert (DEPLOY / f"{name}.dockerignore").exists()


def test_compose_builds_both_images_publishes_on_loopback_and_outlasts_the_drain() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    cmd = json.loads(next(rest for word, rest in dockerfile_instructions(DEPLOY / "Dockerfile") if word == "CMD"))
    key_file = serve_args(cmd).api_key_file
    servers = {name: s for name, s in compose["services"].items() if "build" in s}
    assert {"codeassist-a", "codeassist-b", "codeassist-cuda"} <= servers.keys()
    for name, service in servers.items():
        assert service["build"]["context"] == ".."  # the repository root, relative to deploy/
        assert (DEPLOY / Path(service["build"]["dockerfile"]).name).exists(), name
        assert int(service["stop_grace_period"].rstrip("s")) > 30, name
        assert any(s["target"] == key_file for s in service["secrets"]), name
    for service in compose["services"].values():
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", [])), service
    assert "api-keys" in compose["secrets"]
    gpu = compose["services"]["codeassist-cuda"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_the_compose_front_hashes_sessions_over_both_replicas() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    front = compose["services"]["front"]
    (mount,) = front["volumes"]
    source, target, _ = mount.split(":")
    assert target == "/etc/nginx/nginx.conf"
    conf = (DEPLOY / source).read_text()
    port = serve_args(json.loads(next(rest for word, rest in dockerfile_instructions(DEPLOY / "Dockerfile")
                                      if word == "CMD"))).port
    upstream = re.search(r"upstream codeassist \{(.*?)\}", conf, re.S)
    assert upstream
    servers = re.findall(r"^\s*server ([\w.-]+):(\d+)", upstream.group(1), re.M)
    replicas = [n for n, s in compose["services"].items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"]
    assert sorted(servers) == sorted((name, str(port)) for name in replicas) and len(replicas) == 2
    assert set(front["depends_on"]) == set(replicas)
    assert re.search(r"^\s*hash \$codeassist_affinity consistent;", upstream.group(1), re.M)
    session_var = "$http_" + HEADER.replace("-", "_")
    assert re.search(rf"map \{session_var} \$codeassist_affinity", conf)
    listen = re.search(r"listen (\d+);", conf)
    assert listen and front["ports"][0].endswith(f":{listen.group(1)}")
    assert "proxy_buffering off;" in conf  # server-sent events


def test_serve_args_in_deploy_files_are_shell_safe() -> None:
    # every argument is a plain token: nothing depends on a shell to split or expand it
    container = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert all(shlex.quote(a) == a for a in container["args"])
