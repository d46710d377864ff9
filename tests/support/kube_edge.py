"""A stand-in for the cluster's data plane: what the ingress controller and the API pods would
answer, derived from the objects in the Kubernetes API emulator.

The emulator runs no pods, so flows that probe the edge (smoke tests) or read the cluster's
Prometheus (canary analysis) talk to this instead. For each request it does what ingress-nginx
does with the chart's Ingresses: `/api/...` and `/version` go to the canary Service with the
canary Ingress' weight, else to the stable one; a Service leads to its Deployment by selector,
and the Deployment's pod template says which version and track answer. `/` is the front.
It counts answers per (route, status, version, track) and serves them at `/metrics` in the API's
own metric names, for a real Prometheus to scrape (`scraping_prometheus` starts one).

Like the API, it honours a build's fault settings (`SOCIALNET_FAULT_ERROR_RATE`,
`SOCIALNET_FAULT_LATENCY_MS` in the pod's env, as the chart passes a release's settings) on
`/api` only; it keeps the users signed up (`POST /api/users`) to answer their public profiles
(`GET /api/users/<name>`), and names the track that answered in `X-Socialnet-Server` (`stable` /
`canary`), as the local platform's HAProxy names its servers (stableN / canaryN).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.kube_emulator import KubeEmulator, label_selector_matches
from tests.support.prometheus import prometheus_scraping

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _setting(env: dict[str, str], name: str) -> float:
    """A numeric fault setting of a pod's env; 0 when unset or empty."""
    return float(env.get(name) or 0)


class KubeEdge:
    def __init__(self, kube: KubeEmulator, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.requests: Counter[tuple[str, str, str, str, str]] = Counter()
        self.latency: dict[tuple[str, str, str, str], list[float]] = {}
        # Version -> share of /api answers that are 500 (fault drills), added latency in s.
        self.faults: dict[str, float] = {}
        self.slow: dict[str, float] = {}
        self.users: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- routing as ingress-nginx would --------------------------------------------------------

    def _ingresses(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        stable = canary = None
        for ingress in self.kube.objects("networking.k8s.io/v1", "Ingress", self.namespace):
            annotations = ingress["metadata"].get("annotations") or {}
            if annotations.get("nginx.ingress.kubernetes.io/canary") == "true":
                canary = ingress
            else:
                stable = ingress
        return stable, canary

    @staticmethod
    def _service_for(ingress: dict[str, Any], path: str) -> str | None:
        best, length = None, -1
        for rule in ingress["spec"].get("rules", []):
            for entry in rule.get("http", {}).get("paths", []):
                prefix = entry["path"]
                exact = entry.get("pathType") == "Exact"
                matches = (
                    path == prefix
                    if exact
                    else path == prefix
                    or path.startswith(prefix.rstrip("/") + "/")
                    or prefix == "/"
                )
                if matches and len(prefix) > length:
                    best, length = entry["backend"]["service"]["name"], len(prefix)
        return best

    def _deployment_for(self, service_name: str) -> dict[str, Any] | None:
        service = self.kube.get("v1", "Service", self.namespace, service_name)
        if service is None:
            return None
        selector = ",".join(f"{k}={v}" for k, v in service["spec"].get("selector", {}).items())
        for deployment in self.kube.objects("apps/v1", "Deployment", self.namespace):
            labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
            if label_selector_matches(selector, labels):
                return deployment
        return None

    def route(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[str, dict[str, str]] | None:
        """(component, pod env) that answers `path`, or None (no backend: 503). As ingress-nginx:
        a request whose `canary-by-header` header holds `canary-by-header-value` goes to the
        canary whatever its weight; the others by weight."""
        stable, canary = self._ingresses()
        if stable is None:
            return None
        service = self._service_for(stable, path)
        if canary is not None and self._service_for(canary, path):
            annotations = canary["metadata"]["annotations"]
            weight = int(annotations.get("nginx.ingress.kubernetes.io/canary-weight", "0"))
            header = annotations.get("nginx.ingress.kubernetes.io/canary-by-header")
            wanted = annotations.get("nginx.ingress.kubernetes.io/canary-by-header-value", "always")
            sent = {name.lower(): value for name, value in (headers or {}).items()}
            by_header = header is not None and sent.get(header.lower()) == wanted
            if by_header or random.uniform(0, 100) < weight:
                service = self._service_for(canary, path)
        deployment = self._deployment_for(service) if service else None
        if deployment is None:
            return None
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {item["name"]: str(item.get("value", "")) for item in container.get("env", [])}
        return container["name"], env

    # --- answers -------------------------------------------------------------------------------

    def answer(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], str | None]:
        """(status, JSON body, track that answered or None) for one request."""
        if path == "/metrics":
            return 200, {}, None
        routed = self.route(path, headers)
        if routed is None:
            return 503, {"detail": "no backend"}, None
        component, env = routed
        if component == "front":
            return 200, {"front": True}, None
        version = env.get("SOCIALNET_VERSION", "dev")
        track = env.get("SOCIALNET_TRACK", "stable")
        started = time.monotonic()
        if path == "/version":
            time.sleep(self.slow.get(version, 0.0))
            status, body_out = (
                200,
                {"version": version, "git_sha": env.get("SOCIALNET_GIT_SHA"), "track": track},
            )
            route = "/version"
        else:
            route = "/api/users/{username}" if path.startswith("/api/users/") else path
            # As the API's fault injector: added latency, then a share of 500s, on /api only.
            time.sleep(
                self.slow.get(version, 0.0) + _setting(env, "SOCIALNET_FAULT_LATENCY_MS") / 1000
            )
            error_rate = max(
                self.faults.get(version, 0.0), _setting(env, "SOCIALNET_FAULT_ERROR_RATE")
            )
            if random.random() < error_rate:
                status, body_out = 500, {"detail": "injected fault"}
            else:
                status, body_out = self._api(method, path, body)
        with self._lock:
            self.requests[(route, method, str(status), version, track)] += 1
            self.latency.setdefault((route, method, version, track), []).append(
                time.monotonic() - started
            )
        return status, body_out, track

    def _api(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Sign-up and public profiles as the API answers them; anything else needs a login."""
        if method == "POST" and path == "/api/users":
            try:
                username = str(json.loads(body or b"{}")["username"])
            except (ValueError, KeyError, TypeError):
                return 422, {"detail": "username is required"}
            with self._lock:
                if username in self.users:
                    return 409, {"detail": "username already taken"}
                self.users.add(username)
            return 201, {"username": username}
        name = path.removeprefix("/api/users/")
        if method == "GET" and path.startswith("/api/users/") and "/" not in name and name != "me":
            with self._lock:
                known = name in self.users
            return (200, {"username": name}) if known else (404, {"detail": "user not found"})
        return 401, {"detail": "not authenticated"}

    def metrics(self) -> str:
        lines = ["# TYPE http_requests_total counter"]
        with self._lock:
            for (route, method, status, version, track), count in sorted(self.requests.items()):
                lines.append(
                    f'http_requests_total{{route="{route}",method="{method}",status="{status}",version="{version}",track="{track}"}} {count}'
                )
            lines.append("# TYPE http_request_duration_seconds histogram")
            for (route, method, version, track), samples in sorted(self.latency.items()):
                labels = f'route="{route}",method="{method}",version="{version}",track="{track}"'
                for bucket in BUCKETS:
                    inside = sum(1 for sample in samples if sample <= bucket)
                    lines.append(
                        f'http_request_duration_seconds_bucket{{{labels},le="{bucket}"}} {inside}'
                    )
                lines.append(
                    f'http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {len(samples)}'
                )
                lines.append(f"http_request_duration_seconds_count{{{labels}}} {len(samples)}")
                lines.append(f"http_request_duration_seconds_sum{{{labels}}} {sum(samples)}")
        return "\n".join(lines) + "\n"

    # --- the HTTP server -----------------------------------------------------------------------

    def start(self) -> KubeEdge:
        edge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self) -> None:
                path = self.path.split("?", 1)[0]
                track = None
                if path == "/metrics":
                    payload = edge.metrics().encode()
                    content_type = "text/plain; version=0.0.4"
                    status = 200
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    request_body = self.rfile.read(length) if length else b""
                    status, body, track = edge.answer(
                        self.command, path, request_body, dict(self.headers.items())
                    )
                    payload = json.dumps(body).encode()
                    content_type = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if track is not None:
                    self.send_header("X-Socialnet-Server", track)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _reply
            do_POST = _reply

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="kube-edge", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def running_edge(kube: KubeEmulator, namespace: str) -> Iterator[KubeEdge]:
    edge = KubeEdge(kube, namespace).start()
    try:
        yield edge
    finally:
        edge.stop()


# --- a real Prometheus scraping the edge ---------------------------------------------------------

EDGE_JOB = "kube-edge"


@contextmanager
def scraping_prometheus(
    edge: KubeEdge, folder: Path, scrape_interval: int = 1, ready_timeout: float = 45.0
) -> Iterator[str]:
    """A Prometheus on 127.0.0.1 scraping the edge's /metrics every `scrape_interval` seconds
    (the edge labels its series with version and track, as the API does).

    Yields its URL once it has scraped the edge (`up{job="kube-edge"} == 1`); always stopped.
    """
    with prometheus_scraping(
        [edge.url.removeprefix("http://")],
        folder,
        job=EDGE_JOB,
        ready_timeout=ready_timeout,
        scrape_interval=scrape_interval,
    ) as url:
        yield url
