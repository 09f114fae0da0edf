// wasi:http/proxy component in JavaScript (componentize-js), for tests and examples.
//
// GET /            200 "hello from js: <GREETING>"
// GET /call?url=U  outbound fetch() of U, 200 "via js: <upstream body>"
// GET /env         200 the environment as a JSON object
// else             404
import { getEnvironment } from "wasi:cli/environment@0.2.10";

function env() {
  return Object.fromEntries(getEnvironment());
}

async function handle(request) {
  const url = new URL(request.url);
  // behind a Driftless host the app may be mounted under a route: route on the path below it
  const info = request.headers.get("x-driftless-path-info");
  if (info) {
    const below = new URL(info, url.origin);
    url.pathname = below.pathname;
  }
  const text = { "content-type": "text/plain; charset=utf-8" };
  if (request.method !== "GET") {
    return new Response("method not allowed\n", { status: 405, headers: text });
  }
  if (url.pathname === "/") {
    return new Response(`hello from js: ${env().GREETING ?? ""}`, { headers: text });
  }
  if (url.pathname === "/env") {
    const sorted = Object.fromEntries(Object.entries(env()).sort());
    return new Response(JSON.stringify(sorted), { headers: { "content-type": "application/json" } });
  }
  if (url.pathname === "/call") {
    const target = url.searchParams.get("url");
    if (!target) {
      return new Response("missing ?url=\n", { status: 400, headers: text });
    }
    try {
      const upstream = await fetch(target);
      const body = await upstream.text();
      return new Response(`via js: ${body}`, { status: upstream.ok ? 200 : 502, headers: text });
    } catch (err) {
      return new Response(`via js: error: ${err}\n`, { status: 502, headers: text });
    }
  }
  return new Response("not found\n", { status: 404, headers: text });
}

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));
