"""Fixtures of the reliability drills (issue #11): each drill ends with a clear failure or a correct
result, nothing half-applied, nothing lost.

The webhook drill reuses the webhook suite's set-up as is: a fake GitLab, the receiver in-process
and throwaway deployments on the session's real Prefect server.
"""

from __future__ import annotations

from tests.integration.webhooks.conftest import (  # noqa: F401  (fixtures, by name)
    fake_gitlab,
    gitlab_env,
    receiver,
    webhook_deployments,
)
