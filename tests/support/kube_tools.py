"""Finding helm, kubectl and promtool for tests, and the environment that keeps them in a sandbox.

With CI=true a missing tool fails the test (a broken runner), never skips it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from socialnet_ops.platforms.base import PlatformError
from socialnet_ops.platforms.kubernetes.helm import INSTALL_HINT, helm_binary
from tests.support.requirements import unavailable


def _missing(message: str) -> None:
    unavailable(message)


def require_helm() -> str:
    try:
        return helm_binary()
    except PlatformError:
        _missing(f"helm is not installed: {INSTALL_HINT}")
        raise AssertionError("unreachable") from None


def require_tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        _missing(f"{name} is not installed: {hint}")
        raise AssertionError("unreachable")
    return found


def sandbox_env(folder: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    """KUBECONFIG plus the caches and config homes helm and kubectl would write under $HOME."""
    env = {
        "KUBECACHEDIR": str(folder / "kube-cache"),
        "HELM_CACHE_HOME": str(folder / "helm-cache"),
        "HELM_CONFIG_HOME": str(folder / "helm-config"),
        "HELM_DATA_HOME": str(folder / "helm-data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def run_helm(helm: str, *arguments: str) -> str:
    """helm's output, in a sandbox of its own (no user config or cache); fails the test on error."""
    with tempfile.TemporaryDirectory(prefix="helm-unit-") as folder:
        result = subprocess.run(
            [helm, *arguments],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **sandbox_env(Path(folder))},
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, f"helm {' '.join(arguments[:2])}: {result.stderr}"
    return result.stdout
