"""The kubernetes platform: the socialnet Helm chart on the environment's cluster.

Writes go through helm (`upgrade --install --wait --atomic`, `rollback`), so every change is a
release revision that can be rolled back; reads (rollout status, versions, canary weight) come
from the API server through the official client. The canary weight is the one write made with
the client: an annotation of the canary Ingress, changed in place several times per canary.

What a revision holds is in its values (the ones this platform passes, `helm get values`):
`api.tag` is the stable version, `canary.{enabled,tag,weight}` the canary track, and the
revision's description says the same in words (`stable=1.2.3 canary=1.3.0`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml

from socialnet_ops.adapters import images
from socialnet_ops.adapters.builds import BuildError, load_build
from socialnet_ops.adapters.process import ToolError
from socialnet_ops.core.backups import EngineAccess
from socialnet_ops.core.environments import STICKY_COOKIE, Environment
from socialnet_ops.core.environments import KubernetesPlatform as KubernetesSettings
from socialnet_ops.core.ledger import CanaryRecord, ControlRequest
from socialnet_ops.core.paths import repo_root
from socialnet_ops.core.secrets_catalog import RuntimeSecrets, kubernetes_secret_body, strong_token
from socialnet_ops.platforms.base import (
    Build,
    Endpoints,
    PlatformError,
    PlatformStatus,
    ProgramStatus,
    Progress,
    ReplicaNotReadyError,
    require_pushed_images,
)
from socialnet_ops.platforms.kubernetes.helm import Helm, Revision
from socialnet_ops.platforms.kubernetes.rollout import RolloutState, rollout_state

CHART = Path("infrastructure/helm/socialnet")
# Extra values files layered after the environment's (os.pathsep-separated): one-off overrides,
# and the tests' pointers to their emulated cluster.
EXTRA_VALUES_ENV = "SOCIALNET_EXTRA_VALUES"
CANARY_WEIGHT_ANNOTATION = "nginx.ingress.kubernetes.io/canary-weight"
# The canary's stored state and a promote/abort request, as JSON annotations of the canary Ingress:
# they exist with the canary track and go when an abort or promotion removes it.
CANARY_RECORD_ANNOTATION = "socialnet.example/canary-record"
CANARY_REQUEST_ANNOTATION = "socialnet.example/canary-request"
WATCH_INTERVAL_SECONDS = 1.0
# The keys of the API's Secret the chart mounts (values.yaml `secrets`); the webhook token is the
# technical cluster's receiver's and stays out of the namespace.
API_SECRET_KEYS = ("db-user", "db-password", "token-secret", "token-secret-previous")
# The passwords (key `password`) of the database's owner and backup roles (chart
# `secrets.ownerSecret`, `secrets.backupSecret`): made once, never replaced (the database set
# them on its first start), never leaving the namespace.
DATABASE_ROLE_SECRETS = ("socialnet-db-owner", "socialnet-db-backup")


def _quiet(_: str) -> None:
    pass


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's rule for layered values: maps merge, everything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def split_image(reference: str) -> tuple[str, str, str]:
    """registry.example/team/socialnet-api:1.2.3 -> (registry.example/team, socialnet-api, 1.2.3)."""
    path, _, tag = reference.rpartition(":")
    if not path or "/" in tag:
        raise PlatformError(f"image {reference!r} has no tag (expected <registry>/<name>:<tag>)")
    registry, _, repository = path.rpartition("/")
    if not registry:
        raise PlatformError(
            f"image {reference!r} has no registry (expected <registry>/<name>:<tag>)"
        )
    return registry, repository, tag


def describe(stable: str | None, canary: str | None) -> str:
    return f"stable={stable or '-'} canary={canary or '-'}"


def parse_description(description: str) -> dict[str, str]:
    words = dict(part.split("=", 1) for part in description.split() if "=" in part)
    return {key: value for key, value in words.items() if key in {"stable", "canary"}}


class KubernetesPlatform:
    # Rotation on Kubernetes: in Vault, then the secrets flow and a deploy (see restart_replicas).
    rotates_secrets = False

    def __init__(self, environment: Environment) -> None:
        if not isinstance(environment.platform, KubernetesSettings):
            raise PlatformError(f"environment {environment.name!r} is not a kubernetes environment")
        self.environment = environment.name
        self.settings: KubernetesSettings = environment.platform
        self.domain = environment.domain
        self.traffic = environment.release.traffic
        self.chart = repo_root() / CHART  # for names and endpoints; releases use their build's
        self.helm = Helm(self.settings.context, self.settings.namespace, self.settings.release_name)
        self._client: Any = None

    # --- configuration -----------------------------------------------------------------------------

    def values_files(self, root: Path | None = None) -> list[Path]:
        """The environment's values file (of `root`: a build's files), then one-off overrides."""
        files = [self._resolve(self.settings.values_file, root or repo_root())]
        extra = os.environ.get(EXTRA_VALUES_ENV, "")
        files += [self._resolve(item, repo_root()) for item in extra.split(os.pathsep) if item]
        for path in files:
            if not path.is_file():
                raise PlatformError(
                    f"environment {self.environment}: values file {path} does not exist"
                )
        return files

    @staticmethod
    def _resolve(name: str, root: Path) -> Path:
        path = Path(name)
        return path if path.is_absolute() else root / path

    @staticmethod
    def _files(build: Build | None) -> Path:
        """Where a release's chart and values are: its build (they come from its commit), or
        the control plane's tree for a build that carries none."""
        if build is not None and build.path is not None and (build.path / CHART).is_dir():
            return build.path
        return repo_root()

    def _files_of(self, version: str | None) -> Path:
        try:
            return self._files(load_build(self.environment, version) if version else None)
        except BuildError:
            return repo_root()

    def chart_values(self) -> dict[str, Any]:
        """The chart's defaults with the environment's values files over them."""
        merged: dict[str, Any] = yaml.safe_load((self.chart / "values.yaml").read_text()) or {}
        for path in self.values_files():
            merged = deep_merge(merged, yaml.safe_load(path.read_text()) or {})
        return merged

    def _fullname(self) -> str:
        values = self.chart_values()
        if values.get("fullnameOverride"):
            return str(values["fullnameOverride"])[:50].rstrip("-")
        name = values.get("nameOverride") or "socialnet"
        release = self.settings.release_name
        return (release if name in release else f"{release}-{name}")[:50].rstrip("-")

    def names(self) -> dict[str, str]:
        base = self._fullname()
        return {
            "api": f"{base}-api",
            "canary": f"{base}-api-canary",
            "front": f"{base}-front",
            "database": f"{base}-db",
            "canary_ingress": f"{base}-canary",
        }

    # --- the cluster through the official client -------------------------------------------------

    def _api(self) -> Any:
        if self._client is None:
            from kubernetes import config

            try:
                # KUBECONFIG is read now, not when the kubernetes package was imported.
                self._client = config.new_client_from_config(
                    config_file=os.environ.get("KUBECONFIG") or None,
                    context=self.settings.context,
                )
            except Exception as error:
                raise PlatformError(
                    f"environment {self.environment}: cannot load kube context "
                    f"{self.settings.context!r} (KUBECONFIG={os.environ.get('KUBECONFIG', '~/.kube/config')}): {error}"
                ) from None
        return self._client

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._api())

    def _apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self._api())

    def _networking(self) -> Any:
        from kubernetes import client

        return client.NetworkingV1Api(self._api())

    def _read_deployment(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            found = self._apps().read_namespaced_deployment(name, self.settings.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise PlatformError(
                f"reading deployment {name}: {error.status} {error.reason}"
            ) from None
        serialized: dict[str, Any] = self._api().sanitize_for_serialization(found)
        return serialized

    def rollout(self, track: str = "api") -> RolloutState | None:
        deployment = self._read_deployment(self.names()[track])
        return rollout_state(deployment) if deployment else None

    def _canary_annotations(self) -> dict[str, str]:
        """The canary Ingress's annotations; empty when there is no canary track."""
        from kubernetes.client.exceptions import ApiException

        try:
            ingress = self._networking().read_namespaced_ingress(
                self.names()["canary_ingress"], self.settings.namespace
            )
        except ApiException as error:
            if error.status == 404:
                return {}
            raise PlatformError(
                f"reading the canary ingress: {error.status} {error.reason}"
            ) from None
        return dict(ingress.metadata.annotations or {})

    def canary_weight(self) -> int:
        return int(self._canary_annotations().get(CANARY_WEIGHT_ANNOTATION, "0"))

    def canary_record(self) -> CanaryRecord | None:
        value = self._canary_annotations().get(CANARY_RECORD_ANNOTATION)
        return CanaryRecord.model_validate_json(value) if value else None

    def save_canary_record(self, record: CanaryRecord | None) -> None:
        self._annotate_canary(CANARY_RECORD_ANNOTATION, record)

    def canary_request(self) -> ControlRequest | None:
        value = self._canary_annotations().get(CANARY_REQUEST_ANNOTATION)
        return ControlRequest.model_validate_json(value) if value else None

    def request_canary(self, request: ControlRequest | None) -> None:
        self._annotate_canary(CANARY_REQUEST_ANNOTATION, request)

    def _annotate_canary(self, key: str, value: CanaryRecord | ControlRequest | None) -> None:
        """One annotation of the canary Ingress (a merge patch: the others stay as they are)."""
        from kubernetes.client.exceptions import ApiException

        text = value.model_dump_json() if value is not None else None
        body = {"metadata": {"annotations": {key: text}}}
        try:
            self._networking().patch_namespaced_ingress(
                self.names()["canary_ingress"], self.settings.namespace, body
            )
        except ApiException as error:
            if error.status == 404 and (value is None or key == CANARY_RECORD_ANNOTATION):
                # No canary track (not started yet, or removed): nothing to keep a record with;
                # a run dying before its canary exists leaves nothing serving to abort.
                return
            raise PlatformError(
                f"{self.environment}: cannot annotate the canary ingress "
                f"{self.names()['canary_ingress']} ({key}): {error.status} {error.reason}"
            ) from None

    # --- the Platform protocol: lifecycle ------------------------------------------------------------

    def is_running(self) -> bool:
        from kubernetes import client

        try:
            client.VersionApi(self._api()).get_code(_request_timeout=5)
        except Exception:
            return False
        return True

    def start(self, progress: Progress | None = None) -> Endpoints:
        """Nothing to start: check that the cluster answers and the namespace exists."""
        say = progress or _quiet
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            version = client.VersionApi(self._api()).get_code(_request_timeout=10)
        except PlatformError:
            raise
        except Exception as error:
            raise PlatformError(
                f"environment {self.environment}: the cluster of context {self.settings.context!r} "
                f"does not answer: {error}"
            ) from None
        core = self._core()
        try:
            core.read_namespace(self.settings.namespace)
        except ApiException as error:
            if error.status != 404:
                raise PlatformError(
                    f"reading namespace {self.settings.namespace}: {error.reason}"
                ) from None
            core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=self.settings.namespace))
            )
            say(f"created namespace {self.settings.namespace}")
        say(
            f"cluster {self.settings.context} answers (Kubernetes {version.git_version}), "
            f"namespace {self.settings.namespace}"
        )
        return self.endpoints()

    def stop(self, progress: Progress | None = None) -> None:
        (progress or _quiet)(f"{self.environment}: a cluster is not stopped by the control plane")

    def endpoints(self) -> Endpoints:
        values = self.chart_values()
        plane = values.get("controlPlane") or {}
        ingress = values.get("ingress") or {}
        scheme = "https" if (ingress.get("tls") or {}).get("enabled") else "http"
        edge = plane.get("edgeUrl") or f"{scheme}://{ingress.get('host') or self.domain}"
        database = values.get("database") or {}
        external = database.get("external") or {}
        if external.get("enabled"):
            host, port = str(external.get("host")), int(external.get("port", 5432))
        else:
            host, port = f"{self.names()['database']}.{self.settings.namespace}.svc", 5432
        return Endpoints(
            edge_url=str(edge).rstrip("/"),
            prometheus_url=str(plane.get("prometheusUrl") or "").rstrip("/"),
            database_host=host,
            database_port=port,
            extra={
                "kube_context": self.settings.context,
                "namespace": self.settings.namespace,
                "release": self.settings.release_name,
            },
        )

    def backup_engine(self) -> EngineAccess | None:
        return None  # pgBackRest runs next to the data directory; pods are out of the flows' reach

    def database_env(self) -> dict[str, str]:
        """Where the control plane reaches PostgreSQL (`controlPlane.database` in the values).

        Migrations themselves run inside the cluster, as the chart's pre-upgrade Job; this is
        only for the flow's expand-only check (and a migrate step that then finds nothing to do).
        """
        values = self.chart_values()
        access = (values.get("controlPlane") or {}).get("database")
        if not access:
            raise PlatformError(
                f"environment {self.environment}: the control plane has no database access "
                f"(controlPlane.database is not set in {self.settings.values_file}); on kubernetes "
                "migrations run in the cluster as the chart's pre-upgrade Job"
            )
        database = values.get("database") or {}
        env = {
            "SOCIALNET_DB_HOST": str(access["host"]),
            "SOCIALNET_DB_PORT": str(access.get("port", 5432)),
            "SOCIALNET_DB_NAME": str(access.get("name") or database.get("name", "socialnet")),
            # Default: the owner role, which migrations use (chart database.roles.owner).
            "SOCIALNET_DB_USER": str(
                access.get("user") or (database.get("roles") or {}).get("owner", "socialnet")
            ),
        }
        if access.get("passwordFile"):
            env["SOCIALNET_DB_PASSWORD_FILE"] = str(access["passwordFile"])
        return env

    def status(self) -> PlatformStatus:
        running = self.is_running()
        programs: list[ProgramStatus] = []
        stable = canary = None
        weight = 0
        if running:
            for track in ("api", "canary", "front"):
                deployment = self._read_deployment(self.names()[track])
                if deployment is None:
                    continue
                state = rollout_state(deployment)
                version = (deployment["metadata"].get("labels") or {}).get(
                    "app.kubernetes.io/version"
                )
                if track == "api":
                    stable = version
                elif track == "canary":
                    canary = version
                programs.append(
                    ProgramStatus(
                        name=deployment["metadata"]["name"],
                        state="RUNNING"
                        if state.done
                        else ("FATAL" if state.failed else "STARTING"),
                        detail=f"{version}: {state.message}",
                    )
                )
            weight = self.canary_weight() if canary else 0
        return PlatformStatus(
            environment=self.environment,
            running=running,
            stable_version=stable,
            canary_version=canary,
            canary_weight=weight,
            programs=programs,
            endpoints=self.endpoints(),
        )

    # --- releases ----------------------------------------------------------------------------------

    def _settings_values(self) -> dict[str, Any]:
        """Replicas, resources and deadlines from the environment file."""
        seconds = max(10, round(self.settings.rollout_timeout))
        values: dict[str, Any] = {
            "api": {
                "replicas": self.settings.api_replicas,
                "progressDeadlineSeconds": seconds,
                "autoscaling": {"minReplicas": self.settings.api_replicas},
            },
            "front": {
                "replicas": self.settings.front_replicas,
                "progressDeadlineSeconds": seconds,
                "autoscaling": {"minReplicas": self.settings.front_replicas},
            },
            "canary": {"replicas": self.settings.canary_replicas},
        }
        component = {"api": "api", "front": "front", "database": "database"}
        for name, resources in self.settings.resources.items():
            values.setdefault(component[name], {})["resources"] = {
                "requests": {"cpu": resources.cpu, "memory": resources.memory},
                "limits": {"memory": resources.memory},
            }
        return values

    def _traffic_values(self, files: Path, canary: bool) -> dict[str, Any] | None:
        """release.traffic as the chart's canary.traffic (ingress-nginx canary annotations); None
        for weight-only routing, which charts older than canary.traffic render as well."""
        traffic = self.traffic
        if traffic == type(traffic)():
            return None
        schema_file = files / CHART / "values.schema.json"
        schema = json.loads(schema_file.read_text()) if schema_file.exists() else {}
        canary_keys = schema.get("properties", {}).get("canary", {}).get("properties", {})
        if "traffic" not in canary_keys:
            if not canary:
                return None  # an abort or a promotion to an older chart: no canary to route to
            raise PlatformError(
                f"{self.environment}: release.traffic needs a chart with canary.traffic; the "
                f"chart of {files} has none (a release older than header/cookie routing)"
            )
        return {
            "mode": traffic.mode,
            "header": traffic.header or "",
            "headerValue": traffic.header_value,
            "cookie": traffic.cookie or "",
            "sticky": traffic.sticky,
            "stickyCookie": STICKY_COOKIE,
        }

    def _image_values(self, build: Build) -> dict[str, Any]:
        """The images of `build`: by digest when it carries them (always, when the control plane
        built it), else tags of its version."""
        values: dict[str, Any] = {
            "api": {"tag": build.version, "digest": ""},
            "front": {"tag": build.version, "digest": ""},
        }
        registries = set()
        for component in ("api", "front"):
            reference = build.images.get(component)
            if reference and "@" in reference:
                registry, repository, digest = images.split_digest_reference(reference)
                registries.add(registry)
                values[component].update({"repository": repository, "digest": digest})
            elif reference:
                registry, repository, tag = split_image(reference)
                registries.add(registry)
                values[component].update({"repository": repository, "tag": tag})
        if len(registries) > 1:
            raise PlatformError(
                f"build {build.version}: api and front images come from different registries {sorted(registries)}"
            )
        if registries:
            values["image"] = {"registry": registries.pop()}
        return values

    def _stable_values(self, build: Build) -> dict[str, Any]:
        images = self._image_values(build)
        return deep_merge(
            images,
            {"api": {"gitSha": build.git_sha, "extraEnv": dict(build.runtime_env)}},
        )

    def _canary_values(self, build: Build, weight: int) -> dict[str, Any]:
        images = self._image_values(build)
        return {
            "canary": {
                "enabled": True,
                "tag": images["api"]["tag"],
                "digest": images["api"]["digest"],
                "gitSha": build.git_sha,
                "weight": weight,
                "extraEnv": dict(build.runtime_env),
            }
        }

    def _release_values(self) -> dict[str, Any]:
        """The values of the deployed revision that this platform manages (stable and canary)."""
        current = self.helm.values()
        keep: dict[str, Any] = {}
        for key in ("image", "api", "front", "canary"):
            if key in current:
                keep[key] = current[key]
        return keep

    @contextlib.contextmanager
    def _values_file(self, values: dict[str, Any]) -> Iterator[Path]:
        handle, name = tempfile.mkstemp(prefix=f"socialnet-{self.environment}-", suffix=".json")
        with os.fdopen(handle, "w") as file:
            json.dump(values, file)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def _upgrade(
        self, release_values: dict[str, Any], say: Progress, files: Path, wait: bool = True
    ) -> None:
        """helm upgrade of the chart and values in `files` (a build's), then the release's
        values; rollouts watched."""
        values = deep_merge(self._settings_values(), release_values)
        # The environment's policy, not the one the last revision was given.
        canary_values = values.setdefault("canary", {})
        traffic = self._traffic_values(files, bool(canary_values.get("enabled")))
        canary_values.pop("traffic", None)
        if traffic is not None:
            canary_values["traffic"] = traffic
        stable = (values.get("api") or {}).get("tag")
        canary = canary_values.get("tag") if canary_values.get("enabled") else None
        tracks = ["api", "front"] + (["canary"] if canary else [])
        watcher = _RolloutWatcher(self, tracks)
        with self._values_file(values) as overlay:
            if wait:
                watcher.start()
            try:
                self.helm.upgrade(
                    files / CHART,
                    [*self.values_files(files), overlay],
                    self.settings.rollout_timeout,
                    describe(stable, canary),
                    on_line=say,
                    wait=wait,
                )
            except ToolError as error:
                reason = watcher.failure or _last_error(error)
                raise ReplicaNotReadyError(
                    f"{self.environment}: helm upgrade of {self.settings.release_name} "
                    f"({describe(stable, canary)}) failed: {reason}; helm rolled the release "
                    "back to its previous revision (--atomic)"
                ) from None
            finally:
                watcher.stop()
        if wait:
            self._confirm_rollouts(tracks, say)

    def _confirm_rollouts(self, tracks: list[str], say: Progress) -> None:
        """helm --wait looks at ReplicaSets; the Deployment's own status has the last word."""
        deadline = time.monotonic() + self.settings.rollout_timeout
        for track in tracks:
            while True:
                state = self.rollout(track)
                if state is None:
                    raise ReplicaNotReadyError(
                        f"{self.environment}: deployment {self.names()[track]} is missing"
                    )
                if state.failed:
                    raise ReplicaNotReadyError(f"{self.environment}: {state.message}")
                if state.done:
                    say(f"rollout done: {state.message}")
                    break
                if time.monotonic() > deadline:
                    raise ReplicaNotReadyError(
                        f"{self.environment}: rollout not done in time: {state.message}"
                    )
                time.sleep(WATCH_INTERVAL_SECONDS)

    def deploy(self, build: Build, progress: Progress | None = None) -> None:
        say = progress or _quiet
        require_pushed_images(build)
        current = self._release_values()
        # A canary in flight stays as it is; only the stable track changes.
        release = deep_merge(
            {"canary": current.get("canary", {"enabled": False, "weight": 0})},
            self._stable_values(build),
        )
        say(
            f"deploying {build.version} to the stable track of {self.environment} ({self.settings.api_replicas} replicas)"
        )
        self._upgrade(release, say, self._files(build))
        say(f"stable track runs {build.version}")

    def rollback(self, build: Build, progress: Progress | None = None) -> None:
        """`helm rollback` to the newest revision that ran `build` as stable with no canary;
        a build never deployed here (or out of the history) is deployed again instead."""
        say = progress or _quiet
        revision = self.revision_of(build.version)
        if revision is None:
            say(
                f"no revision of {self.settings.release_name} ran {build.version}: deploying it again"
            )
            self.deploy(build, progress)
            return
        say(f"rolling {self.settings.release_name} back to revision {revision} ({build.version})")
        try:
            self.helm.rollback(revision, self.settings.rollout_timeout, on_line=say)
        except ToolError as error:
            raise ReplicaNotReadyError(
                f"{self.environment}: helm rollback to revision {revision} failed: {_last_error(error)}"
            ) from None
        self._confirm_rollouts(["api", "front"], say)
        say(f"stable track runs {build.version} (revision {revision})")

    def revision_of(self, version: str) -> int | None:
        """The newest revision whose stable track ran `version` without a canary."""
        history = self.helm.history()
        by_number = {entry.revision: entry for entry in history}
        for entry in reversed(history):
            if entry.status not in {"deployed", "superseded"}:
                continue
            words = self._revision_words(entry, by_number)
            if words.get("stable") == version and words.get("canary", "-") == "-":
                return entry.revision
        return None

    @staticmethod
    def _revision_words(entry: Revision, by_number: dict[int, Revision]) -> dict[str, str]:
        seen = set()
        while entry.description.startswith("Rollback to ") and entry.revision not in seen:
            seen.add(entry.revision)
            target = by_number.get(int(entry.description.removeprefix("Rollback to ").strip()))
            if target is None:
                return {}
            entry = target
        return parse_description(entry.description)

    def history(self) -> list[Revision]:
        return self.helm.history()

    def image_registry(self) -> str | None:
        return self.settings.registry

    def rendered_digest(self) -> str | None:
        return self.helm.manifest_digest()

    # --- secrets -------------------------------------------------------------------------------------

    def vault_secret_id_files(self) -> dict[str, Path]:
        """Empty: the operator issues the consumers' secret ids (vault.auth.secret_id_file, blocks)."""
        return {}

    def installed_secret(self, name: str) -> dict[str, str] | None:
        """Vault is the only copy: the Secret in the cluster is never read back."""
        return None

    def install_secrets(self, values: RuntimeSecrets, progress: Progress | None = None) -> str:
        """Create or replace the API's Secret the chart mounts (`secrets.existingSecret`), which
        replicas read when they start; make the database roles' Secrets the first time."""
        from kubernetes.client.exceptions import ApiException

        body = kubernetes_secret_body(values)
        body["stringData"] = {
            key: value for key, value in body["stringData"].items() if key in API_SECRET_KEYS
        }
        name, namespace = body["metadata"]["name"], self.settings.namespace
        body["metadata"]["namespace"] = namespace
        core = self._core()
        try:
            # The client serialises plain dicts as they are.
            core.replace_namespaced_secret(name, namespace, body)
        except ApiException as error:
            if error.status != 404:
                raise self._secret_error(name, error) from None
            core.create_namespaced_secret(namespace, body)
        made = [role for role in DATABASE_ROLE_SECRETS if self._make_secret_once(role, body)]
        return f"Secret {name} in namespace {namespace}" + (
            f" (made {', '.join(made)})" if made else ""
        )

    def _make_secret_once(self, name: str, like: dict[str, Any]) -> bool:
        """A Secret holding a new `password`, unless it exists (its value is never read)."""
        from kubernetes.client.exceptions import ApiException

        body = copy.deepcopy(like)
        body["metadata"]["name"] = name
        body["stringData"] = {"password": strong_token(32)}
        try:
            self._core().create_namespaced_secret(self.settings.namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise self._secret_error(name, error) from None
        return True

    def _secret_error(self, name: str, error: Any) -> PlatformError:
        return PlatformError(
            f"environment {self.environment}: writing Secret {name} in "
            f"{self.settings.namespace} failed ({error.status} {error.reason})"
        )

    def standing_secrets(self, progress: Progress | None = None) -> str | None:
        """The secrets and rotate flows write the Secret the chart mounts: a deploy hands over
        nothing."""
        (progress or _quiet)(
            f"secrets of {self.environment}: the Secret written by the secrets flow "
            "(chart secrets.existingSecret)"
        )
        return "kubernetes secret"

    def _no_rotation(self) -> PlatformError:
        return PlatformError(
            f"environment {self.environment}: rotation rolls replicas and revokes logins on the "
            "local platform only for now (on Kubernetes: rotate in Vault, then the secrets flow "
            "and a deploy)"
        )

    def restart_replicas(self, progress: Progress | None = None) -> None:
        raise self._no_rotation()

    def revoke_database_logins(self, progress: Progress | None = None) -> list[str]:
        raise self._no_rotation()

    # --- the canary track ----------------------------------------------------------------------------

    def start_canary(self, build: Build, progress: Progress | None = None) -> None:
        say = progress or _quiet
        require_pushed_images(build)
        current = self._release_values()
        if not (current.get("api") or {}).get("tag"):
            raise PlatformError(
                f"{self.environment}: nothing is deployed yet; deploy a stable release before a canary"
            )
        # Weight 0 before anything else: a replaced canary must not keep its predecessor's share.
        if self.canary_weight():
            self._patch_weight(0)
        release = deep_merge(current, self._canary_values(build, 0))
        # The build's settings replace, not join, those of the canary it replaces (an aborted
        # one's fault settings must not follow the next build).
        release["canary"]["extraEnv"] = dict(build.runtime_env)
        say(f"starting canary {build.version} ({self.settings.canary_replicas} replicas, weight 0)")
        self._upgrade(release, say, self._files(build))
        self._patch_weight(0)

    def set_canary_weight(self, weight: int) -> None:
        if not 0 <= weight <= 100:
            raise PlatformError(f"canary weight {weight} is not a percentage (0..100)")
        if weight > 0:
            state = self.rollout("canary")
            if state is None or not state.done:
                raise PlatformError(
                    "no canary is running: start_canary() before setting its weight"
                )
        # mode ab: the steps judge the canary on header/cookie requests; users get no share.
        self._patch_weight(0 if self.traffic.mode == "ab" else weight)

    def _patch_weight(self, weight: int) -> None:
        from kubernetes.client.exceptions import ApiException

        body = {"metadata": {"annotations": {CANARY_WEIGHT_ANNOTATION: str(weight)}}}
        try:
            self._networking().patch_namespaced_ingress(
                self.names()["canary_ingress"], self.settings.namespace, body
            )
        except ApiException as error:
            if error.status == 404 and weight == 0:
                return
            raise PlatformError(
                f"{self.environment}: cannot set the canary weight on ingress "
                f"{self.names()['canary_ingress']}: {error.status} {error.reason}"
            ) from None

    def promote_canary(self, progress: Progress | None = None) -> None:
        say = progress or _quiet
        current = self._release_values()
        canary = current.get("canary") or {}
        if not canary.get("enabled"):
            say("no canary to promote")
            return
        version = canary["tag"]
        say(f"promoting canary {version} to stable")
        release = deep_merge(
            current,
            {
                "api": {
                    "tag": version,
                    "gitSha": canary.get("gitSha", "unknown"),
                    "extraEnv": canary.get("extraEnv", {}),
                },
                "front": {"tag": version},
                "canary": {"enabled": False, "weight": 0},
            },
        )
        release["api"]["extraEnv"] = dict(canary.get("extraEnv", {}))  # replaced, not merged
        self._upgrade(release, say, self._files_of(version))
        say(f"stable track runs {version}; canary track empty")

    def abort_canary(self, progress: Progress | None = None) -> None:
        say = progress or _quiet
        self._patch_weight(0)
        current = self._release_values()
        if not (current.get("canary") or {}).get("enabled"):
            say("no canary to abort")
            return
        say(f"aborting canary {current['canary'].get('tag')}: weight 0, canary track removed")
        stable = (current.get("api") or {}).get("tag")
        self._upgrade(
            deep_merge(current, {"canary": {"enabled": False, "weight": 0}}),
            say,
            self._files_of(stable),
        )

    def track_urls(self, track: Literal["stable", "canary"]) -> list[str]:
        """The track's ClusterIP Service: the control plane's workers run in the cluster."""
        if track == "canary" and not (self._release_values().get("canary") or {}).get("enabled"):
            return []
        service = self.names()["api" if track == "stable" else "canary"]
        return [f"http://{service}.{self.settings.namespace}.svc"]


class _RolloutWatcher:
    """Polls the Deployments while helm waits, to name why a rollout failed."""

    def __init__(self, platform: KubernetesPlatform, tracks: list[str]) -> None:
        self.platform = platform
        self.tracks = tracks
        self.failure: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_SECONDS):
            for track in self.tracks:
                with contextlib.suppress(Exception):  # a read error is not a rollout failure
                    state = self.platform.rollout(track)
                    if state is not None and state.failed and self.failure is None:
                        self.failure = state.message

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def _last_error(error: ToolError) -> str:
    lines = [line for line in error.tail if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    return (errors or lines or [f"exit {error.returncode}"])[-1]
