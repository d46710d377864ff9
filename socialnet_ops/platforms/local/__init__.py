"""The local platform: supervisord, PostgreSQL, HAProxy, Prometheus, moto and OpenBao on 127.0.0.1."""

from socialnet_ops.platforms.local.platform import LocalPlatform, program_name

__all__ = ["LocalPlatform", "program_name"]
