"""The socialnet chart: `helm lint --strict`, and every environment's values rendered by
`helm template` into manifests valid against the Kubernetes schemas of the environment's version."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import psycopg
import pytest
import yaml

from socialnet_ops.core.environments import KubernetesPlatform as KubernetesSettings
from socialnet_ops.core.environments import TrafficPolicy, load_environment
from socialnet_ops.core.paths import repo_root
from socialnet_ops.core.secrets_catalog import DB_LOGIN_ROLES, DB_OWNER, RuntimeSecrets
from socialnet_ops.platforms.base import PlatformError
from socialnet_ops.platforms.kubernetes.platform import (
    API_SECRET_KEYS,
    DATABASE_ROLE_SECRETS,
    KubernetesPlatform,
)
from tests.support.kube_emulator import running_emulator
from tests.support.kube_tools import require_helm, run_helm, sandbox_env
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

CHART = repo_root() / "infrastructure/helm/socialnet"
APP_ENVIRONMENTS = ["staging", "production"]
# Kinds of CRDs the chart may use; kubernetes-validate has no schema for them.
CUSTOM_GROUPS = ("monitoring.coreos.com/",)


OVERLAYS = Path(tempfile.gettempdir())


@pytest.fixture(scope="module")
def helm() -> Iterator[str]:
    """helm, and a folder for the values overlays of this module."""
    global OVERLAYS
    with tempfile.TemporaryDirectory(prefix="chart-overlays-") as folder:
        OVERLAYS = Path(folder)
        yield require_helm()


def values_arguments(environment: str, overrides: dict[str, Any] | None = None) -> list[str]:
    """The values files the platform passes: the environment's, then its settings overlay."""
    settings = load_environment(environment)
    platform = KubernetesPlatform(settings)
    layered = platform._settings_values()
    if overrides:
        layered = _merge(layered, overrides)
    overlay = OVERLAYS / f"{environment}-{len(list(OVERLAYS.iterdir()))}.yaml"
    overlay.write_text(yaml.safe_dump(layered))
    return ["--values", str(repo_root() / settings.platform.values_file), "--values", str(overlay)]  # type: ignore[union-attr]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    from socialnet_ops.platforms.kubernetes.platform import deep_merge

    return deep_merge(base, override)


def render(
    helm: str, environment: str, overrides: dict[str, Any] | None = None, upgrade: bool = False
) -> list[dict[str, Any]]:
    arguments = ["template", "socialnet", str(CHART), "--namespace", "socialnet"]
    if upgrade:
        arguments.append("--is-upgrade")
    output = run_helm(helm, *arguments, *values_arguments(environment, overrides))
    return [doc for doc in yaml.safe_load_all(output) if doc]


def kubernetes_version(environment: str) -> str:
    platform = load_environment(environment).platform
    assert isinstance(platform, KubernetesSettings)
    return platform.kubernetes_version


def assert_valid(documents: list[dict[str, Any]], version: str) -> None:
    problems = []
    for document in documents:
        where = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        if str(document.get("apiVersion", "")).startswith(CUSTOM_GROUPS):
            assert document.get("spec"), f"{where}: a custom resource without spec"
            continue
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {error.message} at {list(error.path)}")
    assert not problems, "\n".join(problems)


def kinds(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in documents}


def migration_job(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return next(
        d
        for d in documents
        if d["kind"] == "Job"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "migrations"
    )


def pod_templates(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod template (metadata and spec) of every workload, by kind/name."""
    pods = {}
    for where, document in kinds(documents).items():
        spec = document.get("spec", {})
        if document["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            pods[where] = spec["template"]
    return pods


@pytest.mark.parametrize("environment", APP_ENVIRONMENTS)
def test_lint_strict(helm: str, environment: str) -> None:
    output = run_helm(helm, "lint", "--strict", str(CHART), *values_arguments(environment))
    assert "0 chart(s) failed" in output


@pytest.mark.parametrize("environment", APP_ENVIRONMENTS)
@pytest.mark.parametrize("upgrade", [False, True], ids=["install", "upgrade"])
def test_environment_values_render_valid_manifests(
    helm: str, environment: str, upgrade: bool
) -> None:
    documents = render(helm, environment, upgrade=upgrade)
    assert_valid(documents, kubernetes_version(environment))
    found = kinds(documents)
    for expected in (
        "Deployment/socialnet-api",
        "Deployment/socialnet-front",
        "Service/socialnet-api",
        "Service/socialnet-front",
        "Ingress/socialnet",
        "ConfigMap/socialnet-config",
        "PodDisruptionBudget/socialnet-api",
        "NetworkPolicy/socialnet-db",
        "StatefulSet/socialnet-db",
    ):
        assert expected in found, f"{environment}: {expected} not rendered"
    hooks = migration_job(documents)["metadata"].get("annotations", {}).get("helm.sh/hook")
    assert hooks == ("pre-install,pre-upgrade" if upgrade else None)


def test_pods_run_as_non_root_with_probes(helm: str) -> None:
    documents = render(helm, "staging")
    for document in documents:
        if document["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        pod = document["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["readinessProbe"] and container["livenessProbe"]
    api = kinds(documents)["Deployment/socialnet-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_only_the_api_reaches_the_database(helm: str) -> None:
    policy = kinds(render(helm, "staging"))["NetworkPolicy/socialnet-db"]["spec"]
    sources = policy["ingress"][0]["from"]
    assert len(sources) == 1 and "namespaceSelector" not in sources[0]
    assert sources[0]["podSelector"]["matchExpressions"][0]["values"] == [
        "api",
        "migrations",
        "logins",
        "backup",
    ]


def test_canary_track_renders_weighted_ingress(helm: str) -> None:
    documents = render(
        helm, "production", {"canary": {"enabled": True, "tag": "1.3.0", "weight": 25}}
    )
    assert_valid(documents, kubernetes_version("production"))
    found = kinds(documents)
    canary = found["Ingress/socialnet-canary"]["metadata"]["annotations"]
    assert canary["nginx.ingress.kubernetes.io/canary"] == "true"
    assert canary["nginx.ingress.kubernetes.io/canary-weight"] == "25"
    selector = found["Service/socialnet-api-canary"]["spec"]["selector"]
    assert selector["socialnet.example/track"] == "canary"
    assert "replicas" not in found["Deployment/socialnet-api"]["spec"]  # the HPA owns it
    assert found["HorizontalPodAutoscaler/socialnet-api"]["spec"]["minReplicas"] == 4


def test_external_database_and_backup_cronjob(helm: str) -> None:
    documents = render(
        helm,
        "staging",
        {
            "database": {"external": {"enabled": True, "host": "db.example", "port": 6432}},
            "backup": {"enabled": True, "bucket": "socialnet-backups-staging"},
        },
    )
    assert_valid(documents, kubernetes_version("staging"))
    found = kinds(documents)
    assert "StatefulSet/socialnet-db" not in found
    assert found["ConfigMap/socialnet-config"]["data"]["SOCIALNET_DB_HOST"] == "db.example"
    assert "CronJob/socialnet-backup" in found
    job = migration_job(documents)
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # The API reaches the external database on its port, wherever it is (a policy names no host).
    assert destinations(documents, "api") == {"anywhere 6432/TCP", DNS}


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"canary": {"weight": 120}}, "canary.weight"),
        ({"api": {"extraEnv": {"SOCIALNET_DB_PASSWORD": "x"}}}, "api.extraEnv"),
        ({"canary": {"enabled": True, "tag": ""}}, "canary"),
        ({"api": {"replicaz": 3}}, "replicaz"),
        ({"canary": {"traffic": {"header": "X Canary"}}}, "canary.traffic.header"),
        ({"canary": {"traffic": {"mode": "split"}}}, "canary.traffic.mode"),
        ({"canary": {"traffic": {"cookie": "a;b"}}}, "canary.traffic.cookie"),
        # ab routes by header or cookie only: it needs one, and has no weighted users to stick.
        ({"canary": {"traffic": {"mode": "ab"}}}, "canary.traffic"),
        (
            {"canary": {"traffic": {"mode": "ab", "header": "X-Canary", "sticky": True}}},
            "canary.traffic.sticky",
        ),
        ({"canary": {"antiAffinity": "yes"}}, "canary.antiAffinity"),
        # Two logins: a rotation moves to the one no replica uses.
        ({"database": {"roles": {"logins": ["socialnet_a"]}}}, "database.roles.logins"),
        ({"database": {"user": "socialnet"}}, "user"),
        ({"networkPolicy": {"objectStorage": {"cidrs": ["s3.amazonaws.com"]}}}, "cidrs"),
    ],
)
def test_schema_rejects_bad_values(helm: str, overrides: dict[str, Any], complaint: str) -> None:
    arguments = ["template", "socialnet", str(CHART), *values_arguments("staging", overrides)]
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [helm, *arguments],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **sandbox_env(Path(folder))},
            check=False,
        )
    assert result.returncode != 0
    assert complaint in result.stderr


def traffic_values(**policy: Any) -> dict[str, Any]:
    """What the platform passes as canary.traffic for a production policy `policy`."""
    environment = load_environment("production")
    release = environment.release.model_copy(update={"traffic": TrafficPolicy(**policy)})
    platform = KubernetesPlatform(environment.model_copy(update={"release": release}))
    values = platform._traffic_values(repo_root(), canary=True)
    assert values is not None
    return values


def canary_release(weight: int, **policy: Any) -> dict[str, Any]:
    return {
        "canary": {
            "enabled": True,
            "tag": "1.3.0",
            "weight": weight,
            "traffic": traffic_values(**policy),
        }
    }


def test_header_cookie_and_sticky_routing_annotate_both_ingresses(helm: str) -> None:
    overrides = canary_release(10, header="X-Canary", cookie="socialnet-canary", sticky=True)
    documents = render(helm, "production", overrides)
    assert_valid(documents, kubernetes_version("production"))
    found = kinds(documents)
    canary = found["Ingress/socialnet-canary"]["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert canary[prefix + "canary-weight"] == "10"
    assert canary[prefix + "canary-by-header"] == "X-Canary"
    assert canary[prefix + "canary-by-header-value"] == "always"
    assert canary[prefix + "canary-by-cookie"] == "socialnet-canary"
    assert canary[prefix + "affinity-canary-behavior"] == "sticky"
    # Both Ingresses carry the same cookie affinity: a session keeps the track that served it.
    main = found["Ingress/socialnet"]["metadata"]["annotations"]
    for ingress in (canary, main):
        assert ingress[prefix + "affinity"] == "cookie"
        assert ingress[prefix + "session-cookie-name"] == "socialnet-track"
    run_helm(helm, "lint", "--strict", str(CHART), *values_arguments("production", overrides))


def test_ab_mode_gives_users_no_weight_and_weight_only_adds_nothing(helm: str) -> None:
    documents = render(helm, "production", canary_release(50, mode="ab", cookie="socialnet-canary"))
    found = kinds(documents)
    canary = found["Ingress/socialnet-canary"]["metadata"]["annotations"]
    assert canary["nginx.ingress.kubernetes.io/canary-weight"] == "0"
    assert canary["nginx.ingress.kubernetes.io/canary-by-cookie"] == "socialnet-canary"
    assert "nginx.ingress.kubernetes.io/canary-by-header" not in canary
    main = found["Ingress/socialnet"]["metadata"].get("annotations", {})
    assert not [key for key in main if "affinity" in key]
    # No traffic policy: the weight alone, as before.
    plain = kinds(render(helm, "production", {"canary": {"enabled": True, "tag": "1.3.0"}}))
    annotations = plain["Ingress/socialnet-canary"]["metadata"]["annotations"]
    assert not [key for key in annotations if "by-" in key or "affinity" in key]


def test_stable_and_canary_pods_prefer_different_nodes(helm: str) -> None:
    documents = render(helm, "production", {"canary": {"enabled": True, "tag": "1.3.0"}})
    found = kinds(documents)
    for deployment, other in (("socialnet-api", "canary"), ("socialnet-api-canary", "stable")):
        pod = found[f"Deployment/{deployment}"]["spec"]["template"]["spec"]
        (term,) = pod["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        labels = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        assert labels["socialnet.example/track"] == other
        assert labels["app.kubernetes.io/component"] == "api"
    off = render(
        helm, "production", {"canary": {"enabled": True, "tag": "1.3.0", "antiAffinity": False}}
    )
    assert "affinity" not in kinds(off)["Deployment/socialnet-api"]["spec"]["template"]["spec"]


def test_a_traffic_policy_needs_a_chart_that_knows_it(tmp_path: Path) -> None:
    """An abort to a stable release whose chart predates canary.traffic still works."""
    environment = load_environment("production")
    release = environment.release.model_copy(update={"traffic": TrafficPolicy(header="X-Canary")})
    platform = KubernetesPlatform(environment.model_copy(update={"release": release}))
    old = tmp_path / "infrastructure/helm/socialnet"
    old.mkdir(parents=True)
    schema = {"properties": {"canary": {"properties": {"weight": {"type": "integer"}}}}}
    (old / "values.schema.json").write_text(json.dumps(schema))
    assert platform._traffic_values(tmp_path, canary=False) is None
    with pytest.raises(PlatformError, match=r"release\.traffic needs a chart with canary\.traffic"):
        platform._traffic_values(tmp_path, canary=True)


# --- secrets, database roles and the API's login (security issue #24) -------------------------

WITH_BACKUP = {"backup": {"enabled": True, "bucket": "socialnet-backups-staging"}}
CANARY = {"canary": {"enabled": True, "tag": "1.3.0"}}
API_KEYS = {"db-user", "db-password", "token-secret", "token-secret-previous"}


def secret_keys(pod: dict[str, Any]) -> dict[str, set[str]]:
    """Which keys of which Secrets a pod gets (`*`: all of it, as variables)."""
    found: dict[str, set[str]] = defaultdict(set)
    for volume in pod.get("volumes", []):
        sources = [volume, *volume.get("projected", {}).get("sources", [])]
        for secret in (source["secret"] for source in sources if "secret" in source):
            name = secret.get("secretName") or secret.get("name")
            assert secret.get("items"), f"volume {volume['name']}: the whole Secret {name}"
            found[name] |= {item["key"] for item in secret["items"]}
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        for item in container.get("env", []):
            reference = item.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                found[reference["name"]].add(reference["key"])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                found[source["secretRef"]["name"]].add("*")
    return dict(found)


def test_each_pod_mounts_only_the_secret_keys_it_reads(helm: str) -> None:
    documents = render(helm, "staging", {**WITH_BACKUP, **CANARY})
    pods = {where: pod["spec"] for where, pod in pod_templates(documents).items()}
    owner = {"socialnet-db-owner": {"password"}}
    api = {"socialnet-secrets": API_KEYS}
    assert {where: secret_keys(pod) for where, pod in pods.items()} == {
        "Deployment/socialnet-api": api,
        "Deployment/socialnet-api-canary": api,
        "Deployment/socialnet-front": {},
        "StatefulSet/socialnet-db": {**owner, "socialnet-db-backup": {"password"}},
        # The owner hands the login its password (init container); migrations see the owner's only.
        "Job/socialnet-migrate-install": {**owner, "socialnet-secrets": {"db-user", "db-password"}},
        "Job/socialnet-retire-logins": {**owner, "socialnet-secrets": {"db-user"}},
        # The S3 credentials are the backup job's own Secret (the aws CLI reads variables).
        "CronJob/socialnet-backup": {
            "socialnet-db-backup": {"password"},
            "socialnet-backup-credentials": {"*"},
        },
    }
    migrate = next(c for c in pods["Job/socialnet-migrate-install"]["containers"])
    assert {mount["name"] for mount in migrate["volumeMounts"]} == {"owner", "tmp"}
    # The platform writes what the chart reads, under the names the chart's values give.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(API_SECRET_KEYS) == API_KEYS
    assert (values["secrets"]["ownerSecret"], values["secrets"]["backupSecret"]) == (
        DATABASE_ROLE_SECRETS
    )
    # The roles the chart makes are the ones Vault's database secret names.
    roles = values["database"]["roles"]
    assert (roles["owner"], tuple(roles["logins"])) == (DB_OWNER, DB_LOGIN_ROLES)


def local_container(
    pod: dict[str, Any], container: dict[str, Any], secrets: dict[str, dict[str, str]], root: Path
) -> tuple[dict[str, str], Callable[[str], str]]:
    """A container's variables and a translation of its paths to folders under `root`, where its
    Secret volumes' items are written as the kubelet would (one folder per volume)."""
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    moves = {}
    for mount in container.get("volumeMounts", []):
        folder = root / mount["name"]
        folder.mkdir(exist_ok=True)
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret:
            for item in secret["items"]:
                (folder / item["path"]).write_text(secrets[secret["secretName"]][item["key"]])
        moves[mount["mountPath"]] = str(folder)

    # One pass, whole paths only: a local folder may itself start with a mount path (/tmp).
    paths = "|".join(re.escape(path) for path in sorted(moves, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w/.-])({paths})(?![\w.-])")

    def local(text: str) -> str:
        return pattern.sub(lambda match: moves[match.group(1)], text) if moves else text

    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = local(item["value"])
        else:
            reference = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[reference["name"]][reference["key"]]
    return env, local


def api_secret(user: str, password: str, previous: str = "old-key") -> dict[str, str]:
    return {
        "db-user": user,
        "db-password": password,
        "token-secret": "new-key",
        "token-secret-previous": previous,
    }


def test_the_api_keeps_the_previous_token_key_and_logs_in_as_the_secrets_login(
    helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's own settings, read from the rendered pod: during a rotation tokens signed with
    the previous key still pass, and the login role is the one the Secret names."""
    from app.api.core.config import Settings

    documents = render(helm, "staging")
    template = pod_templates(documents)["Deployment/socialnet-api"]
    assert "checksum/secrets" in template["metadata"]["annotations"]
    pod = template["spec"]
    (container,) = pod["containers"]
    config = kinds(documents)["ConfigMap/socialnet-config"]["data"]
    for previous, keys in (("old-key", ["new-key", "old-key"]), ("", ["new-key"])):
        secrets = {"socialnet-secrets": api_secret("socialnet_b", "pw-b", previous)}
        env, _ = local_container(pod, container, secrets, tmp_path)
        for name in [name for name in os.environ if name.startswith("SOCIALNET_")]:
            monkeypatch.delenv(name)
        for name, value in {**config, **env}.items():
            monkeypatch.setenv(name, value)
        settings = Settings()
        assert settings.token_signing_keys() == keys
        assert settings.database_url().username == "socialnet_b"
        assert settings.database_password() == "pw-b"
        # An ingress controller's pod (kind's pod network here) names the client for the login
        # limits; without it every user would share the ingress pod's address and its limit.
        networks = [ipaddress.ip_network(n.strip()) for n in settings.trusted_proxies.split(",")]
        assert any(ipaddress.ip_address("10.244.1.7") in network for network in networks)


def run_container(
    pod: dict[str, Any],
    container: dict[str, Any],
    secrets: dict[str, dict[str, str]],
    root: Path,
    server: PostgresServer,
    path: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The container's command on this machine, against `server`."""
    env, local = local_container(pod, container, secrets, root)
    env |= {"PGHOST": server.host, "PGPORT": str(server.port)}
    env |= {"SOCIALNET_DB_HOST": server.host, "SOCIALNET_DB_PORT": str(server.port)}
    command = [local(part) for part in container["command"]]
    if command[0] == "alembic":
        command = [sys.executable, "-m", *command]
    return subprocess.run(
        command,
        env={"PATH": path or os.environ["PATH"], **env},
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def connect(server: PostgresServer, user: str, password: str) -> psycopg.Connection[Any]:
    """A login over TCP with a password, as the pods' (the socket is the superuser's)."""
    return psycopg.connect(
        host=server.host,
        port=server.port,
        dbname="socialnet",
        user=user,
        password=password,
        autocommit=True,
    )


def can_log_in(server: PostgresServer, user: str, password: str) -> bool:
    try:
        connect(server, user, password).close()
    except psycopg.OperationalError:
        return False
    return True


def refused(connection: psycopg.Connection[Any], statement: str) -> bool:
    try:
        with connection.transaction():
            connection.execute(statement)  # type: ignore[arg-type]
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def test_database_roles_give_the_api_rows_only_and_rotate_its_login_without_a_gap(
    helm: str, tmp_path: Path
) -> None:
    """The chart's roles script, migration Job, logins Jobs and backup CronJob, run as rendered
    against a PostgreSQL of their own, with password authentication."""
    documents = render(helm, "staging", WITH_BACKUP)
    pods = {where: pod["spec"] for where, pod in pod_templates(documents).items()}
    database = pods["StatefulSet/socialnet-db"]
    migration = pods["Job/socialnet-migrate-install"]
    retire = pods["Job/socialnet-retire-logins"]
    backup = pods["CronJob/socialnet-backup"]
    secrets = {
        "socialnet-db-owner": {"password": "owner-pw"},
        "socialnet-db-backup": {"password": "backup:pw\\"},  # pgpass escapes : and \
        "socialnet-secrets": api_secret("socialnet_a", "pw-a"),
    }
    roles_sql = kinds(documents)["ConfigMap/socialnet-db-initdb"]["data"]["roles.sql"]
    with PostgresServer() as server:
        server.create_database("socialnet")  # POSTGRES_DB, made by the image's entrypoint
        _, local = local_container(database, database["containers"][0], secrets, tmp_path)
        (tmp_path / "roles.sql").write_text(local(roles_sql))
        subprocess.run(
            ["psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--file", str(tmp_path / "roles.sql")],
            env={
                "PATH": os.environ["PATH"],
                "PGHOST": str(server.socket_dir),
                "PGPORT": str(server.port),
                "PGUSER": "postgres",
                "PGDATABASE": "socialnet",
            },
            check=True,
            capture_output=True,
            timeout=60,
        )
        # Passwords from now on, as in the pod (the superuser: through the socket only).
        (server.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        superuser = psycopg.connect(
            host=str(server.socket_dir),
            port=server.port,
            dbname="socialnet",
            user="postgres",
            autocommit=True,
        )
        superuser.execute("SELECT pg_reload_conf()")

        enable, migrate = migration["initContainers"][0], migration["containers"][0]
        for step in (enable, migrate):
            result = run_container(migration, step, secrets, tmp_path, server)
            assert result.returncode == 0, result.stderr
        assert not can_log_in(server, "postgres", "owner-pw")
        assert can_log_in(server, "socialnet_a", "pw-a")
        assert not can_log_in(server, "socialnet_b", "pw-a")

        # The API's login: rows of the owner's tables, nothing more.
        with connect(server, "socialnet_a", "pw-a") as login:
            login.execute(
                "INSERT INTO users (username, password_hash, display_name) VALUES ('ann', 'h', 'Ann')"
            )
            login.execute("UPDATE users SET bio = 'hi' WHERE username = 'ann'")
            assert login.execute("SELECT count(*) FROM users").fetchone() == (1,)
            for statement in (
                "CREATE TABLE extra (id int)",
                "ALTER TABLE users ADD COLUMN extra int",
                "DROP TABLE follows",
                "TRUNCATE posts",
                "CREATE ROLE intruder",
                "ALTER ROLE socialnet_b PASSWORD 'mine'",
                "SELECT logins.enable('socialnet_b', 'mine')",
            ):
                assert refused(login, statement), statement
        attributes = superuser.execute(
            "SELECT rolname, rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication"
            " OR rolbypassrls FROM pg_roles WHERE rolname LIKE 'socialnet%'"
        ).fetchall()
        assert attributes and not any(powerful for _, powerful in attributes), attributes
        assert superuser.execute(
            "SELECT pg_has_role('socialnet_a', 'socialnet', 'MEMBER')"
        ).fetchone() == (False,)
        with connect(server, "socialnet", "owner-pw") as owner:
            assert refused(owner, "ALTER ROLE socialnet_b LOGIN PASSWORD 'mine'")
            assert refused(owner, "CREATE ROLE intruder")

        # A rotation: the other login gets its password before the replicas roll, the first one
        # keeps working until they have, then loses it.
        secrets["socialnet-secrets"] = api_secret("socialnet_b", "pw-b")
        assert run_container(migration, enable, secrets, tmp_path, server).returncode == 0
        assert can_log_in(server, "socialnet_a", "pw-a") and can_log_in(
            server, "socialnet_b", "pw-b"
        )
        for _ in range(2):  # the second run finds nothing to retire
            result = run_container(retire, retire["containers"][0], secrets, tmp_path, server)
            assert result.returncode == 0, result.stderr
        assert not can_log_in(server, "socialnet_a", "pw-a")
        assert can_log_in(server, "socialnet_b", "pw-b")

        # A Secret naming another role changes nothing, and its password reaches no log.
        secrets["socialnet-secrets"] = api_secret("socialnet", "leaked-" + "x" * 20)
        result = run_container(migration, enable, secrets, tmp_path, server)
        assert result.returncode != 0 and "none of socialnet_a, socialnet_b" in result.stderr
        assert "leaked-" not in (server.socket_dir / "postgres.log").read_text()
        assert can_log_in(server, "socialnet", "owner-pw")

        # The backup role dumps every table and may change none.
        fake_aws = tmp_path / "bin" / "aws"
        fake_aws.parent.mkdir()
        fake_aws.write_text(f"#!/bin/sh\ncat > {tmp_path / 'dump'}\n")
        fake_aws.chmod(0o755)
        path = f"{fake_aws.parent}{os.pathsep}{os.environ['PATH']}"
        result = run_container(backup, backup["containers"][0], secrets, tmp_path, server, path)
        assert result.returncode == 0, result.stderr
        listing = subprocess.run(
            ["pg_restore", "--list", str(tmp_path / "dump")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "TABLE DATA public users" in listing
        with connect(server, "socialnet_backup", "backup:pw\\") as reader:
            assert refused(reader, "DELETE FROM users")
        superuser.close()


def peer_name(peer: dict[str, Any]) -> str:
    if "ipBlock" in peer:
        return str(peer["ipBlock"]["cidr"])
    if "namespaceSelector" in peer:
        namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        labels = ",".join(f"{k}={v}" for k, v in peer["podSelector"]["matchLabels"].items())
        return f"{namespace}/{labels}"
    return "pod:" + peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    return all(
        labels.get(expression["key"]) in expression["values"]
        for expression in selector.get("matchExpressions", [])
        if expression["operator"] == "In"
    )


def destinations(documents: list[dict[str, Any]], component: str) -> set[str]:
    """Where pods of `component` may connect: `peer ports` of every egress rule selecting them."""
    labels = next(
        pod["metadata"]["labels"]
        for pod in pod_templates(documents).values()
        if pod["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )
    found = set()
    policies = [
        d["spec"]
        for d in documents
        if d["kind"] == "NetworkPolicy" and selects(d["spec"]["podSelector"], labels)
    ]
    assert any("Egress" in policy["policyTypes"] for policy in policies), f"{component}: no egress"
    for rule in (rule for policy in policies for rule in policy.get("egress", [])):
        ports = ",".join(sorted(f"{p['port']}/{p['protocol']}" for p in rule["ports"]))
        found |= {
            f"{peer_name(peer)} {ports}"
            for peer in rule.get("to") or [{"ipBlock": {"cidr": "anywhere"}}]
        }
    return found


DNS = "kube-system/k8s-app=kube-dns 53/TCP,53/UDP"


def test_every_pod_sends_only_where_it_needs(helm: str) -> None:
    documents = render(helm, "staging", {**WITH_BACKUP, **CANARY})
    database = "pod:database 5432/TCP"
    expected = {
        "api": {database, DNS},
        # The front serves files: the ingress, not the front, sends /api to the API.
        "front": {DNS},
        "database": {DNS},
        "migrations": {database, DNS},
        "logins": {database, DNS},
        "backup": {database, DNS, "0.0.0.0/0 443/TCP"},
    }
    components = {
        pod["metadata"]["labels"]["app.kubernetes.io/component"]
        for pod in pod_templates(documents).values()
    }
    assert components == set(expected)
    for component, allowed in expected.items():
        assert destinations(documents, component) == allowed, component


def test_the_platform_writes_the_secrets_the_chart_mounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's Secret holds its keys only (no webhook token); the roles' passwords are made
    once and never replaced (the database set them on its first start)."""
    values = RuntimeSecrets(
        {
            "database": {"username": "socialnet_b", "password": "pw-b"},
            "api": {"token_secret": "new-key", "token_secret_previous": "old-key"},
            "webhooks": {"gitlab_token": "hook-token"},
        }
    )
    with running_emulator() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig", ["staging"], "socialnet")
        for key, value in sandbox_env(tmp_path, kubeconfig).items():
            monkeypatch.setenv(key, value)
        platform = KubernetesPlatform(load_environment("staging"))
        platform.install_secrets(values)
        made = {name: kube.get("v1", "Secret", "socialnet", name) for name in DATABASE_ROLE_SECRETS}
        platform.install_secrets(values)
        api = kube.get("v1", "Secret", "socialnet", "socialnet-secrets")
        assert api is not None and api["stringData"] == api_secret("socialnet_b", "pw-b")
        for name, first in made.items():
            assert first is not None and len(first["stringData"]["password"]) >= 32
            assert kube.get("v1", "Secret", "socialnet", name) == first
