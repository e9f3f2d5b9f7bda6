"""Command line: `entflash COMMAND ...` or `python -m entflash COMMAND ...`; `--help` lists the commands.

A command is one row of COMMANDS: its name, a one-line description, the function running it and,
where it has options, the function adding them to its parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NamedTuple


class Command(NamedTuple):
    name: str
    help: str
    run: Callable[[argparse.Namespace, list], int]  # (parsed options, arguments passed through) -> exit status
    add_options: Callable[[argparse.ArgumentParser], None] | None = None
    passthrough: bool = False  # the command parses its own arguments (and its own --help)


def _demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu", action="store_true", help="skip the GPU part even when CUDA is present")
    parser.add_argument("--plot", metavar="PATH", help="also save a PNG of the attention maps (needs matplotlib)")


def _run_demo(args: argparse.Namespace, _rest: list) -> int:
    from . import demo

    if args.plot and not demo.has_matplotlib():
        # checked before the demo starts, so the user gets the hint and nothing else
        print(demo.PLOT_HINT, file=sys.stderr)
        return 2
    return demo.run_demo(gpu=not args.cpu, plot=args.plot)


def _run_bench(_args: argparse.Namespace, rest: list) -> int:
    from .bench.__main__ import main as bench_main

    return bench_main(rest)


def _run_probe(_args: argparse.Namespace, rest: list) -> int:
    from .probe.__main__ import main as probe_main

    return probe_main(rest)


COMMANDS = (
    Command("demo", "softmax vs entmax attention maps on one sentence; the GPU kernels too when CUDA is present",
            _run_demo, _demo_options),
    Command("bench", "speed, sparsity and memory benchmarks (`bench --help` lists their options)", _run_bench,
            passthrough=True),
    Command("probe", "how sparse a Hugging Face model's entmax attention is on your text (`probe --help`)",
            _run_probe, passthrough=True),
)


def _prog() -> str:
    # argparse would call itself "__main__.py" under `python -m entflash`
    return "python -m entflash" if os.path.basename(sys.argv[0]) == "__main__.py" else "entflash"


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The top-level parser and the subcommands' parsers by name."""
    from . import __version__

    parser = argparse.ArgumentParser(prog=_prog(), description="entflash: α-entmax sparse attention for PyTorch.")
    parser.add_argument("--version", action="version", version=f"entflash {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    parsers = {}
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, add_help=not cmd.passthrough)
        if cmd.add_options:
            cmd.add_options(p)
        parsers[cmd.name] = p
    return parser, parsers


def main(argv: list | None = None) -> int:
    """Exit status of the command; argparse itself exits (SystemExit) for --help, --version and usage errors."""
    parser, parsers = build_parser()
    # parse_known_args so that a passthrough command receives its arguments, options included, untouched
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    cmd = next(c for c in COMMANDS if c.name == args.command)
    if rest and not cmd.passthrough:
        parsers[cmd.name].error(f"unrecognized arguments: {' '.join(rest)}")
    return cmd.run(args, rest)


if __name__ == "__main__":
    sys.exit(main())
