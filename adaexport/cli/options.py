"""Options several commands share (one definition each, so their help reads the same)."""

from __future__ import annotations

import typer

MODEL_ARG = typer.Argument(None, metavar="MODEL", show_default=False,
                           help="Checkpoint directory or file; leave out for the bundled demo model.")
DIR_ARG = typer.Argument(..., metavar="DIR", help="A build directory (holds manifest.json).", show_default=False)
JSON_OPT = typer.Option(False, "--json", help="Print one JSON document, {\"command\", \"ok\", \"result\", "
                        "\"errors\"}, and no progress.")
DEVICE_OPT = typer.Option(None, "--device", metavar="TARGET",
                          help="Target device: a name from `adaexport targets` or a .toml file.")
DATASET_HELP = ("demo, fashion-mnist:DIR, npz:FILE (arrays x, y) or imagefolder:DIR (one folder per class).")
TOKENS_OPT = typer.Option(None, "--tokens", metavar="N,N",
                          help="Latent token counts, e.g. 32,64 (the grid is the product of --tokens, --width and "
                          "--depth).")
WIDTH_OPT = typer.Option(None, "--width", metavar="N,N", help="FFN widths (mat_dim), e.g. 416,832.")
DEPTH_OPT = typer.Option(None, "--depth", metavar="N,N", help="Depths (blocks), e.g. 12,21.")
