"""The ``pileprep`` command line: parses arguments, calls the library, prints results."""

from pileprep.cli.main import main

__all__ = ["main"]
