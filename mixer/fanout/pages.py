"""The web pages the fan-out server serves from ``web/``, and the headers every response gets.

Pages load nothing from elsewhere (a venue network may have no internet): scripts, styles
and images of our own come from ``/static/``; only post avatars and media may come from
the networks. ``web/`` ships inside the wheel as the package ``mixer.web``: ``web_dir``
finds it through the package, never relative to a checkout. ``page_routes`` lists the page
routes for ``create_app``, ``/qr.svg`` (the event's join link as a QR code, drawn by segno)
and ``/favicon.ico`` (our icon, ``web/favicon.svg``) among them; what each page does lives in
its own files under ``web/``. ``cors_headers`` lets pages of other origins (the embedded
widget, docs/embed.md) read the few read-only endpoints it needs.
"""

from __future__ import annotations

import io
import re
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path

import segno
from aiohttp import web

from mixer.settings import Settings

# Pages show untrusted text: scripts only from us, images from anywhere over http(s).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.:\[\]-]+$")  # an origin as a CSP source may name it
# The moderator console acts with a moderator's token: no page may frame it (clickjacking).
CONSOLE_CSP = PAGE_CSP.replace("frame-ancestors 'self'", "frame-ancestors 'none'") + "; form-action 'none'"


def is_page(path: str) -> bool:
    """Whether ``path`` is one of our pages or static files (they get the CSP)."""
    return path in ("/", "/embed", "/embed/builder") or path.startswith("/static/")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response but a websocket upgrade: no MIME sniffing, no referrer; pages also get the CSP, and are
    revalidated on every load (their ETag makes that a 304)."""
    if response.status == 101:  # no body to sniff or page to refer from; the headers would live as long as the socket
        return
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path == "/mod":
        response.headers.setdefault("Content-Security-Policy", CONSOLE_CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
    elif is_page(request.path):
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    if request.path == "/mod" or is_page(request.path):
        # Without it a browser caches a page and its modules for a guessed while (a tenth of their age): after an
        # upgrade a wall could run an old module beside a new one that imports what the old one lacks.
        response.headers.setdefault("Cache-Control", "no-cache")


def qr_code_svg(link: str) -> bytes:
    """``link`` as a QR code in SVG (black on white, a 4-module quiet zone), scalable to any size."""
    code = segno.make(link, error="m", micro=False)
    out = io.BytesIO()
    code.save(out, kind="svg", scale=8, border=4, dark="#000", light="#fff", xmldecl=False)
    return out.getvalue()


def qr_code_route(settings: Settings) -> web.RouteDef:
    """``GET /qr.svg``: the ``[event] link`` as a QR code, drawn once at start-up; 404 when no link is set."""
    svg = qr_code_svg(settings.event_link) if settings.event_link else None

    async def qr_code(request: web.Request) -> web.Response:
        if svg is None:
            raise web.HTTPNotFound(text="no [event] link is set, so there is no QR code")
        # An SVG can hold scripts: this one holds none, and the header says none may run if opened directly.
        headers = {"Cache-Control": "public, max-age=300", "Content-Security-Policy": "default-src 'none'"}
        return web.Response(body=svg, content_type="image/svg+xml", headers=headers)

    return web.get("/qr.svg", qr_code)


# /favicon.ico: an SVG (holding no script, and none may run if it is opened directly), cached for a day.
ICON_HEADERS = {
    "Content-Type": "image/svg+xml",
    "Cache-Control": "public, max-age=86400",
    "Content-Security-Policy": "default-src 'none'",
}

# What /static/ serves: our scripts, styles and images, nothing else that lies in web/ (its __init__.py).
ASSET_SUFFIXES = frozenset({".js", ".css", ".svg", ".png", ".ico"})


def web_dir() -> Path:
    """The folder of the ``mixer.web`` package (``web/`` in a checkout); RuntimeError when it is not on disk
    with its pages, so a broken install fails at start instead of answering 404 for every page."""
    root = files("mixer.web")
    if not isinstance(root, Path) or not (root / "index.html").is_file():
        raise RuntimeError(f"the web pages are missing from the installed package (looked in {root})")
    return root


def page_routes(settings: Settings, web_dir: Path) -> list[web.AbstractRouteDef]:
    """The page routes: the wall at ``/``, ``/favicon.ico``, ``/qr.svg``, the console at ``/mod``, the widget's
    routes and the static files under ``/static/`` (only ``ASSET_SUFFIXES``, only files directly in ``web_dir``)."""

    async def static(request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]  # one path segment: the route does not match a '/'
        path = web_dir / name
        if name.startswith(".") or path.suffix not in ASSET_SUFFIXES or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(web_dir / "index.html")

    async def console(request: web.Request) -> web.FileResponse:
        return web.FileResponse(web_dir / "mod.html")

    async def favicon(request: web.Request) -> web.FileResponse:
        # Browsers and tools ask for /favicon.ico whatever the pages link (they link /static/favicon.svg).
        return web.FileResponse(web_dir / "favicon.svg", headers=ICON_HEADERS)

    return [
        web.get("/", index),
        web.get("/favicon.ico", favicon),
        qr_code_route(settings),
        web.get("/mod", console),
        *embed_routes(settings, web_dir),
        web.get("/static/{name}", static),
    ]


# The widget reads these from pages of other origins (docs/embed.md); everything else stays same-origin.
CORS_PATHS = frozenset({"/api/chats", "/api/feed", "/api/stats", "/embed.js"})


def cors_headers(origins: tuple[str, ...]) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """A response hook: the read-only JSON endpoints and ``/embed.js`` may be read by pages of ``origins``
    (any origin when empty); a refused Origin gets no CORS header, so its browser blocks the read."""
    allowed = frozenset(o.rstrip("/") for o in origins)

    async def add_cors(request: web.Request, response: web.StreamResponse) -> None:
        if request.path not in CORS_PATHS:
            return
        if not allowed:
            response.headers["Access-Control-Allow-Origin"] = "*"
            return
        response.headers.add("Vary", "Origin")  # the answer differs by Origin: caches must not mix them up
        origin = request.headers.get("Origin", "")
        if origin.rstrip("/") in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin

    return add_cors


def embed_routes(settings: Settings, web_dir: Path) -> list[web.RouteDef]:
    """``/embed.js`` (the widget), ``/embed`` (its iframe variant, frameable by the allowed origins) and
    ``/embed/builder`` (the embed-code generator)."""
    listed = " ".join(o.rstrip("/") for o in settings.origins if _ORIGIN.match(o.rstrip("/")))
    ancestors = f"'self' {listed}".rstrip() if settings.origins else "*"
    embed_csp = PAGE_CSP.replace("frame-ancestors 'self'", f"frame-ancestors {ancestors}")

    async def widget(request: web.Request) -> web.FileResponse:
        # Short caching: pages everywhere load this file, and a new version should reach them within minutes.
        # The charset too: a host page in another encoding would otherwise garble the widget's own "…".
        headers = {"Cache-Control": "public, max-age=300", "Content-Type": "text/javascript; charset=utf-8"}
        return web.FileResponse(web_dir / "embed.js", headers=headers)

    async def frame(request: web.Request) -> web.FileResponse:
        return web.FileResponse(web_dir / "embed.html", headers={"Content-Security-Policy": embed_csp})

    async def builder(request: web.Request) -> web.FileResponse:
        return web.FileResponse(web_dir / "embed-builder.html")

    return [web.get("/embed.js", widget), web.get("/embed", frame), web.get("/embed/builder", builder)]
