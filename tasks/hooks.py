"""The canary's Flagger-style hooks as tasks: pre-rollout tests, confirmation gates, the load test,
the post-rollout notification (through the `socialnet-alerts` block the control plane registers)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import cast

from prefect import get_run_logger, task
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.cache_policies import NO_CACHE

from socialnet_ops.adapters import hooks
from socialnet_ops.core.environments import ConfirmSpec, HookSpec, LoadTestSpec, PostRolloutSpec
from tasks.platform import environment_platform

ALERT_BLOCK = "socialnet-alerts"


def hook_context(env: str, version: str, stable_version: str, phase: str) -> hooks.HookContext:
    platform = environment_platform(env)
    return hooks.HookContext(
        environment=env,
        version=version,
        stable_version=stable_version,
        phase=phase,
        canary_urls=platform.track_urls("canary"),
        stable_urls=platform.track_urls("stable"),
    )


@task(name="pre-rollout-tests", cache_policy=NO_CACHE)
def pre_rollout_tests(
    env: str, spec: HookSpec, version: str, stable_version: str
) -> tuple[bool, str]:
    """The policy's tests against the canary's own address, before any user reaches it."""
    context = hook_context(env, version, stable_version, "pre-rollout")
    if not context.canary_urls:
        return False, "the canary runs no replica to test"
    if spec.command:
        return hooks.run_command(spec.command, context, spec.timeout)
    assert spec.url is not None
    return hooks.call_url(spec.url, context, spec.timeout)


@task(name="confirm-gate", cache_policy=NO_CACHE)
def confirm_gate(
    env: str,
    spec: ConfirmSpec,
    phase: str,
    version: str,
    stable_version: str,
    stop: Callable[[], bool],
) -> tuple[bool, str]:
    """Ask the gate's URL until it says yes or no; `stop()` (a promote/abort request) ends it."""
    assert spec.url is not None
    context = hook_context(env, version, stable_version, phase)
    get_run_logger().info("%s: asking %s (up to %.0f s)", phase, spec.url, spec.timeout)
    return hooks.ask_until_answered(spec.url, context, spec.timeout, spec.interval, stop)


def start_load_test(env: str, spec: LoadTestSpec) -> hooks.LoadGenerator:
    """Bounded synthetic traffic to both tracks' own addresses (not a task: it runs beside the
    walk's steps in this process and ends with them)."""
    platform = environment_platform(env)
    targets = {track: platform.track_urls(track) for track in ("stable", "canary")}
    return hooks.LoadGenerator(targets, spec.paths, spec.rate, spec.duration).start()


@task(name="post-rollout", cache_policy=NO_CACHE)
def post_rollout(
    env: str, spec: PostRolloutSpec, version: str, stable_version: str, outcome: str, why: str
) -> list[str]:
    """Tell whoever asked how the canary ended; a failure here is logged, never raised."""
    logger = get_run_logger()
    subject = f"canary {version} {outcome} on {env}"
    said: list[str] = []
    if spec.notify:
        try:
            block = cast(
                CustomWebhookNotificationBlock, CustomWebhookNotificationBlock.load(ALERT_BLOCK)
            )
            block.notify(body=f"{why} (stable was {stable_version})", subject=subject)
            said.append(f"notified through the {ALERT_BLOCK} block")
        except Exception as error:  # no block registered, webhook down: the release stands
            said.append(f"no notification: {type(error).__name__}: {str(error)[:200]}")
    if spec.url:
        context = dataclasses.replace(
            hook_context(env, version, stable_version, "post-rollout"),
            metadata={"outcome": outcome, "reason": why[:300]},
        )
        said.append(hooks.call_url(spec.url, context, spec.timeout)[1])
    for line in said:
        logger.info("post-rollout: %s", line)
    return said
