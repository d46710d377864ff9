"""Platforms: one interface (`base.Platform`), a local and a Kubernetes implementation."""
