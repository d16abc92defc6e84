"""The operator portal: plain HTML, CSS and JavaScript modules shipped in the
package and served by the same HTTP app under ``/`` (the API stays under
``/api/v1/serve-ml``). No build step and nothing fetched at run time: factory
networks often have no internet, and files a browser runs as written are files a
maintainer can read and fix without a toolchain."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
ASSETS_PATH = "/portal"


def mount_portal(app: FastAPI) -> None:
    """``/`` answers the portal's page; ``/portal/*`` its scripts and styles."""
    index = STATIC_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    async def portal_index() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def no_icon() -> Response:
        # Browsers ask for it on any page without an icon link (a stylesheet opened on
        # its own, say); "no content" rather than a 404 in every console.
        return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})

    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="portal")
