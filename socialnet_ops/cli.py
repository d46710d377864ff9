"""`socialnet-ops`: the command line in front of every flow."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from socialnet_ops.environments import EnvironmentError, load_catalog

app = typer.Typer(
    name="socialnet-ops",
    help="The DevOps control plane of the socialnet three-tier app.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

EnvOption = Annotated[
    str,
    typer.Option("--env", "-e", help="Environment name (deployments/environments/<name>.yaml)."),
]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code=2)


@app.command()
def environments() -> None:
    """List the environments of the catalog, validated."""
    try:
        catalog = load_catalog()
    except EnvironmentError as error:
        raise _fail(str(error)) from None
    table = Table("environment", "platform", "domain", "release", "backup", "promotes from")
    for environment in catalog.values():
        table.add_row(
            environment.name,
            environment.platform.kind,
            environment.domain,
            environment.release.strategy,
            environment.backup.schedule if environment.backup else "-",
            environment.promotion.source if environment.promotion else "-",
        )
    console.print(table)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable status.")] = False,
) -> None:
    """Show the environments and what is running in each."""
    from socialnet_ops.status import collect_status

    try:
        report = collect_status()
    except EnvironmentError as error:
        raise _fail(str(error)) from None
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    table = Table("environment", "platform", "serving", "canary", "programs", "urls")
    for row in report["environments"]:
        programs = row.get("programs") or []
        healthy = sum(1 for program in programs if program["state"] == "RUNNING")
        summary = f"{healthy}/{len(programs)} running" if programs else row["state"]
        restarts = [f"{p['name']} restarted {p['restarts']}x" for p in programs if p["restarts"]]
        if restarts:
            summary += "\n" + "\n".join(restarts)
        table.add_row(
            row["name"],
            row["platform"],
            row.get("stable_version") or "-",
            f"{row['canary_version']} @ {row['canary_weight']}%"
            if row.get("canary_version")
            else "-",
            summary,
            "\n".join(f"{key}: {value}" for key, value in (row.get("urls") or {}).items()),
        )
    console.print(table)
    control_plane = report.get("control_plane")
    if control_plane:
        console.print(
            f"Prefect UI: {control_plane.get('ui_url', '-')}  ({control_plane.get('state')})"
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
