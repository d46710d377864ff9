"""Home timeline under load: a private PostgreSQL seeded with 1,000 users / 100,000 posts, the API
under uvicorn, and concurrent HTTP clients over loopback.

    uv run python benchmarks/api_timeline.py [--concurrency 32] [--duration 20] [--workers 2]

Prints progress on stderr and, as its last line on stdout, one JSON object:
{"benchmark": "api_timeline", "requests_per_s": ..., "p50_ms": ..., "p99_ms": ..., ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.dialects import postgresql

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: make `tests.support` importable

from alembic import command  # noqa: E402

from app.api.core.cursor import Cursor  # noqa: E402
from app.api.core.db import alembic_config  # noqa: E402
from app.api.core.security import hash_password  # noqa: E402
from app.api.crud import timeline_statement  # noqa: E402
from tests.support.postgres import PostgresServer, free_port  # noqa: E402

DATABASE = "socialnet"
PASSWORD = "benchmark password"  # noqa: S105 (seeded throw-away users)
TOKEN_SECRET = "benchmark-token-secret-0123456789abcdef"  # noqa: S105 (throw-away server)
FOLLOWS_PER_USER = 50


def log(message: str) -> None:
    print(f"[api_timeline] {message}", file=sys.stderr, flush=True)


def seed(server: PostgresServer, users: int, posts: int) -> None:
    """Bulk SQL only: generate_series inside the server is seconds, not minutes of ORM inserts."""
    password_hash = hash_password(PASSWORD)  # one hash shared by all users: logins still verify
    with psycopg.connect(server.dsn_for(DATABASE), autocommit=True) as connection:
        connection.execute(
            "INSERT INTO users (username, password_hash, display_name, created_at)"
            " SELECT 'user_' || n, %s, 'User ' || n, now() - interval '400 days'"
            " FROM generate_series(1, %s) AS n",
            (password_hash, users),
        )
        # Strides 19 * k (k = 1..50) stay below the user count, so followees are distinct and
        # never the follower.
        connection.execute(
            "INSERT INTO follows (follower_id, followee_id)"
            " SELECT u.id, ((u.id - 1 + 19 * k) %% %(users)s) + 1"
            " FROM users u CROSS JOIN generate_series(1, %(follows)s) AS k",
            {"users": users, "follows": FOLLOWS_PER_USER},
        )
        # Spread over a year, ids not in time order (as with backfilled or clock-skewed writes).
        connection.execute(
            "INSERT INTO posts (author_id, text, created_at)"
            " SELECT 1 + (n * 7919) %% %(users)s, 'post number ' || n || ' ' || repeat('x', n %% 200),"
            "        now() - (random() * interval '365 days')"
            " FROM generate_series(1, %(posts)s) AS n",
            {"users": users, "posts": posts},
        )
        connection.execute(
            "INSERT INTO likes (post_id, user_id)"
            " SELECT p.id, 1 + (p.id * k * 31) %% %(users)s FROM posts p"
            " CROSS JOIN generate_series(1, 3) AS k ON CONFLICT DO NOTHING",
            {"users": users},
        )
        connection.execute(
            "INSERT INTO comments (post_id, author_id, text)"
            " SELECT p.id, 1 + (p.id * 17) %% %(users)s, 'comment on ' || p.id"
            " FROM posts p WHERE p.id %% 2 = 0",
            {"users": users},
        )
        connection.execute("VACUUM ANALYZE")


def explain_timeline(server: PostgresServer, viewer_id: int) -> tuple[float, float]:
    """EXPLAIN ANALYZE of the exact statement the API runs; first page and a deep page."""
    timings = []
    with psycopg.connect(server.dsn_for(DATABASE)) as connection:
        deep_cursor = Cursor(created_at=datetime(2000, 1, 1, tzinfo=UTC), id=2**62)
        middle = connection.execute(
            "SELECT created_at, id FROM posts ORDER BY created_at DESC LIMIT 1 OFFSET 50000"
        ).fetchone()
        assert middle is not None
        for cursor in (None, Cursor(created_at=middle[0], id=middle[1]), deep_cursor):
            statement = timeline_statement(viewer_id, cursor, 20).compile(
                dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
            )
            plan = connection.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}").fetchall()
            lines = [row[0] for row in plan]
            if cursor is None:
                log("timeline plan (first page):\n    " + "\n    ".join(lines))
            timings.append(float(lines[-1].split(":")[1].split()[0]))
    return timings[0], timings[1]


def start_api(
    server: PostgresServer, workers: int, pool_size: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    environment = {
        **os.environ,
        "SOCIALNET_DB_HOST": server.host,
        "SOCIALNET_DB_PORT": str(server.port),
        "SOCIALNET_DB_NAME": DATABASE,
        "SOCIALNET_DB_USER": server.superuser,
        "SOCIALNET_DB_POOL_SIZE": str(pool_size),
        "SOCIALNET_TOKEN_SECRET": TOKEN_SECRET,
        "SOCIALNET_VERSION": "benchmark",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            # Longer than any pause between requests: no keep-alive close racing a reuse.
            "--timeout-keep-alive",
            "60",
            "--log-level",
            "warning",
        ],
        cwd=REPO_ROOT,
        env=environment,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError("the API did not become ready within 60 s")


async def run_load(
    base_url: str, concurrency: int, duration_s: float, max_requests: int, users: int
) -> tuple[list[float], int, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def login(number: int) -> dict[str, str]:
            response = await client.post(
                "/api/auth/token", json={"username": f"user_{number}", "password": PASSWORD}
            )
            response.raise_for_status()
            return {"Authorization": f"Bearer {response.json()['access_token']}"}

        step = max(1, users // concurrency)
        tokens = await asyncio.gather(*(login(1 + i * step) for i in range(concurrency)))
        latencies: list[float] = []
        errors = 0
        started = time.perf_counter()
        stop_at = started + duration_s

        async def reader(headers: dict[str, str]) -> None:
            nonlocal errors
            cursor: str | None = None
            pages_read = 0
            while time.perf_counter() < stop_at and len(latencies) + errors < max_requests:
                # Mostly first pages, as people open the app; every few requests scroll on.
                params = {"limit": "20"} if cursor is None else {"limit": "20", "cursor": cursor}
                sent = time.perf_counter()
                try:
                    response = await client.get("/api/timeline", headers=headers, params=params)
                except httpx.TransportError:
                    errors += 1
                    cursor = None
                    continue
                elapsed = time.perf_counter() - sent
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append(elapsed)
                pages_read += 1
                cursor = response.json()["next_cursor"] if pages_read % 4 else None

        await asyncio.gather(*(reader(headers) for headers in tokens))
        return latencies, errors, time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--pool-size", type=int, default=10, help="database pool per worker")
    arguments = parser.parse_args()

    with PostgresServer(settings=["shared_buffers=256MB", "max_connections=300"]) as server:
        server.create_database(DATABASE)
        config = alembic_config(server.sqlalchemy_url(DATABASE))
        config.attributes["configure_logging"] = False
        command.upgrade(config, "head")
        seeding_started = time.perf_counter()
        seed(server, arguments.users, arguments.posts)
        seed_s = time.perf_counter() - seeding_started
        log(f"seeded {arguments.users} users / {arguments.posts} posts in {seed_s:.1f} s")
        first_page_sql_ms, deep_page_sql_ms = explain_timeline(server, viewer_id=1)
        log(
            f"timeline SQL: first page {first_page_sql_ms:.2f} ms, page at 50% {deep_page_sql_ms:.2f} ms"
        )

        api, base_url = start_api(server, arguments.workers, arguments.pool_size)
        # This machine may be shared: record how busy it was, to read the numbers in context.
        load_average = round(os.getloadavg()[0], 2)
        try:
            log(
                f"load: {arguments.concurrency} clients for {arguments.duration:.0f} s on {base_url}"
            )
            latencies, errors, elapsed = asyncio.run(
                run_load(
                    base_url,
                    arguments.concurrency,
                    arguments.duration,
                    arguments.max_requests,
                    arguments.users,
                )
            )
        finally:
            api.terminate()
            api.wait(timeout=30)

    result = {
        "benchmark": "api_timeline",
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
        "requests": len(latencies),
        "errors": errors,
        "users": arguments.users,
        "posts": arguments.posts,
        "follows_per_user": FOLLOWS_PER_USER,
        "concurrency": arguments.concurrency,
        "duration_s": round(elapsed, 1),
        "uvicorn_workers": arguments.workers,
        "cpus": os.cpu_count(),
        "timeline_sql_first_page_ms": first_page_sql_ms,
        "timeline_sql_mid_history_ms": deep_page_sql_ms,
        "seed_s": round(seed_s, 1),
        "load_average_1m_at_start": load_average,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
