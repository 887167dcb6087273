"""chatmixer: many hashtag chats merged into one live feed.

The tree follows a post. The modules at this level are the core every stage shares (the Post
model, codec, Redis keys and stream I/O, the feed read back, settings and config, moderation
rules, schedules, the embedded Redis); then one package per stage: ``ingest`` (platform
payloads to chat streams), ``merge`` (chat streams to one deduplicated, moderated, shaped
feed), ``fanout`` (the feed to websocket, SSE and HTTP clients); ``tools`` (record, synth,
transcript, directory import, load test) may use them all. ``cli`` and ``runner`` are the
composition root that starts the stages as processes. Stages never import each other
(checked by import-linter, docs/architecture.md).
"""

__version__ = "0.1.0"
