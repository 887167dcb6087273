"""The web pages the fan-out server serves from ``web/``, and the headers every response gets.

Pages load nothing from elsewhere (a venue network may have no internet): scripts, styles
and images of our own come from ``/static/``; only post avatars and media may come from
the networks. ``page_routes`` lists the page routes for ``create_app``; what each page
does lives in its own files under ``web/``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .settings import Settings

# Pages show untrusted text: scripts only from us, images from anywhere over http(s).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)


def is_page(path: str) -> bool:
    """Whether ``path`` is one of our pages or static files (they get the CSP)."""
    return path == "/" or path.startswith("/static/")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response: no MIME sniffing, no referrer; pages also get the CSP."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if is_page(request.path):
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)


def page_routes(settings: Settings, web_dir: Path) -> list[web.AbstractRouteDef]:
    """The page routes: the wall at ``/`` and the static files (nothing when ``web_dir`` is missing)."""
    if not web_dir.is_dir():
        return []

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(web_dir / "index.html")

    return [web.get("/", index), web.static("/static/", web_dir)]
