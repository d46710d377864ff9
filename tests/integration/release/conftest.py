"""Two local environments, a staging and the production it promotes from, for the release flow.

Both run on this machine as local platforms in one state root: `rel-stage` (rolling deploys) and
`rel-prod` (canary, short steps, `promotion.source: rel-stage`), each with its backup bucket in
its own AWS emulator (the bucket Terraform would create).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.common import ensure_release_limits
from socialnet_ops.adapters.s3 import ensure_bucket_exists
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms import backup_target_for
from socialnet_ops.platforms.local import LocalPlatform
from tests.integration.canary.conftest import FAST_ANALYSIS
from tests.support.prefect import environment_variable, state_root

STAGING = "rel-stage"
PRODUCTION = "rel-prod"
SESSION = secrets.token_hex(3)

FAST_CANARY: dict[str, Any] = {
    "strategy": "canary",
    "steps": [{"set_weight": 50}, {"analysis": {"duration": "10s"}}, {"set_weight": 100}],
    "analysis": FAST_ANALYSIS,
    "rollback_on_failure": True,
}


def version(name: str) -> str:
    """Versions unique to the session: cached builds outlive a session's state folder."""
    return f"{name}-{SESSION}"


def _environment(name: str, release: dict[str, Any], promotion: str | None) -> dict[str, Any]:
    document = yaml.safe_load((repo_root() / "deployments/environments/local.yaml").read_text())
    document["name"] = name
    document["platform"].update({"ready_timeout": "60s", "drain_timeout": "3s"})
    document["release"] = release
    document["backup"]["bucket"] = f"socialnet-backups-{name}"
    if promotion:
        document["promotion"] = {"source": promotion}
    return document


@dataclass
class Lifecycle:
    staging: LocalPlatform
    production: LocalPlatform


@pytest.fixture(scope="package")
def lifecycle(prefect_server: None) -> Iterator[Lifecycle]:
    folder = Path(tempfile.mkdtemp(prefix="snr-catalog-"))
    documents = {
        STAGING: _environment(STAGING, {"strategy": "rolling", "rollback_on_failure": True}, None),
        PRODUCTION: _environment(PRODUCTION, FAST_CANARY, STAGING),
    }
    for name, document in documents.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    platforms: list[LocalPlatform] = []
    try:
        with environment_variable("SOCIALNET_ENVIRONMENTS_DIR", str(folder)), state_root("snr-"):
            ensure_release_limits([STAGING, PRODUCTION])
            try:
                for name in (STAGING, PRODUCTION):
                    platform = LocalPlatform(load_environment(name))
                    platforms.append(platform)
                    platform.start()
                    store = backup_target_for(load_environment(name)).store
                    ensure_bucket_exists(store.model_copy(update={"create_bucket": True}))
                yield Lifecycle(staging=platforms[0], production=platforms[1])
            finally:
                for platform in platforms:
                    platform.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
