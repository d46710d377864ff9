"""The charts of this repository the technical cluster installs (webhook-receiver,
prefect-network-policy), rendered by `helm template` with their technical values: lint-clean,
valid manifests, and a receiver Deployment that gives webhooks/ the files and variables it reads."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from socialnet_ops.adapters.gitlab import GitLabConfigError, read_secret_file
from socialnet_ops.control.control_plane import receiver_command
from socialnet_ops.core.environments import KubernetesPlatform as KubernetesSettings
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.paths import repo_root
from tests.support.kube_tools import require_helm
from tests.support.kube_tools import run_helm as run_kube_helm
from webhooks.token import TOKEN_FILE_VARIABLE, TokenSource

pytestmark = pytest.mark.integration

CHARTS = {
    "webhook-receiver": "infrastructure/technical/webhook-receiver.yaml",
    "prefect-network-policy": "infrastructure/technical/prefect-network-policy.yaml",
}


def run_helm(*arguments: str) -> str:
    return run_kube_helm(require_helm(), *arguments)


def chart_arguments(name: str) -> list[str]:
    return [
        str(repo_root() / "infrastructure/helm" / name),
        "--values",
        str(repo_root() / CHARTS[name]),
    ]


def render(name: str) -> dict[str, dict[str, Any]]:
    output = run_helm("template", name, *chart_arguments(name), "--namespace", "prefect")
    documents = [doc for doc in yaml.safe_load_all(output) if doc]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in documents}


def receiver_pod() -> dict[str, Any]:
    return render("webhook-receiver")["Deployment/webhook-receiver"]["spec"]["template"]["spec"]


def container(pod: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    return next(c for c in pod["initContainers" if init else "containers"] if c["name"] == name)


@pytest.mark.parametrize("name", sorted(CHARTS))
def test_lint_strict_and_valid_manifests(name: str) -> None:
    assert "0 chart(s) failed" in run_helm("lint", "--strict", *chart_arguments(name))
    platform = load_environment("technical").platform
    assert isinstance(platform, KubernetesSettings)
    for where, document in render(name).items():
        try:
            kubernetes_validate.validate(document, platform.kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(
                f"{name}: {where}: {error.message} at {list(error.path)}"
            ) from None


def test_receiver_environment_is_what_webhooks_reads() -> None:
    receiver = container(receiver_pod(), "receiver")
    assert "envFrom" not in receiver  # the Secret's keys are not variables the receiver reads
    env = {item["name"]: item for item in receiver["env"]}
    # Each variable set is one the receiver's code (webhooks/, socialnet_ops/) reads.
    sources = "".join(
        path.read_text()
        for folder in ("webhooks", "socialnet_ops")
        for path in (repo_root() / folder).rglob("*.py")
    )
    for name in env:
        if name.startswith("SOCIALNET_"):
            assert f'"{name}"' in sources, f"{name} is set but nothing reads it"
    assert TOKEN_FILE_VARIABLE in env
    assert env["SOCIALNET_GITLAB_TOKEN_FILE"]["value"].startswith("/")
    assert env["PREFECT_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"] == {
        "name": "prefect-auth",
        "key": "auth-string",
    }
    assert not any("value" in item and "auth" in item["name"].lower() for item in env.values())
    # The root filesystem is read-only: what the receiver writes goes to its own volumes.
    assert receiver["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [m["mountPath"] for m in receiver["volumeMounts"] if not m.get("readOnly")]
    for name in ("SOCIALNET_WEBHOOK_NOTICES_FILE", "SOCIALNET_STATE_DIR", "PREFECT_HOME"):
        path = PurePosixPath(env[name]["value"])
        assert any(path.is_relative_to(folder) for folder in writable), (
            f"{name}: {path} is read-only"
        )


def test_receiver_command_is_the_control_planes() -> None:
    """The same uvicorn options as the control plane (header timeout, keep-alive), on the pod's
    address and the chart's port."""
    command = container(receiver_pod(), "receiver")["command"]
    chart = [part for item in command[1:] for part in item.split("=", 1)]
    local = receiver_command(8000)[1:]
    local[local.index("--host") + 1] = "0.0.0.0"  # noqa: S104 - the pod address the chart sets
    assert chart == local


def test_copied_token_files_pass_the_receivers_check(tmp_path: Path) -> None:
    """Runs the init container's copy on files shaped like the Secret volume (0440, what
    fsGroup makes of it): the receiver refuses those, and accepts the copies."""
    pod = receiver_pod()
    copier = container(pod, "copy-tokens", init=True)
    mounts = {m["name"]: m["mountPath"] for m in copier["volumeMounts"]}
    secret_mount, tokens_mount = mounts["secret"], mounts["tokens"]
    secret_dir, tokens_dir = tmp_path / "secret", tmp_path / "tokens"
    secret_dir.mkdir()
    tokens_dir.mkdir()
    pairs = []
    for index, pair in enumerate(copier["args"]):
        source, target = pair.split("=", 1)
        local_source = secret_dir / PurePosixPath(source).relative_to(secret_mount)
        local_source.write_text(f"token-{index}\n")
        local_source.chmod(0o440)
        pairs.append(
            f"{local_source}={tokens_dir / PurePosixPath(target).relative_to(tokens_mount)}"
        )
    with pytest.raises(GitLabConfigError, match="readable by others"):
        read_secret_file(local_source, TOKEN_FILE_VARIABLE)
    assert copier["command"][:2] == ["python", "-c"]
    subprocess.run([sys.executable, "-c", copier["command"][2], *pairs], check=True, timeout=30)

    env = {item["name"]: item.get("value") for item in container(pod, "receiver")["env"]}
    token_file = tokens_dir / PurePosixPath(env[TOKEN_FILE_VARIABLE]).relative_to(tokens_mount)
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert TokenSource(token_file).current() == b"token-0"
    gitlab_file = tokens_dir / PurePosixPath(env["SOCIALNET_GITLAB_TOKEN_FILE"]).relative_to(
        tokens_mount
    )
    assert read_secret_file(gitlab_file, "SOCIALNET_GITLAB_TOKEN_FILE") == "token-1"


def test_receiver_ingress_has_tls() -> None:
    ingress = render("webhook-receiver")["Ingress/webhook-receiver"]
    assert ingress["spec"]["tls"] == [
        {"hosts": ["hooks.technical.socialnet.example"], "secretName": "hooks-technical-tls"}
    ]


def test_network_policies_admit_only_the_prefect_clients() -> None:
    policies = render("prefect-network-policy")
    api = policies["NetworkPolicy/prefect-api"]["spec"]
    assert api["policyTypes"] == ["Ingress"]
    assert api["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"
    datastores = policies["NetworkPolicy/prefect-datastores"]["spec"]
    (rule,) = datastores["ingress"]
    assert rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "prefect-server",
                    "app.kubernetes.io/instance": "prefect-server",
                }
            }
        }
    ]
    assert {port["port"] for port in rule["ports"]} == {5432, 6379}


def test_receiver_ingress_is_https_by_default() -> None:
    """GitLab sends its token in a header: with the chart's own defaults an enabled ingress
    serves HTTPS, from the release's TLS Secret."""
    output = run_helm(
        "template",
        "hooks",
        str(repo_root() / "infrastructure/helm/webhook-receiver"),
        "--set",
        "ingress.enabled=true",
    )
    (ingress,) = [doc for doc in yaml.safe_load_all(output) if doc and doc["kind"] == "Ingress"]
    assert ingress["spec"]["tls"] == [{"hosts": ["hooks.example"], "secretName": "hooks-tls"}]


def test_every_pod_of_the_control_plane_namespace_is_behind_a_policy() -> None:
    """Nothing in the prefect namespace answers what no policy admits; the receiver admits the
    ingress controller and Alertmanager (which posts alerts to it); the datastores reach DNS only."""
    policies = render("prefect-network-policy")
    assert policies["NetworkPolicy/default-deny-ingress"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }
    receiver = policies["NetworkPolicy/webhook-receiver"]["spec"]
    pod = render("webhook-receiver")["Deployment/webhook-receiver"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert receiver["podSelector"]["matchLabels"].items() <= labels.items()
    (rule,) = receiver["ingress"]
    (port,) = container(pod["spec"], "receiver")["ports"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}]
    releases = yaml.safe_load((repo_root() / "deployments/values/technical.yaml").read_text())
    monitoring = next(r for r in releases["releases"] if r["name"] == "kube-prometheus-stack")
    alerts = (repo_root() / monitoring["values"]).read_text()
    assert "webhook-receiver.prefect.svc" in alerts
    assert {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in rule["from"]
    } == {"ingress-nginx", monitoring["namespace"]}
    datastores = policies["NetworkPolicy/prefect-datastores"]["spec"]
    assert datastores["policyTypes"] == ["Ingress", "Egress"]
    (dns,) = datastores["egress"]
    assert {port["port"] for port in dns["ports"]} == {53}
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
