"""chatmixer: many hashtag chats merged into one live feed.

The package is flat: each module is named by what it holds (models, codec, keys,
settings, ingest, replay, merge, hub, app, cli). Only ``sources/`` is a sub-package,
one file per platform.
"""

__version__ = "0.1.0"
