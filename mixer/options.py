"""Command-line options every `mixer` subcommand shares (--config, --redis, -v), and `mixer run`'s for where the
night is kept (--state-dir, --fresh, --ephemeral).

Its own module so the subcommands defined outside ``cli`` (transcript, record, synth,
loadtest) can add them without importing ``cli``, which imports them.
"""

from __future__ import annotations

import argparse

EMBEDDED = (
    "use this Redis (redis://, rediss://, unix://, redis+cluster://seeds, redis+sentinel://sentinels/master;"
    " docs/redis.md) instead of an embedded one"
)
SHARED = "the shared Redis (default: $MIXER_REDIS_URL, else the Redis of a running `mixer run`)"
# what a command that needs a shared Redis says when it has none
NO_REDIS = "give --redis URL or MIXER_REDIS_URL, or start `mixer run` first (its Redis is then found)"


def add_common(parser: argparse.ArgumentParser, redis_help: str = EMBEDDED) -> None:
    """Add --config, --redis (described by ``redis_help``) and -v to ``parser``."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="mixer.toml to read (default: $MIXER_CONFIG, ./mixer.toml, the bundled demo config)",
    )
    parser.add_argument("--redis", metavar="URL", help=redis_help)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")


def add_keeping(parser: argparse.ArgumentParser) -> None:
    """Add --state-dir, --fresh and --ephemeral (where the embedded Redis keeps the night) to ``parser``."""
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the night in DIR (default: $XDG_STATE_HOME/chatmixer/EVENT, else ~/.local/state/chatmixer/EVENT, "
        "EVENT being the [event] name in lower case, e.g. chatmixer-night)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start a new night: the kept one is moved aside to DIR.DATETIME (never deleted), and printed",
    )
    parser.add_argument(
        "--ephemeral",
        action="store_true",
        help="keep nothing on disk: the night ends with the run (demos, tests)",
    )
