"""The `loom` command's entry point: Ctrl-C while loom is still starting exits quietly.

Python turns SIGINT into KeyboardInterrupt as soon as it starts, so a Ctrl-C during the
imports would print a traceback. Until the command's own handling is in place
(`loom.cli.main`), SIGINT does what it does to any program: it ends the process, which
the shell reports as status 130.
"""

# The C module, not `signal`: that one imports `enum`, itself long enough to be interrupted.
import _signal
import sys


def main() -> None:
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    from loom.cli.main import main as run

    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    sys.exit(run())
