"""Platforms: one interface (`base.Platform`), a local and a Kubernetes implementation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from socialnet_ops.platforms.base import Platform, PlatformError

if TYPE_CHECKING:
    from socialnet_ops.environments import Environment


def platform_for(environment: Environment) -> Platform:
    """The platform an environment runs on (imported lazily: each pulls its own tools)."""
    kind = environment.platform.kind
    if kind == "local":
        from socialnet_ops.platforms.local import LocalPlatform

        return LocalPlatform(environment)
    if kind == "kubernetes":
        from socialnet_ops.platforms.kubernetes import KubernetesPlatform

        return KubernetesPlatform(environment)
    raise PlatformError(f"environment {environment.name!r}: unknown platform kind {kind!r}")
