"""The `mixer` command's entry point (`mixer` and `python -m mixer`): the command, and a Ctrl-C that comes before
the command has taken over its signals.

Importing the command and reading its settings take about a second; a Ctrl-C (SIGINT) then lands in whatever
Python was doing. It stops the process at once with exit status 130, the shell's "interrupted", and no traceback.
Nothing here imports the command until inside the guard: an interrupt while importing it is caught too. Once a
command runs, it handles its own signals (a role stops cleanly with 0, a replay or load test ends with 130).
"""

import sys

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def main() -> int:
    """Run the `mixer` command; exit 130, quietly, when interrupted before it handles SIGINT itself."""
    try:
        from mixer.cli import main as command

        return command()
    except KeyboardInterrupt:
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
