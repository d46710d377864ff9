"""How `--dist loadfile` hands test files to xdist workers, with one change: the files of a package
whose package- or session-scoped fixture starts platforms go to one worker, so that fixture is set
up once (a canary platform, a staging and production pair, a local platform) instead of once per
worker that happens to get one of its files.

xdist groups by file (`loadfile`) or by explicit marks (`loadgroup`, which spreads every unmarked
test on its own); neither groups by package, so this subclass changes only the grouping key.
"""

from __future__ import annotations

from xdist.scheduler import LoadFileScheduling

# tests/integration/<package>: the files share a platform-starting fixture of that package, and
# each test sets up the state it needs. (Not `release`: its first-release test needs a production
# that nothing has released to yet.)
SHARED_FIXTURE_PACKAGES = frozenset({"canary", "flows", "platform"})


def scheduling_unit(nodeid: str) -> str:
    """The package for the packages above, the file otherwise."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    shared = (
        parts[:2] == ["tests", "integration"] and parts[2:3] and parts[2] in SHARED_FIXTURE_PACKAGES
    )
    return "/".join(parts[:3]) if shared and len(parts) > 3 else path


class SharedFixtureScheduling(LoadFileScheduling):
    def _split_scope(self, nodeid: str) -> str:
        return scheduling_unit(nodeid)
