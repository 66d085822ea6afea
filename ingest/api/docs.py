"""`/docs`: the OpenAPI document in Swagger UI, served from the `swagger-ui-py` package's
static files: no CDN, so it works on a machine without internet (ours and many users')."""

from __future__ import annotations

from pathlib import Path

import swagger_ui
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

ASSETS = Path(swagger_ui.__file__).parent / "static"

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>koala-ingest API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

# in a file of its own, not inline: a Content-Security-Policy of 'self' holds
INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout"
});
"""

HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'"
    " 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE, headers=HEADERS)


async def init(request: Request) -> HTMLResponse:
    return HTMLResponse(INIT, media_type="application/javascript", headers=HEADERS)


def routes() -> list[Route | Mount]:
    return [
        Route("/docs", page, methods=["GET"]),
        Route("/docs/init.js", init, methods=["GET"]),
        Mount("/docs/assets", StaticFiles(directory=ASSETS), name="docs-assets"),
    ]
