"""Command-line options every `mixer` subcommand shares (--config, --redis, -v).

Its own module so the subcommands defined outside ``cli`` (transcript, record, synth,
loadtest) can add them without importing ``cli``, which imports them.
"""

from __future__ import annotations

import argparse

EMBEDDED = "use this Redis (redis://, rediss://, unix://) instead of an embedded one"
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
