"""Zero-downtime rolling deploy: steady load through the edge while a healthy release rolls out.

Prints one JSON line: {"benchmark": "zero_downtime", "sent", "failed", "deploy_s",
"p99_ms_before", "p99_ms_during"}; `failed` must be 0.
"""

from __future__ import annotations

import json
import secrets
import time

import httpx

from socialnet_ops.control.load import SteadyLoad, percentile_ms

RATE = 100.0
WARMUP_S = 10.0


def main() -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.common import ensure_release_limits
    from flows.deploy import deploy
    from tests.support.prefect import running_local_platform

    with (
        prefect_test_harness(server_startup_timeout=120),
        running_local_platform(prefix="snb-") as platform,
    ):
        ensure_release_limits(["local"])
        deploy(env="local", version="bench-1")
        edge = platform.endpoints().edge_url
        username = f"bench{secrets.token_hex(3)}"
        httpx.post(
            f"{edge}/api/users", json={"username": username, "password": secrets.token_urlsafe(12)}
        ).raise_for_status()
        load = SteadyLoad(
            edge, [f"/api/users/{username}", f"/api/users/{username}/posts", "/version"], rate=RATE
        ).start()
        time.sleep(WARMUP_S)
        deploy_started = time.monotonic()
        deploy(env="local", version="bench-2")
        deploy_ended = time.monotonic()
        time.sleep(2)
        samples = load.stop()
    before = [s for s in samples if s.started < deploy_started]
    during = [s for s in samples if deploy_started <= s.started <= deploy_ended]
    failed = [s for s in samples if not s.ok]
    result = {
        "benchmark": "zero_downtime",
        "sent": len(samples),
        "failed": len(failed),
        "failures": sorted({f"{s.status} {s.error}".strip() for s in failed}),
        "deploy_s": round(deploy_ended - deploy_started, 1),
        "rate_per_s": RATE,
        "p99_ms_before": percentile_ms(before, 0.99),
        "p99_ms_during": percentile_ms(during, 0.99),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
