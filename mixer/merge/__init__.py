"""Merge: the chat streams in, one time-ordered, deduplicated, moderated feed and its shaped streams out.

``stage`` is the merge stage (``reorder`` window, ``dedupe``, ``moderation``, moderator ``actions``,
``qa`` markers; ``entries``: its stream entries decoded and written as bytes); ``shaping`` writes one
paced stream per profile with the pure ``shaper``; ``lease`` makes one process the leader and fences its
writes; ``collector`` tunes Python's cycle collector while the stages run. Imports only the core, never
the web server.
"""
