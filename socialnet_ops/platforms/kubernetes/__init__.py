"""The kubernetes platform: the socialnet Helm chart on a cluster, driven by helm and the
official kubernetes client."""

from socialnet_ops.platforms.kubernetes.platform import KubernetesPlatform

__all__ = ["KubernetesPlatform"]
