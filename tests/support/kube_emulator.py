"""An in-memory Kubernetes API server for tests: the official client, kubectl and helm reach it
over HTTP on 127.0.0.1.

kmock (the kopf author's API mock) lacks resourceVersion/uid/generation, selectors, PUT, strategic
merge patches and discovery in the form client-go expects, and its DSL is built for scripted
answers rather than state; this server is purpose-built on aiohttp (which kmock brings along):

- discovery (/version, /api, /apis, /api/v1, /apis/<group>/<version>) for the kinds the chart and
  the technical tools use; /openapi/* answer 404, so clients fall back to their built-in types;
- create, get, list, replace (PUT), patch (merge, strategic merge, JSON patch), delete and
  delete-collection, with resourceVersion, uid, generation, creationTimestamp, optimistic
  concurrency, label selectors (equality and set-based) and metadata field selectors;
- watch (newline-delimited events from a resourceVersion, with timeoutSeconds);
- no controllers, except the least the clients wait on: a Deployment gets a ReplicaSet for its
  pod template, and its status comes from the test's rollout policy ("complete", "stall" past
  the progress deadline, or "pending"); StatefulSets, Jobs (per the job policy), Services
  (cluster IP), PersistentVolumeClaims and Namespaces settle at once.

Use: `with KubeEmulator() as kube: kube.write_kubeconfig(path, contexts=["staging"])`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from tests.support import kube_protobuf
from tests.support.kube_patch import JsonPatchError, json_patch, merge_patch, strategic_merge_patch

KUBERNETES_VERSION = ("1", "32")


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

KINDS = [
    Kind("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",)),
    Kind("", "v1", "pods", "Pod", short_names=("po",), subresources=("status", "log")),
    Kind("", "v1", "services", "Service", short_names=("svc",), subresources=("status",)),
    Kind("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    Kind("", "v1", "secrets", "Secret"),
    Kind("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short_names=("pvc",)),
    Kind("", "v1", "endpoints", "Endpoints", short_names=("ep",)),
    Kind("", "v1", "events", "Event", short_names=("ev",)),
    Kind(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        subresources=("status", "scale"),
    ),
    Kind(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        short_names=("rs",),
        subresources=("status", "scale"),
    ),
    Kind(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        short_names=("sts",),
        subresources=("status", "scale"),
    ),
    Kind("apps", "v1", "daemonsets", "DaemonSet", short_names=("ds",), subresources=("status",)),
    Kind("apps", "v1", "controllerrevisions", "ControllerRevision"),
    Kind("batch", "v1", "jobs", "Job", subresources=("status",)),
    Kind("batch", "v1", "cronjobs", "CronJob", short_names=("cj",), subresources=("status",)),
    Kind(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        short_names=("ing",),
        subresources=("status",),
    ),
    Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    Kind("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    Kind(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short_names=("pdb",),
        subresources=("status",),
    ),
    Kind(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short_names=("hpa",),
        subresources=("status",),
    ),
    Kind("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    Kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    Kind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Kind("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Kind(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd",),
        ("status",),
    ),
    Kind("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor"),
    Kind("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule"),
]

# What the emulated controllers do with a Deployment or Job, chosen by the test per object.
RolloutPolicy = Callable[[dict[str, Any]], str]  # "complete" | "stall" | "pending"
JobPolicy = Callable[[dict[str, Any]], str]  # "complete" | "fail" | "pending"


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- selectors ---------------------------------------------------------------------------------

_SET_RULE = re.compile(r"^\s*([^\s!=,()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for rule in _split_selector(selector or ""):
        rule = rule.strip()
        if not rule:
            continue
        if match := _SET_RULE.match(rule):
            key, operator, values = match.groups()
            allowed = {value.strip() for value in values.split(",")}
            if (operator == "in") != (labels.get(key) in allowed):
                return False
        elif "!=" in rule:
            key, value = (part.strip() for part in rule.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in rule:
            key, value = (part.strip() for part in rule.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif rule.startswith("!"):
            if rule[1:] in labels:
                return False
        elif rule not in labels:
            return False
    return True


def field_selector_matches(selector: str, obj: dict[str, Any]) -> bool:
    for rule in _split_selector(selector or ""):
        negate = "!=" in rule
        path, value = (part.strip() for part in re.split(r"!=|==|=", rule, maxsplit=1))
        node: Any = obj
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        actual = "" if node is None else str(node)
        if (actual == value) == negate:
            return False
    return True


def match_labels_selector(selector: dict[str, Any]) -> str:
    """A LabelSelector object as the string form."""
    rules = [f"{key}={value}" for key, value in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        operator = expression["operator"]
        if operator in {"In", "NotIn"}:
            rules.append(
                f"{expression['key']} {operator.lower()} ({','.join(expression['values'])})"
            )
        elif operator == "Exists":
            rules.append(expression["key"])
        else:
            rules.append(f"!{expression['key']}")
    return ",".join(rules)


# --- the server --------------------------------------------------------------------------------


@dataclass
class _Event:
    revision: int
    kind: Kind
    type: str
    obj: dict[str, Any]


@dataclass
class Request:
    """What the emulator records of each request (tests assert on helm's and kubectl's calls)."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)


class KubeEmulator:
    def __init__(self, namespaces: tuple[str, ...] = ("default", "kube-system")) -> None:
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._events: list[_Event] = []
        self._revision = itertools.count(100)
        self._last_revision = 100
        self._ips = itertools.count(10)
        self.requests: list[Request] = []
        self.rollout_policy: RolloutPolicy = lambda _deployment: "complete"
        self.job_policy: JobPolicy = lambda _job: "complete"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self.port = 0
        self._kinds = {(k.group, k.plural): k for k in KINDS}
        self._by_kind = {(k.group_version, k.kind): k for k in KINDS}
        for name in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KubeEmulator:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as error:  # reported to start()
                failure.append(error)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="kube-emulator", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _serve(self) -> None:
        self._changed = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        self._stopping = True
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._wake)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path, contexts: list[str], namespace: str = "default") -> Path:
        """A kubeconfig with one context per name, all pointing at this server."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
            "contexts": [
                {
                    "name": name,
                    "context": {"cluster": "emulator", "user": "tester", "namespace": namespace},
                }
                for name in contexts
            ],
            "current-context": contexts[0],
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # --- direct access for tests (thread-safe) --------------------------------------------------

    def kind_of(self, api_version: str, kind: str) -> Kind:
        try:
            return self._by_kind[(api_version, kind)]
        except KeyError:
            raise ApiError(404, "NotFound", f"no kind {kind} in {api_version}") from None

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.kind_of(api_version, kind)
        with self._lock:
            obj = self._objects.get(self._key(found, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def objects(
        self, api_version: str, kind: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        found = self.kind_of(api_version, kind)
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (group, plural, ns, _), obj in sorted(self._objects.items())
                if (group, plural) == (found.group, found.plural) and namespace in {None, ns}
            ]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        found = self.kind_of(obj["apiVersion"], obj["kind"])
        namespace = obj.get("metadata", {}).get("namespace", "default") if found.namespaced else ""
        with self._lock:
            return self._create(found, namespace, copy.deepcopy(obj))

    def update_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Set an object's status, as a controller would (bumps resourceVersion, not generation)."""
        found = self.kind_of(api_version, kind)
        with self._lock:
            current = self._require(found, namespace, name)
            updated = copy.deepcopy(current)
            updated["status"] = status
            return self._store(found, updated, "MODIFIED")

    def reconcile(self) -> None:
        """Run the emulated controllers again (after a test changed a policy)."""
        with self._lock:
            for key, obj in list(self._objects.items()):
                found = self._kinds[(key[0], key[1])]
                if found.kind in {"Deployment", "Job", "StatefulSet"}:
                    self._reconcile(found, copy.deepcopy(obj))

    def changes(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """Every stored change of one object, oldest first: (ADDED|MODIFIED|DELETED, object)."""
        found = self.kind_of(api_version, kind)
        namespace = namespace if found.namespaced else ""
        wanted = (found, namespace, name)
        seen = []
        with self._lock:
            for event in self._events:
                meta = event.obj["metadata"]
                if (event.kind, meta.get("namespace", ""), meta["name"]) == wanted:
                    seen.append((event.type, copy.deepcopy(event.obj)))
        return seen

    def requests_matching(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # --- storage --------------------------------------------------------------------------------

    @staticmethod
    def _key(kind: Kind, namespace: str, name: str) -> tuple[str, str, str, str]:
        return (kind.group, kind.plural, namespace if kind.namespaced else "", name)

    def _require(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        obj = self._objects.get(self._key(kind, namespace, name))
        if obj is None:
            group = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            raise ApiError(404, "NotFound", f'{group} "{name}" not found')
        return obj

    def _next_revision(self) -> str:
        self._last_revision = next(self._revision)
        return str(self._last_revision)

    def _store(self, kind: Kind, obj: dict[str, Any], event: str) -> dict[str, Any]:
        meta = obj["metadata"]
        meta["resourceVersion"] = self._next_revision()
        key = self._key(kind, meta.get("namespace", ""), meta["name"])
        if event == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        self._events.append(_Event(self._last_revision, kind, event, copy.deepcopy(obj)))
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed while stopping
                self._loop.call_soon_threadsafe(self._wake)
        return copy.deepcopy(obj)

    def _wake(self) -> None:
        if self._changed is not None:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def _create(self, kind: Kind, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(422, "Invalid", "metadata.name: Required value")
        if kind.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if self._key(kind, namespace, meta["name"]) in self._objects:
            group = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            raise ApiError(409, "AlreadyExists", f'{group} "{meta["name"]}" already exists')
        obj["apiVersion"], obj["kind"] = kind.group_version, kind.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        self._default(kind, obj)
        stored = self._store(kind, obj, "ADDED")
        return self._reconcile(kind, stored)

    def _default(self, kind: Kind, obj: dict[str, Any]) -> None:
        """The few defaults and admission effects clients depend on."""
        spec = obj.setdefault("spec", {}) if kind.kind not in _NO_SPEC else None
        if kind.kind == "Service" and spec is not None:
            if spec.get("type", "ClusterIP") != "ExternalName" and not spec.get("clusterIP"):
                address = f"10.96.{next(self._ips) // 250}.{next(self._ips) % 250 + 2}"
                spec["clusterIP"], spec["clusterIPs"] = address, [address]
            spec.setdefault("type", "ClusterIP")
        elif kind.kind in {"Deployment", "StatefulSet", "ReplicaSet"} and spec is not None:
            spec.setdefault("replicas", 1)
            if kind.kind == "Deployment":
                spec.setdefault("progressDeadlineSeconds", 600)
                spec.setdefault("revisionHistoryLimit", 10)
                spec.setdefault(
                    "strategy",
                    {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                    },
                )
        elif kind.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
        elif kind.kind == "PersistentVolumeClaim":
            obj["status"] = {"phase": "Bound"}

    # --- the emulated controllers ---------------------------------------------------------------

    def _reconcile(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        if kind.kind == "Deployment":
            return self._reconcile_deployment(kind, obj)
        if kind.kind == "StatefulSet":
            return self._reconcile_statefulset(kind, obj)
        if kind.kind == "Job":
            return self._reconcile_job(kind, obj)
        return obj

    def _owned_replicasets(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        uid = deployment["metadata"]["uid"]
        return [
            obj
            for (group, plural, ns, _), obj in self._objects.items()
            if (group, plural, ns) == ("apps", "replicasets", deployment["metadata"]["namespace"])
            and any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))
        ]

    def _reconcile_deployment(self, kind: Kind, deployment: dict[str, Any]) -> dict[str, Any]:
        replicaset_kind = self._kinds[("apps", "replicasets")]
        meta, spec = deployment["metadata"], deployment["spec"]
        template = copy.deepcopy(spec.get("template", {}))
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        owned = self._owned_replicasets(deployment)
        revisions = [
            int(rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", "0"))
            for rs in owned
        ]
        revision = str(max(revisions, default=0) + 1)
        current = next(
            (rs for rs in owned if rs["metadata"]["labels"].get("pod-template-hash") == digest),
            None,
        )
        replicas = spec.get("replicas", 1)
        if current is None:
            labels = {**template.get("metadata", {}).get("labels", {}), "pod-template-hash": digest}
            template.setdefault("metadata", {})["labels"] = labels
            selector = copy.deepcopy(spec.get("selector", {}))
            selector.setdefault("matchLabels", {})["pod-template-hash"] = digest
            current = self._create(
                replicaset_kind,
                meta["namespace"],
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": f"{meta['name']}-{digest}",
                        "labels": labels,
                        "annotations": {"deployment.kubernetes.io/revision": revision},
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "Deployment",
                                "name": meta["name"],
                                "uid": meta["uid"],
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "spec": {"replicas": replicas, "selector": selector, "template": template},
                },
            )
        elif current["metadata"]["annotations"].get("deployment.kubernetes.io/revision") != str(
            max(revisions, default=0)
        ):
            current = copy.deepcopy(current)  # an older template is back (rollback): newest again
            current["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = revision
            current = self._store(replicaset_kind, current, "MODIFIED")
        rs_name = current["metadata"]["name"]
        rs_revision = current["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        outcome = self.rollout_policy(deployment)
        old_available = sum(
            rs.get("status", {}).get("availableReplicas", 0)
            for rs in owned
            if rs["metadata"]["name"] != rs_name
        )
        status = copy.deepcopy(deployment.get("status", {}))
        generation = meta.get("generation", 1)
        if outcome == "pending":
            self._set_rs_status(current, spec.get("replicas", 1), ready=0)
            return self._set_status(kind, deployment, status, rs_revision)
        if outcome == "complete":
            self._set_rs_status(current, replicas, ready=replicas)
            for rs in self._owned_replicasets(deployment):
                if rs["metadata"]["name"] != rs_name and rs["spec"].get("replicas"):
                    scaled = copy.deepcopy(rs)
                    scaled["spec"]["replicas"] = 0
                    scaled["status"] = {"replicas": 0, "observedGeneration": 1}
                    self._store(replicaset_kind, scaled, "MODIFIED")
            status = {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    _condition(
                        "Available",
                        "True",
                        "MinimumReplicasAvailable",
                        "Deployment has minimum availability.",
                    ),
                    _condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        f'ReplicaSet "{rs_name}" has successfully progressed.',
                    ),
                ],
            }
        else:  # stall: the new pods never become ready and the progress deadline passes
            self._set_rs_status(current, replicas, ready=0)
            status = {
                "observedGeneration": generation,
                "replicas": old_available + 1,
                "updatedReplicas": 1,
                "readyReplicas": old_available,
                "availableReplicas": old_available,
                "unavailableReplicas": 1,
                "conditions": [
                    _condition(
                        "Available",
                        "True" if old_available else "False",
                        "MinimumReplicasAvailable",
                        "Deployment has minimum availability.",
                    ),
                    _condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        f'ReplicaSet "{rs_name}" has timed out progressing.',
                    ),
                ],
            }
        return self._set_status(kind, deployment, status, rs_revision)

    def _set_status(
        self, kind: Kind, obj: dict[str, Any], status: dict[str, Any], revision: str
    ) -> dict[str, Any]:
        latest = copy.deepcopy(
            self._objects[self._key(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])]
        )
        latest["status"] = status
        latest["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = (
            revision
        )
        return self._store(kind, latest, "MODIFIED")

    def _set_rs_status(self, replicaset: dict[str, Any], replicas: int, ready: int) -> None:
        kind = self._kinds[("apps", "replicasets")]
        latest = copy.deepcopy(
            self._objects[
                self._key(kind, replicaset["metadata"]["namespace"], replicaset["metadata"]["name"])
            ]
        )
        latest["spec"]["replicas"] = replicas
        latest["status"] = {
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "fullyLabeledReplicas": replicas,
            "observedGeneration": latest["metadata"].get("generation", 1),
        }
        self._store(kind, latest, "MODIFIED")

    def _reconcile_statefulset(self, kind: Kind, sts: dict[str, Any]) -> dict[str, Any]:
        replicas = sts["spec"].get("replicas", 1)
        revision = f"{sts['metadata']['name']}-{hashlib.sha256(json.dumps(sts['spec'].get('template', {}), sort_keys=True).encode()).hexdigest()[:10]}"
        latest = copy.deepcopy(sts)
        latest["status"] = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "currentReplicas": replicas,
            "updatedReplicas": replicas,
            "currentRevision": revision,
            "updateRevision": revision,
        }
        return self._store(kind, latest, "MODIFIED")

    def _reconcile_job(self, kind: Kind, job: dict[str, Any]) -> dict[str, Any]:
        if job.get("status", {}).get("conditions"):
            return job
        outcome = self.job_policy(job)
        if outcome == "pending":
            return job
        latest = copy.deepcopy(job)
        if outcome == "complete":
            latest["status"] = {
                "startTime": _now(),
                "completionTime": _now(),
                "succeeded": 1,
                "conditions": [
                    _condition(
                        "SuccessCriteriaMet",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                    _condition(
                        "Complete",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                ],
            }
        else:
            latest["status"] = {
                "startTime": _now(),
                "failed": 1,
                "conditions": [
                    _condition(
                        "FailureTarget",
                        "True",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    ),
                    _condition(
                        "Failed",
                        "True",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    ),
                ],
            }
        return self._store(kind, latest, "MODIFIED")

    # --- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Request(request.method, request.path, dict(request.query)))
        try:
            return await self._route(request)
        except ApiError as error:
            return _status(error.code, error.reason, error.message)
        except (
            json.JSONDecodeError,
            yaml.YAMLError,
            JsonPatchError,
            kube_protobuf.ProtobufError,
        ) as error:
            return _status(400, "BadRequest", str(error))

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if request.method == "GET":
            if path == "/version":
                major, minor = KUBERNETES_VERSION
                return web.json_response(
                    {
                        "major": major,
                        "minor": minor,
                        "gitVersion": f"v{major}.{minor}.0",
                        "gitCommit": "0" * 40,
                        "gitTreeState": "clean",
                        "buildDate": "2025-01-01T00:00:00Z",
                        "platform": "linux/amd64",
                        "goVersion": "go1.23",
                        "compiler": "gc",
                    }
                )
            if path == "/api":
                return web.json_response(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
                        ],
                    }
                )
            if path == "/apis":
                return web.json_response(self._group_list())
            if path == "/api/v1" or re.fullmatch(r"/apis/[^/]+/[^/]+", path):
                return web.json_response(
                    self._resource_list(path.removeprefix("/api/").removeprefix("/apis/"))
                )
            if re.fullmatch(r"/apis/[^/]+", path):
                group = next(
                    (g for g in self._group_list()["groups"] if g["name"] == path.split("/")[2]),
                    None,
                )
                if group is None:
                    raise ApiError(404, "NotFound", f"no API group {path}")
                return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **group})
            if path in {"/healthz", "/readyz", "/livez"}:
                return web.Response(text="ok")
        if path == "/openapi/v3":
            return web.json_response(self._openapi_root())
        if path.startswith("/openapi/v3/"):
            return web.json_response(self._openapi_group(path.removeprefix("/openapi/v3/")))
        if path.startswith("/openapi"):
            raise ApiError(404, "NotFound", "the emulator serves OpenAPI v3 only")
        return await self._resource_request(request, path)

    def _group_list(self) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        for kind in KINDS:
            if kind.group:
                versions = groups.setdefault(kind.group, [])
                if kind.version not in versions:
                    versions.append(kind.version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": name,
                    "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
                    "preferredVersion": {
                        "groupVersion": f"{name}/{versions[0]}",
                        "version": versions[0],
                    },
                }
                for name, versions in groups.items()
            ],
        }

    def _resource_list(self, group_version: str) -> dict[str, Any]:
        resources = []
        kinds = [kind for kind in KINDS if kind.group_version == group_version]
        if not kinds:
            raise ApiError(404, "NotFound", f"no group version {group_version}")
        for kind in kinds:
            resources.append(
                {
                    "name": kind.plural,
                    "singularName": kind.kind.lower(),
                    "namespaced": kind.namespaced,
                    "kind": kind.kind,
                    "verbs": ALL_VERBS,
                    "shortNames": list(kind.short_names),
                }
            )
            for sub in kind.subresources:
                resources.append(
                    {
                        "name": f"{kind.plural}/{sub}",
                        "singularName": "",
                        "namespaced": kind.namespaced,
                        "kind": "Scale" if sub == "scale" else kind.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }

    # OpenAPI v3, only as much as clients read: each PATCH operation with its GroupVersionKind and
    # the fieldValidation parameter, so helm and kubectl leave validation to the server.
    def _openapi_root(self) -> dict[str, Any]:
        prefixes = {("api/v1" if not k.group else f"apis/{k.group_version}") for k in KINDS}
        return {
            "paths": {
                prefix: {"serverRelativeURL": f"/openapi/v3/{prefix}?hash=emulator"}
                for prefix in sorted(prefixes)
            }
        }

    def _openapi_group(self, prefix: str) -> dict[str, Any]:
        group_version = prefix.removeprefix("api/").removeprefix("apis/")
        paths = {}
        for kind in KINDS:
            if kind.group_version != group_version:
                continue
            scope = "namespaces/{namespace}/" if kind.namespaced else ""
            paths[f"/{prefix}/{scope}{kind.plural}/{{name}}"] = {
                "patch": {
                    "operationId": f"patch{kind.kind}",
                    "x-kubernetes-group-version-kind": {
                        "group": kind.group,
                        "version": kind.version,
                        "kind": kind.kind,
                    },
                    "parameters": [
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                        {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        if not paths:
            raise ApiError(404, "NotFound", f"no OpenAPI document for {prefix}")
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths,
        }

    def _parse(self, path: str) -> tuple[Kind, str | None, str | None, str | None]:
        """(kind, namespace, name, subresource) of a resource path."""
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        kind = self._kinds.get((group, rest[0]))
        if kind is None or kind.version != version:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return kind, namespace, name, sub

    async def _resource_request(self, request: web.Request, path: str) -> web.StreamResponse:
        kind, namespace, name, sub = self._parse(path)
        query = request.query
        ns = namespace or ("" if not kind.namespaced else None)
        method = request.method
        if method == "GET" and name is None:
            if query.get("watch") in {"true", "1"}:
                return await self._watch(request, kind, ns)
            return web.json_response(self._list_response(kind, ns, query))
        body: Any = None
        if method in {"POST", "PUT", "PATCH"}:
            raw = await request.read()
            if request.content_type == "application/apply-patch+yaml":
                body = yaml.safe_load(raw)
            elif request.content_type == "application/vnd.kubernetes.protobuf":
                body = kube_protobuf.decode(raw)
            else:
                body = json.loads(raw or b"null")
        dry_run = "dryRun" in query
        with self._lock:
            if method == "POST" and name is None:
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the body must be an object")
                target_ns = (
                    ns if ns is not None else body.get("metadata", {}).get("namespace", "default")
                )
                if dry_run:
                    return web.json_response(body, status=201)
                return web.json_response(self._create(kind, target_ns or "", body), status=201)
            if method == "DELETE" and name is None:
                deleted = [obj for obj in self._select(kind, ns, query)]
                for obj in deleted:
                    self._delete(kind, obj)
                return web.json_response(
                    {
                        "kind": f"{kind.kind}List",
                        "apiVersion": kind.group_version,
                        "metadata": {"resourceVersion": str(self._last_revision)},
                        "items": deleted,
                    }
                )
            assert name is not None
            if method == "GET":
                obj = copy.deepcopy(self._require(kind, ns or "", name))
                return web.json_response(_scale(obj) if sub == "scale" else obj)
            if method == "DELETE":
                obj = self._require(kind, ns or "", name)
                if not dry_run:
                    self._delete(kind, obj)
                return web.json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": name,
                            "kind": kind.plural,
                            "uid": obj["metadata"]["uid"],
                        },
                    }
                )
            if method == "PUT":
                current = self._require(kind, ns or "", name)
                expected = (body.get("metadata") or {}).get("resourceVersion")
                if expected and expected != current["metadata"]["resourceVersion"]:
                    raise ApiError(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {kind.plural} "{name}": the object has been modified; please apply your changes to the latest version and try again',
                    )
                return web.json_response(self._update(kind, current, body, sub, dry_run))
            if method == "PATCH":
                existing = self._objects.get(self._key(kind, ns or "", name))
                if existing is None and request.content_type == "application/apply-patch+yaml":
                    return web.json_response(self._create(kind, ns or "", body), status=201)
                current = self._require(kind, ns or "", name)
                base = _scale(current) if sub == "scale" else current
                patched = self._patch(request.content_type, base, body)
                if sub == "scale":
                    patched = {
                        **copy.deepcopy(current),
                        "spec": {**current["spec"], "replicas": patched["spec"]["replicas"]},
                    }
                    sub = None
                return web.json_response(self._update(kind, current, patched, sub, dry_run))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {path}")

    @staticmethod
    def _patch(content_type: str, current: dict[str, Any], body: Any) -> dict[str, Any]:
        if content_type == "application/json-patch+json":
            return dict(json_patch(current, body))
        if content_type == "application/strategic-merge-patch+json":
            return dict(strategic_merge_patch(current, body))
        if content_type in {"application/merge-patch+json", "application/apply-patch+yaml"}:
            return dict(merge_patch(current, body))
        raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")

    def _update(
        self,
        kind: Kind,
        current: dict[str, Any],
        new: dict[str, Any],
        sub: str | None,
        dry_run: bool,
    ) -> dict[str, Any]:
        updated = copy.deepcopy(current)
        if sub == "status":
            updated["status"] = new.get("status", {})
        else:
            meta = {**new.get("metadata", {})}
            for immutable in ("uid", "creationTimestamp", "name", "namespace", "generation"):
                if immutable in current["metadata"]:
                    meta[immutable] = current["metadata"][immutable]
            status = updated.get("status")
            updated = {**new, "metadata": meta}
            updated["apiVersion"], updated["kind"] = kind.group_version, kind.kind
            if status is not None and kind.kind not in _NO_SPEC:
                updated["status"] = status  # status changes only through /status
            if kind.kind not in _NO_SPEC and updated.get("spec") != current.get("spec"):
                meta["generation"] = current["metadata"].get("generation", 1) + 1
            self._default(kind, updated)
        if dry_run:
            return updated
        if updated == current:
            return copy.deepcopy(current)  # no-op writes keep the resourceVersion, as the API does
        stored = self._store(kind, updated, "MODIFIED")
        if sub is None and stored["metadata"]["generation"] != current["metadata"].get(
            "generation"
        ):
            return self._reconcile(kind, stored)
        return stored

    def _delete(self, kind: Kind, obj: dict[str, Any]) -> None:
        self._store(kind, copy.deepcopy(obj), "DELETED")
        uid = obj["metadata"]["uid"]
        for key, other in list(self._objects.items()):  # garbage collection of owned objects
            if any(ref.get("uid") == uid for ref in other["metadata"].get("ownerReferences", [])):
                self._delete(self._kinds[(key[0], key[1])], other)

    def _select(self, kind: Kind, namespace: str | None, query: Any) -> list[dict[str, Any]]:
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        return [
            copy.deepcopy(obj)
            for (group, plural, ns, _), obj in sorted(self._objects.items())
            if (group, plural) == (kind.group, kind.plural)
            and (namespace is None or ns == namespace)
            and label_selector_matches(labels, obj["metadata"].get("labels") or {})
            and field_selector_matches(fields, obj)
        ]

    def _list_response(self, kind: Kind, namespace: str | None, query: Any) -> dict[str, Any]:
        with self._lock:
            return {
                "kind": f"{kind.kind}List",
                "apiVersion": kind.group_version,
                "metadata": {"resourceVersion": str(self._last_revision)},
                "items": self._select(kind, namespace, query),
            }

    async def _watch(
        self, request: web.Request, kind: Kind, namespace: str | None
    ) -> web.StreamResponse:
        query = request.query
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        timeout = float(query.get("timeoutSeconds", "1800"))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        since = query.get("resourceVersion", "")
        if since in {"", "0"}:
            initial = self._list_response(kind, namespace, query)
            for obj in initial["items"]:
                await response.write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
            position = int(initial["metadata"]["resourceVersion"])
        else:
            position = int(since)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while not self._stopping:
                assert self._changed is not None
                changed = self._changed
                with self._lock:
                    pending = [e for e in self._events if e.revision > position]
                for event in pending:
                    position = event.revision
                    meta = event.obj["metadata"]
                    if (
                        event.kind == kind
                        and (namespace is None or meta.get("namespace", "") == namespace)
                        and label_selector_matches(labels, meta.get("labels") or {})
                        and field_selector_matches(fields, event.obj)
                    ):
                        line = json.dumps({"type": event.type, "object": event.obj})
                        await response.write(line.encode() + b"\n")
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(remaining, 5))
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


_NO_SPEC = {
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "Event",
    "Endpoints",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "ControllerRevision",
}


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": _now(),
        "lastTransitionTime": _now(),
    }


def _scale(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: obj["metadata"][k]
            for k in ("name", "namespace", "uid", "resourceVersion")
            if k in obj["metadata"]
        },
        "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
        "status": {"replicas": obj.get("status", {}).get("replicas", 0)},
    }


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        status=code,
    )


@contextlib.contextmanager
def running_emulator(**kwargs: Any) -> Iterator[KubeEmulator]:
    emulator = KubeEmulator(**kwargs).start()
    try:
        yield emulator
    finally:
        emulator.stop()
