"""adaexport farm join|ls: devices on a Ray cluster (see adaexport.farm)."""

from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

import typer
from rich.table import Table

from .cli import app, console, err_console, fail, tagged, user_errors

farm_app = typer.Typer(help="Devices on a Ray cluster: join one, list them.", no_args_is_help=True)
app.add_typer(farm_app, name="farm")

ENVIRONMENT = 3         # exit code: the environment cannot do it (Ray missing, cluster unreachable)


def farm_call(fn, *args, **kw):
    """Call into adaexport.farm, turning 'Ray missing / unreachable' into one line and exit 3."""
    from .farm import FarmUnavailable

    try:
        return fn(*args, **kw)
    except FarmUnavailable as exc:
        fail(str(exc), code=ENVIRONMENT)


@farm_app.command("join")
@user_errors
def join(
    address: str = typer.Option(..., "--address", help="The cluster's head, HOST:PORT (as printed by ray start --head)."),
    device: Optional[str] = typer.Option(None, "--device", help="Join as this target (default: the target detected here)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the ray start command instead of running it."),
    ray_args: Optional[List[str]] = typer.Argument(None, help="More ray start options, after --, e.g. -- --num-cpus 4 --block."),
) -> None:
    """Join this machine to a Ray cluster as an adaexport device: runs ray start with this
    device's identity, target and installed backends as custom resources."""
    from .farm.cluster import join_command

    command = farm_call(join_command, address, device, list(ray_args or []))
    if dry_run:
        print(" ".join(command))
        return
    sys.stdout.flush()
    os.execv(command[0], command)       # ray start takes over (with --block it stays in the foreground)


@farm_app.command("ls")
@user_errors
def ls(
    address: str = typer.Option(..., "--ray", "--address", help="The cluster, HOST:PORT or ray://HOST:PORT."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List the devices on the cluster: identity, target, backends, power modes."""
    from .farm.cluster import list_devices

    rows = farm_call(list_devices, address)
    if json_out:
        print(json.dumps({"devices": rows}, indent=1))
        return
    table = Table(title=f"{len(rows)} adaexport device(s) at {address}")
    for col in ("device", "target", "backends", "power modes", "nodes", "state"):
        table.add_column(col)
    for row in rows:
        state = "alive" if row["alive"] else "gone"
        table.add_row(row["key"], row["target"], ", ".join(row["backends"]), ", ".join(row.get("power_modes", [])),
                      str(len(row["nodes"])), state if "error" not in row else f"error: {row['error']}")
    console.print(table)


def profile_on_farm_command(directory, address: str, devices: Optional[str], options: list[str], json_out: bool) -> None:
    """`adaexport profile DIR --ray ADDRESS`: render what adaexport.farm.profiling did."""
    from .farm.profiling import profile_on_farm

    manifest, outcomes = farm_call(profile_on_farm, directory, address, devices=devices, options=options)
    failed = [o for o in outcomes if o.error]
    if json_out:
        print(json.dumps({"manifest": str(directory / "manifest.json"),
                          "devices": [o.as_dict() for o in outcomes]}, indent=1))
    else:
        for o in outcomes:
            if o.error:
                err_console.print(tagged("device failed:", "red", f"{o.device}: {o.error}"), highlight=False)
            else:
                console.print(f"{o.profiled_as}: {len(o.engines)} engine(s), mode(s) {', '.join(o.modes)}",
                              highlight=False)
            for reason in o.skipped:
                err_console.print(tagged("not sent:", "yellow", f"{o.device}: {reason}"), highlight=False)
    if failed:
        raise typer.Exit(ENVIRONMENT)
