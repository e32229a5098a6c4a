"""The ``fetalheadseg`` command line: a thin layer over the library's API.

Exit codes: 0 success; 2 bad input or usage (one line on stderr, nothing written); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from FetalHeadSegLib._version import __version__
from FetalHeadSegLib.cli import biometry_command, demo_command, models_command, phantom_command, segment_command
from FetalHeadSegLib.core.errors import FetalHeadSegError

EXIT_OK = 0
EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130

_COMMANDS = (segment_command, biometry_command, models_command, phantom_command, demo_command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="fetalheadseg",
        description="Fetal head segmentation and biometry in prenatal ultrasound (research use only).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_parser(subcommands)
    for subparser in subcommands.choices.values():  # -v also after the command (SUPPRESS: keeps one given before)
        subparser.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log details to stderr"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return int(args.run(args))
    except FetalHeadSegError as err:
        print(f"fetalheadseg: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("fetalheadseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`fetalheadseg models --json | head`): not an error of ours. Point stdout at
        # devnull so that the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
