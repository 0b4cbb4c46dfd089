"""advseg example-grid: one model's example slice under each attack loss, as a figure."""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--example", nargs=2, action="append", metavar=("ATTACK_LOSS", "NPZ"), required=True,
                        help="an attack loss and its example file from 'advseg attack' (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="figure (.png)")


def run(args) -> None:
    from advseg.plots import plot_example_grid

    plot_example_grid({loss: Path(path) for loss, path in args.example}, args.out)
