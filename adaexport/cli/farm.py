"""adaexport farm join|ls, and the rendering of `profile --ray` (see adaexport.farm)."""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer
from rich.table import Table

from ._app import app, command, console, emit, err_console, tagged
from .options import JSON_OPT

farm_app = typer.Typer(help="Devices on a Ray cluster: join one, list them.", no_args_is_help=True)
app.add_typer(farm_app, name="farm")


@farm_app.command("join")
@command
def farm_join(
    address: str = typer.Option(..., "--address", metavar="HOST:PORT", show_default=False,
                                help="The cluster's head, as printed by ray start --head."),
    device: Optional[str] = typer.Option(None, "--device", metavar="TARGET",
                                         help="Join as this target (default: the target detected here)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the ray start command instead of running it."),
    ray_args: Optional[List[str]] = typer.Argument(None, metavar="[-- RAY_OPTIONS]", show_default=False,
                                                   help="More ray start options, after --, e.g. -- --num-cpus 4."),
    json_out: bool = JSON_OPT,
) -> None:
    """Join this machine to a Ray cluster as an adaexport device: runs ray start with this device's identity, target
    and installed backends as custom resources.

    \b
    Example: adaexport farm join --address 10.0.0.1:6379 --dry-run
    """
    from .. import api

    result = api.farm_join(address, device, ray_args)
    if dry_run or json_out:
        return emit(result, json_out, lambda r: print(" ".join(r.command)))
    sys.stdout.flush()
    os.execv(result.command[0], result.command)     # ray start takes over (with --block it stays in the foreground)


def _render_devices(result) -> None:
    table = Table(title=f"{len(result.devices)} adaexport device(s) at {result.address}")
    for col in ("device", "target", "backends", "power modes", "nodes", "state"):
        table.add_column(col)
    for row in result.devices:
        state = "alive" if row["alive"] else "gone"
        table.add_row(row["key"], row["target"], ", ".join(row["backends"]), ", ".join(row.get("power_modes", [])),
                      str(len(row["nodes"])), state if "error" not in row else f"error: {row['error']}")
    console.print(table)


@farm_app.command("ls")
@command
def farm_ls(
    address: str = typer.Option(..., "--ray", "--address", metavar="HOST:PORT", show_default=False,
                                help="The cluster, HOST:PORT or ray://HOST:PORT."),
    json_out: bool = JSON_OPT,
) -> None:
    """List the devices on the cluster: identity, target, backends, power modes."""
    from .. import api

    emit(api.farm_ls(address), json_out, _render_devices)


def render_farm_profile(result) -> None:
    """`adaexport profile DIR --ray ADDRESS`: one line per device."""
    for o in result.outcomes:
        if o.error:
            err_console.print(tagged("device failed:", "red", f"{o.device}: {o.error}"), highlight=False)
        else:
            console.print(f"{o.profiled_as}: {len(o.engines)} engine(s), mode(s) {', '.join(o.modes)}",
                          highlight=False)
        for reason in o.skipped:
            err_console.print(tagged("not sent:", "yellow", f"{o.device}: {reason}"), highlight=False)
