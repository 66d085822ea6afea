"""A website of another origin for the browser tests: it serves Segment's Analytics 2.0
(the pinned npm package, as Segment's CDN would) and pages that load it as a site does.

Two ways a site installs analytics.js, both served here:
- the Analytics 2.0 snippet (`/snippet`): it loads `analytics.min.js` from the CDN named by
  `analytics._cdn` (this server stands in for cdn.segment.com: the script, its lazy bundles
  and the source's settings at `/v1/projects/{key}/settings`);
- the npm package (`/npm`): `AnalyticsBrowser.load` with the settings passed in
  (`cdnSettings`), so no settings are fetched at all.
Either way the site points the Segment.io integration at koala-ingest with `apiHost` and
`protocol`, exactly as README.md tells a user to.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "node_modules" / "@segment" / "analytics-next"
UMD = PACKAGE / "dist" / "umd"

# Segment's Analytics 2.0 snippet (5.2.x) as a site pastes it, with the two lines Segment
# documents for serving analytics.js from elsewhere: `_cdn` and the script's src.
SNIPPET = """
!function(){var i="analytics",analytics=window[i]=window[i]||[];if(!analytics.initialize)
if(analytics.invoked)window.console&&console.error&&
console.error("Segment snippet included twice.");else{
analytics.invoked=!0;analytics.methods=["trackSubmit","trackClick","trackLink","trackForm",
"pageview","identify","reset","group","track","ready","alias","debug","page","screen","once",
"off","on","addSourceMiddleware","addIntegrationMiddleware","setAnonymousId",
"addDestinationMiddleware","register"];analytics.factory=function(e){return function(){
if(window[i].initialized)return window[i][e].apply(window[i],arguments);
var n=Array.prototype.slice.call(arguments);if(["track","screen","alias","group","page",
"identify"].indexOf(e)>-1){var c=document.querySelector("link[rel='canonical']");
n.push({__t:"bpc",c:c&&c.getAttribute("href")||void 0,p:location.pathname,u:location.href,
s:location.search,t:document.title,r:document.referrer})}n.unshift(e);analytics.push(n);
return analytics}};for(var n=0;n<analytics.methods.length;n++){var key=analytics.methods[n];
analytics[key]=analytics.factory(key)}analytics.load=function(key,n){
var t=document.createElement("script");t.type="text/javascript";t.async=!0;
t.setAttribute("data-global-segment-analytics-key",i);
t.src=analytics._cdn+"/analytics.js/v1/"+key+"/analytics.min.js";
var r=document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r);
analytics._loadOptions=n};analytics._cdn=CDN;analytics._writeKey=WRITE_KEY;
analytics.SNIPPET_VERSION="5.2.1";
analytics.load(WRITE_KEY, LOAD_OPTIONS);
}}();
"""

NPM = """
window.analytics = AnalyticsNext.AnalyticsBrowser.load(
  {writeKey: WRITE_KEY, cdnURL: CDN, cdnSettings: CDN_SETTINGS}, LOAD_OPTIONS);
// the buffered object above takes calls at once; once loaded, the instance itself
window.analytics.then(function (loaded) { window.analytics = loaded[0]; });
"""

# What a page of the site does besides: pass Koala's `ko_id` cookie along as the visitor's
# profile_id (README: "Koala's profile_id"), and let a test send a beacon on page hide.
PAGE_SCRIPT = """
analytics.addSourceMiddleware(function (ctx) {
  var ko = document.cookie.match(/(?:^|; )ko_id=([^;]*)/);
  if (ko) {
    var obj = ctx.payload.obj;
    obj.context = obj.context || {};
    obj.context.traits = Object.assign(
      {}, obj.context.traits, {profile_id: decodeURIComponent(ko[1])});
  }
  ctx.next(ctx.payload);
});
window.beaconOnHide = function (body) {
  window.addEventListener("pagehide", function () {
    window.beaconSent = navigator.sendBeacon(API + "/t", JSON.stringify(body));
  });
};
"""


def cdn_settings(write_key: str) -> dict[str, Any]:
    """A source's settings as Segment's CDN serves them (the Segment.io integration points
    at Segment's API: the page's load options move it to koala-ingest)."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": "api.segment.io/v1",
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": {"__default": {"enabled": True, "integrations": {}}}},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def page_html(query: dict[str, str], cdn: str) -> str:
    write_key = query["key"]
    api = query["api"]  # HOST:PORT/v1 of koala-ingest
    segment_io: dict[str, Any] = {"apiHost": api, "protocol": "http"}
    if query.get("strategy") == "batching":
        segment_io["deliveryStrategy"] = {
            "strategy": "batching",
            "config": {
                "size": int(query.get("size", "10")),
                "timeout": int(query.get("timeout", "1000")),
            },
        }
    load_options = {"integrations": {"Segment.io": segment_io}}
    constants = (
        f"var CDN = {json.dumps(cdn)}; var WRITE_KEY = {json.dumps(write_key)};"
        f" var API = {json.dumps('http://' + api)};"
        f" var LOAD_OPTIONS = {json.dumps(load_options)};"
        f" var CDN_SETTINGS = {json.dumps(cdn_settings(write_key))};"
    )
    if query.get("loader") == "npm":
        loader = f'<script src="{cdn}/npm/index.js"></script><script>{constants}{NPM}'
    else:
        loader = f"<script>{constants}{SNIPPET}"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>Pricing - Acme</title></head><body><h1>Pricing</h1>"
        f"{loader}{PAGE_SCRIPT}</script></body></html>"
    )


class Site:
    """The site on its own origin (`http://localhost:PORT`, while koala-ingest is on
    127.0.0.1: a different host and port, so every call is cross-origin)."""

    def __init__(self, shots: Path) -> None:
        site = self
        self.shots = shots  # screenshots the tests take of the site's pages
        shots.mkdir(parents=True, exist_ok=True)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the tests read what matters from the browser

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/snippet", **query: str) -> str:
        from urllib.parse import urlencode

        return f"{self.origin}{path}?{urlencode(query)}"

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        body: bytes | None = None
        kind = "application/javascript"
        if path == "/favicon.ico":
            handler.send_response(204)
            handler.end_headers()
            return
        if path in ("/snippet", "/npm"):
            query["loader"] = path[1:]
            body, kind = page_html(query, self.origin).encode(), "text/html; charset=utf-8"
        elif re.fullmatch(r"/analytics\.js/v1/[^/]+/analytics\.min\.js", path):
            body = (UMD / "standalone.js").read_bytes()
        elif path == "/npm/index.js":
            body = (UMD / "index.js").read_bytes()
        elif match := re.fullmatch(r"/analytics-next/bundles/([\w.-]+\.js)", path):
            file = UMD / match.group(1)
            body = file.read_bytes() if file.is_file() else None
        elif match := re.fullmatch(r"/v1/projects/([^/]+)/settings", path):
            body, kind = json.dumps(cdn_settings(match.group(1))).encode(), "application/json"
        if body is None:
            handler.send_error(404)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
