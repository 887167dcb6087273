"""Fan-out: the feed streams in, /ws, /events, the HTTP API and the pages out.

``app`` builds the aiohttp application and its REST routes, ``live`` the websocket and SSE
handlers and the feed followers, ``hub`` writes every client's frames (``messages``, ``frames``,
``zerocopy``), ``modapi`` is the moderation API, ``pages`` the pages from ``web/``, ``metrics``
the Prometheus text. Imports only the core; the webhook's ingest side is passed in by the runner.
"""
