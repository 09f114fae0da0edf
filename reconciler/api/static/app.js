// Driftless dashboard: reads the reconciler's JSON API (docs/reconciler.md) and re-reads the parts
// /api/v1/stream says changed; promotes, approves and rolls back through the same API, with buttons
// shown only where /api/v1/whoami says the credential may write. No framework, no build step; every
// value is inserted as text.

const TOKEN_KEY = "driftless.readToken";
const LABEL_KEYS = ["cloud", "region", "tier"];
// The sign-in link `driftless up` prints (and `driftless dashboard` opens) carries the credential in the
// URL fragment, #token=...: browsers never send a fragment to the server, so no access log holds it. The
// page keeps it in localStorage (this browser profile remembers it across tabs and restarts; "sign out"
// forgets it) and removes it from the address bar and the history at once.
function tokenFromLink() {
  const m = /^#(?:.*&)?token=([^&]*)/.exec(location.hash);
  if (!m) return null;
  history.replaceState(null, "", location.pathname + location.search);
  let value = "";
  try { value = decodeURIComponent(m[1]).trim(); } catch (e) { value = ""; }
  return value;
}
const linked = tokenFromLink();
if (linked) localStorage.setItem(TOKEN_KEY, linked);
let token = localStorage.getItem(TOKEN_KEY) || "";
const state = { envs: null, source: null, apps: {}, hosts: [], drift: null, history: [], events: [],
  commits: {}, gates: {}, rollbacks: {}, filter: "", me: null };

// ------------------------------------------------------------------ helpers
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (id) => document.getElementById(id);
const short = (rev) => (rev ? String(rev).slice(0, 12) : "—");
const shortDigest = (d) => (d ? String(d).replace(/^sha256:/, "").slice(0, 12) : "—");
const shortValue = (v) => (/^sha256:[0-9a-f]{64}$/.test(String(v || "")) ? shortDigest(v) : v);  // digests: 12 chars, whole in the title
const badge = (text, kind) => h("span", { class: `badge ${kind || ""} b-${String(text).replace(/\W/g, "")}` }, text);

function ago(unix) {
  if (!unix) return "—";
  const s = Math.max(0, Date.now() / 1000 - unix);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}
const when = (unix) => h("time", { datetime: unix ? new Date(unix * 1000).toISOString() : "",
  title: unix ? new Date(unix * 1000).toLocaleString() : "" }, ago(unix));

function fill(id, ...children) {
  const el = $(id);
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

class AuthError extends Error {}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(path, { ...options, headers });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) throw new AuthError(token ? "rejected" : "missing");
  if (!r.ok) {
    const err = new Error(body.error || `${r.status} ${r.statusText}`);
    err.body = body;
    throw err;
  }
  return body;
}

// ------------------------------------------------------------------ loading
const loaders = {
  async whoami() {
    state.me = await api("/api/v1/whoami");
    renderWho();
    if (state.envs) renderEnvs();
    renderHistory();
  },
  async status() {
    const doc = await api("/api/v1/environments");
    const apps = {};
    await Promise.all(doc.environments.map(async (env) => {
      const got = await api(`/api/v1/environments/${encodeURIComponent(env.name)}/apps`);
      apps[env.name] = Object.fromEntries(got.apps.filter(Boolean).map((a) => [a.app, a]));
    }));
    state.source = doc.source;
    state.envs = doc.environments;
    state.apps = apps;
    renderSource();
    renderEnvs();
    renderFilter();
  },
  async hosts() {
    state.hosts = (await api("/api/v1/hosts")).hosts;
    renderInstances();
  },
  async drift() {
    state.drift = await api("/api/v1/drift");
    renderDrift();
  },
  async events() {
    state.events = (await api("/api/v1/events?limit=40")).events;
    renderEvents();
  },
  async applied() {
    state.history = (await api("/api/v1/history?limit=30")).history;
    const missing = [...new Set(state.history.map((e) => e.revision))].filter((r) => !(r in state.commits));
    if (missing.length) {
      const q = missing.map((r) => `revision=${encodeURIComponent(r)}`).join("&");
      const got = (await api(`/api/v1/commits?${q}`)).commits;
      for (const r of missing) state.commits[r] = got[r] || null;
    }
    renderHistory();
  },
};
const ALL = Object.keys(loaders);
const PART_LOADERS = { status: ["status"], hosts: ["hosts", "status"], drift: ["drift"], events: ["events"],
  applied: ["status", "applied"] };

let pending = new Set();
let running = null;
async function refresh(parts) {
  for (const p of parts) for (const l of PART_LOADERS[p] || [p]) if (loaders[l]) pending.add(l);
  if (running) return running;
  running = (async () => {
    while (pending.size) {
      const now = [...pending];
      pending = new Set();
      const results = await Promise.allSettled(now.map((l) => loaders[l]()));
      const failed = results.find((r) => r.status === "rejected");
      if (failed && failed.reason instanceof AuthError) { askToken(failed.reason.message); break; }
      showError(failed ? `could not read the API: ${failed.reason.message}` : "");
    }
    running = null;
  })();
  return running;
}

function showError(message) {
  const el = $("error");
  el.hidden = !message;
  el.textContent = message;
}

// ------------------------------------------------------------------ rendering
function renderSource() {
  const s = state.source || {};
  const applied = s.applied || {};
  const last = s.lastReconcile || {};
  fill("source",
    h("span", { title: s.repo }, `${s.branch || ""} · ${s.path || ""}`),
    " applied ", h("code", { class: "rev", title: applied.revision }, short(applied.revision)),
    applied.message ? h("span", { class: "muted" }, ` “${applied.message}”`) : null,
    s.head && s.head !== applied.revision ? [" head ", h("code", { title: s.head }, short(s.head))] : null,
    last.at ? h("span", { class: "muted" }, " · reconciled ", when(last.at), last.outcome ? ` (${last.outcome})` : "") : null,
    s.lastError ? h("span", { class: "bad" }, ` · ${s.lastError}`) : null);
  const rej = s.rejected;
  const box = $("rejected");
  box.hidden = !rej;
  if (!rej) { box.replaceChildren(); return; }
  // each environment applies on its own: the rejection names the environments it holds back
  const envs = [...new Set((rej.errors || []).map((e) => e.env).filter(Boolean))].sort();
  fill("rejected",
    h("h2", {}, "Rejected revision ", h("code", { title: rej.revision }, short(rej.revision)),
      envs.length ? ` for ${envs.join(", ")}` : "",
      h("small", {}, envs.length ? " their last good revision stays applied; the others applied it"
        : " the last good revision stays applied")),
    h("p", {}, rej.message ? `“${rej.message}”` : "", rej.author ? ` by ${rej.author}` : "", " · ", when(rej.since)),
    h("ul", { class: "problems" }, (rej.errors || []).map((e) => h("li", {},
      e.env ? h("span", { class: "muted" }, `${e.env}: `) : null,
      e.file ? h("code", { class: "where" }, `${e.file}:${e.line}${e.column ? `:${e.column}` : ""}`) : null,
      " ", e.message || e.text, e.code ? h("span", { class: "muted" }, ` (${e.code})`) : null))));
}

function envOrder(envs) {
  const byName = Object.fromEntries(envs.map((e) => [e.name, e]));
  const depth = (e, seen = new Set()) => {
    const from = e.promotion && e.promotion.from;
    if (!from || !byName[from] || seen.has(e.name)) return 0;
    seen.add(e.name);
    return 1 + depth(byName[from], seen);
  };
  return [...envs].sort((a, b) => depth(a) - depth(b) || a.name.localeCompare(b.name));
}

function renderEnvs() {
  const envs = envOrder(state.envs || []);
  if (!envs.length) { fill("envs", h("p", { class: "muted" }, "no revision applied yet")); return; }
  const cols = [];
  envs.forEach((env, i) => {
    if (i) cols.push(h("div", { class: "arrow", "aria-hidden": "true" }, "→"));
    cols.push(renderEnv(env));
  });
  fill("envs", cols);
}

function renderEnv(env) {
  const p = env.promotion;
  const apps = state.apps[env.name] || {};
  return h("div", { class: "env", dataset: { env: env.name } },
    h("h3", {}, env.name, " ", h("code", { class: "rev", title: env.revision }, short(env.revision))),
    h("div", { class: "meta" },
      `${env.hosts.length} host${env.hosts.length === 1 ? "" : "s"}`,
      env.ingressPathPrefix ? ` · ${env.ingressPathPrefix}` : "",
      ` · ${env.sync.mode}${env.sync.prune ? ", prune" : ""}`,
      p ? h("div", { class: "promo" }, `promoted from ${p.from}`,
        p.minSoakSeconds ? ` · soak ${p.minSoakSeconds}s` : "", approvalRule(p)) : null),
    env.apps.length ? env.apps.map((a) => renderApp(env, a, apps[a.app])) : h("p", { class: "muted" }, "no applications"),
    env.unplaced.length ? h("ul", { class: "bad small" }, env.unplaced.map((u) =>
      h("li", {}, `${u.app}/${u.component} not placed: ${u.reason}`))) : null);
}

function approvalRule(p) {
  if (!p.requireApproval) return "";
  const n = p.approvers || 1;
  if (p.distinctFromPromoter) return ` · ${n} approval${n > 1 ? "s" : ""} by others than the promoter (four eyes)`;
  return n > 1 ? ` · ${n} approvals` : " · approval required";
}

// approvals given ahead (driftless approve / the approve button), tied to the digests the source ran then
function renderApprovals(env, app) {
  const mine = ((env.promotion && env.promotion.approvals) || []).filter((a) => a.app === app);
  if (!mine.length) return null;
  return h("div", { class: "approvals small" }, "approved ahead by ", mine.map((a, i) => [i ? ", " : "",
    h("b", { title: Object.entries(a.digests).map(([c, d]) => `${c} ${d}`).join("\n") }, a.user),
    h("span", { class: "muted" }, ` (${when(a.at)})`)]));
}

function renderApp(env, summary, full) {
  const key = `${env.name}/${summary.app}`;
  const comps = (full && full.components) || [];
  const gates = state.gates[key];
  return h("article", { class: "app", dataset: { app: summary.app, health: summary.health, sync: summary.sync } },
    h("header", {},
      h("button", { type: "button", class: "link name", title: "show its instances",
        onclick: () => { state.filter = key; $("app-filter").value = key; renderInstances(); } }, summary.app),
      badge(summary.health || "Unknown", "health"), badge(summary.sync || "Unknown", "sync"),
      h("span", { class: "muted" }, ` ${summary.ready}/${summary.desired} ready`)),
    h("ul", { class: "comps" }, comps.map((c) => h("li", {},
      h("span", {}, c.name), " ", h("span", { class: "muted" }, c.image), " ",
      h("code", { class: "digest", title: c.digest || "" }, shortDigest(c.digest)),
      c.signedBy ? h("span", { class: c.signedBy.length ? "muted small signed" : "bad small signed" },
        c.signedBy.length ? ` signed by ${c.signedBy.join(", ")}` : " unsigned") : null,
      c.errors && c.errors.length ? h("div", { class: "bad small" }, c.errors.join("; ")) : null))),
    conditionsWorthShowing(full) ? h("div", { class: "conds" }, full.conditions.map((c) =>
      h("span", { class: `cond c-${c.status} cond-${c.type}`, title: `${c.reason}: ${c.message}` }, `${c.type}=${c.status}`,
        c.reason ? h("small", {}, ` ${c.reason}`) : null))) : null,
    summary.message ? h("div", { class: "msg small" }, summary.message) : null,
    summary.healthySince ? h("div", { class: "muted small" }, "healthy since ", when(summary.healthySince)) : null,
    env.promotion ? renderPromotion(env, summary.app, gates) : null);
}

// The Flux conditions say the same thing on every healthy app (Ready=True, Reconciling=False,
// Stalled=False): shown only when one of them says something is wrong, so they stand out when they do.
function conditionsWorthShowing(full) {
  const conds = (full && full.conditions) || [];
  return conds.some((c) => (c.type === "Ready" ? c.status !== "True" : c.status === "True"));
}

const mayWrite = (envName) => Boolean(state.me && state.me.mayWrite && state.me.mayWrite[envName]);

function renderWho() {
  const me = state.me || {};
  fill("who", me.user ? `${me.user} (${me.role}${me.environments ? ` of ${me.environments.join(", ")}` : ""})`
    : "anonymous, read-only");
}

// Promotion: a dry run shows every gate (passing, failing, waiting with time left); the promote (or, where
// the environment requires an approval, approve & promote) button commits through POST /api/v1/promote,
// the approver being the credential's user. Shown only to users who may write the target environment.
function renderPromotion(env, app, g) {
  const from = env.promotion.from;
  if (!mayWrite(env.name)) {
    return h("div", { class: "gates muted small" }, `promotion ${from} → ${env.name}: `,
      state.me && state.me.user ? `${state.me.user} may not promote here` : "sign in as an operator or admin to promote");
  }
  return h("div", { class: "gates" },
    h("button", { type: "button", class: "check", onclick: () => checkGates(env, app) },
      `check promotion ${from} → ${env.name}`),
    env.promotion.requireApproval ? h("button", { type: "button", class: "approve-ahead",
      title: "approve the digests the source runs now; a promotion of them counts it (Approved-By)",
      onclick: () => approveAhead(env, app) }, `approve as ${(state.me && state.me.user) || "you"}`) : null,
    renderApprovals(env, app),
    g ? renderGates(env, app, g) : null);
}

const JSON_POST = { method: "POST", headers: { "Content-Type": "application/json" } };

async function promotion(env, app, extra) {
  return api("/api/v1/promote", { ...JSON_POST,
    body: JSON.stringify({ app, from: env.promotion.from, to: env.name, ...extra }) });
}

async function approveAhead(env, app) {
  const key = `${env.name}/${app}`;
  try {
    await api("/api/v1/approvals", { ...JSON_POST, body: JSON.stringify({ app, to: env.name }) });
  } catch (e) {
    state.gates[key] = { gates: null, changes: null, error: e.message, hint: e.body && e.body.hint };
    renderEnvs();
    return;
  }
  await refresh(["status"]);  // the environment's promotion block now lists the approval
  if (state.gates[key]) await checkGates(env, app);
}

async function checkGates(env, app) {
  const key = `${env.name}/${app}`;
  state.gates[key] = { loading: true };
  renderEnvs();
  let g;
  try {
    const r = await promotion(env, app, { dryRun: true });
    g = { gates: r.gates || [], changes: r.changes || [], checked: true };
  } catch (e) {
    const gates = (e.body && e.body.gates) || null;
    g = { gates, changes: null, error: e.message, hint: e.body && e.body.hint };
    if (gates && gates.every((x) => x.passed || x.name === "approval")) {
      // only the approval is missing, which the button gives: what would change, approved
      try {
        const r = await promotion(env, app, { dryRun: true, approve: true });
        g = { gates, changes: r.changes || [], checked: true };
      } catch (again) {
        // the promoter's own approval is not enough here (four eyes): others must approve first
        const still = ((again.body && again.body.gates) || []).find((x) => x.name === "approval" && !x.passed);
        if (still) g = { gates: again.body.gates, changes: null, othersNeeded: true };
      }
    }
  }
  const wait = Math.max(0, ...(g.gates || []).map((x) => (x.passed ? 0 : x.waitSeconds || 0)));
  g.until = wait ? Date.now() + wait * 1000 : null;
  state.gates[key] = g;
  renderEnvs();
}

async function promote(env, app) {
  const key = `${env.name}/${app}`;
  const before = state.gates[key] || {};
  state.gates[key] = { ...before, busy: true };
  renderEnvs();
  try {
    const r = await promotion(env, app, env.promotion.requireApproval ? { approve: true } : {});
    state.gates[key] = { gates: r.gates || [], changes: r.changes || [], done: r };
  } catch (e) {
    state.gates[key] = { gates: (e.body && e.body.gates) || before.gates || null, changes: before.changes,
      error: e.message, hint: e.body && e.body.hint, failed: true };
  }
  renderEnvs();
}

function gateState(x) {
  if (x.passed) return "pass";
  if (x.waitSeconds || x.name === "approval") return "wait";
  return "fail";
}

function renderGate(x, g) {
  const st = gateState(x);
  const mark = { pass: "✓ ", wait: "… ", fail: "✗ " }[st];
  let left = null;
  if (st === "wait" && x.waitSeconds && g.until) {
    left = h("span", { class: "left", dataset: { until: String(g.until) } }, ` ${Math.ceil((g.until - Date.now()) / 1000)}s left`);
  } else if (st === "wait") {
    left = h("span", { class: "left" }, " waiting for an approval");
  }
  return h("li", { class: `gate g-${st}`, dataset: { gate: x.name, state: st } }, mark, h("b", {}, x.name), ` ${x.message}`, left);
}

function renderGates(env, app, g) {
  if (g.loading) return h("p", { class: "muted small" }, "dry run…");
  const gates = g.gates || [];
  const blocking = gates.filter((x) => !x.passed && (x.name !== "approval" || g.othersNeeded));
  const approve = Boolean(env.promotion.requireApproval);
  let action = null;
  if (g.busy) action = h("p", { class: "muted" }, "committing…");
  else if (g.done) {
    action = h("div", { class: "committed ok" }, g.done.commit ? "committed " : "nothing committed",
      g.done.commit ? h("code", { class: "commit", title: g.done.commit }, short(g.done.commit)) : null,
      g.done.message ? ` “${g.done.message.split("\n")[0]}”` : "", g.done.pushed ? ", pushed: the reconciler applies it next" : "");
  } else if (g.error && !gates.length) {
    action = h("div", { class: "bad" }, `refused: ${g.error}`, g.hint ? h("div", { class: "muted" }, g.hint) : null);
  } else if (g.changes && !g.changes.length && !blocking.length) {
    action = h("div", { class: "muted" }, `nothing to promote: ${env.name} already declares what ${env.promotion.from} runs`);
  } else {
    action = [
      g.failed ? h("div", { class: "bad" }, `refused: ${g.error}`, g.hint ? h("div", { class: "muted" }, g.hint) : null) : null,
      h("button", { type: "button", class: `promote${approve ? " approve" : ""}`, disabled: blocking.length > 0,
        title: blocking.length ? `waiting for: ${blocking.map((x) => x.name).join(", ")}` : "commit the promotion to Git",
        onclick: () => promote(env, app) },
      approve ? `approve & promote as ${(state.me && state.me.user) || "you"}` : `promote ${env.promotion.from} → ${env.name}`),
      g.done ? null : h("span", { class: "muted" }, " dry run: nothing committed yet"),
    ];
  }
  return h("div", { class: "small" },
    h("ul", { class: "gate-list" }, gates.map((x) => renderGate(x, g))),
    (g.changes || []).map((c) => h("div", {}, `${c.component}: ${c.old} → `, h("code", {}, shortDigest(c.digest)))),
    action);
}

function renderFilter() {
  const sel = $("app-filter");
  const keys = (state.envs || []).flatMap((e) => e.apps.map((a) => `${e.name}/${a.app}`)).sort();
  const have = [...sel.options].slice(1).map((o) => o.value);
  if (have.join() !== keys.join()) {
    sel.replaceChildren(h("option", { value: "" }, "all applications"), keys.map((k) => h("option", { value: k }, k)));
  }
  sel.value = keys.includes(state.filter) ? state.filter : "";
}

function labelGroup(labels) {
  const keys = LABEL_KEYS.filter((k) => labels[k]);
  const use = keys.length ? keys : Object.keys(labels).sort();
  return use.length ? use.map((k) => `${k}=${labels[k]}`).join(" · ") : "(no labels)";
}

function renderInstances() {
  const hosts = state.hosts || [];
  if (!hosts.length) { fill("instances", h("p", { class: "muted" }, "no hosts registered")); return; }
  const groups = new Map();
  for (const host of hosts) {
    const g = labelGroup(host.labels || {});
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(host);
  }
  const f = state.filter;
  fill("instances", h("div", { class: "groups" }, [...groups.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([group, members]) =>
    h("div", { class: "group" }, h("h3", {}, group), members.map((host) => {
      const rows = ((host.report && host.report.instances) || [])
        .filter((i) => !f || `${i.env}/${i.app}` === f)
        .sort((a, b) => a.id.localeCompare(b.id));
      return h("div", { class: "host", dataset: { host: host.name } },
        h("h4", {}, host.name, " ", badge(host.state, "state"),
          h("span", { class: "muted small" }, ` gen ${host.observedGeneration}/${host.generation} · seen `, when(host.lastSeen))),
        // one line per instance (the page stays short): restarts and the last error only when there are any
        rows.length ? h("table", { class: "instances" }, h("thead", {}, h("tr", {}, ["instance", "status", "digest", "config"]
          .map((t) => h("th", {}, t)))),
        h("tbody", {}, rows.map((i) => h("tr", { dataset: { instance: i.id }, title: i.id },
          h("td", {}, `${i.env}/${i.app}/${i.component}`, " ",
            h("span", { class: "muted small" }, i.id.split("/").pop(), i.managed === false ? " (out of band)" : ""),
            i.lastError ? h("div", { class: "small bad" }, i.lastError) : null),
          h("td", {}, badge(i.status || "?", "status"),
            i.restarts ? h("span", { class: "bad small", title: "restarts" }, ` ↻${i.restarts}`) : null),
          h("td", {}, h("code", { class: "digest", title: i.digest || "" }, shortDigest(i.digest))),
          h("td", { class: "small cfg" }, Object.entries(i.config || {}).map(([k, v]) => `${k}=${v}`).join(" ")))))) :
          h("p", { class: "muted small" }, "no instances"));
    })))));
}

function renderDrift() {
  const d = state.drift || { items: [] };
  if (!d.available) { fill("drift", h("p", { class: "muted" }, "drift is not available (no host reports yet)")); return; }
  if (!d.items.length) { fill("drift", h("p", { class: "ok" }, "nothing drifts: what runs is what Git says")); return; }
  const counts = {};
  for (const i of d.items) counts[i.category] = (counts[i.category] || 0) + 1;
  fill("drift",
    h("div", { class: "chips" }, Object.entries(counts).map(([c, n]) => badge(`${c} ${n}`, "drift"))),
    h("table", {}, h("thead", {}, h("tr", {}, ["category", "where", "expected", "actual", "since", "message"].map((t) => h("th", {}, t)))),
      h("tbody", {}, d.items.map((i) => h("tr", {},
        h("td", {}, badge(i.category, "drift")),
        h("td", {}, [i.env, i.app, i.component].filter(Boolean).join("/"), i.host ? h("div", { class: "muted small" }, i.host) : null),
        h("td", { class: "small", title: i.expected || "" }, shortValue(i.expected)),
        h("td", { class: "small", title: i.actual || "" }, shortValue(i.actual)),
        h("td", {}, when(i.since)),
        h("td", { class: "small" }, i.message, i.healedAt ? h("div", { class: "ok" }, "healed ", when(i.healedAt)) : null))))));
}

// Rollback: an app of an older applied revision, for users who may write its environment: a
// confirmation, then POST /api/v1/rollback (a new commit restoring the app's manifests as they were).
function renderRollback(e, app, newest) {
  if (!mayWrite(e.env) || e.revision === newest[e.env]) return null;
  const key = `${e.env}/${app}/${e.revision}`;
  const r = state.rollbacks[key];
  const go = async () => {
    state.rollbacks[key] = { busy: true };
    renderHistory();
    try {
      state.rollbacks[key] = { done: await api("/api/v1/rollback", { ...JSON_POST,
        body: JSON.stringify({ app, env: e.env, to: e.revision }) }) };
    } catch (err) {
      state.rollbacks[key] = { error: err.message };
    }
    renderHistory();
  };
  const set = (v) => () => { state.rollbacks[key] = v; renderHistory(); };
  if (!r) return h("button", { type: "button", class: "link rollback", onclick: set({ confirm: true }) }, "roll back");
  if (r.confirm) {
    return h("span", { class: "confirm" }, ` roll ${app} in ${e.env} back to ${short(e.revision)}? `,
      h("button", { type: "button", class: "do-rollback", onclick: go }, "commit rollback"), " ",
      h("button", { type: "button", class: "link", onclick: set(undefined) }, "cancel"));
  }
  if (r.busy) return h("span", { class: "muted" }, " committing…");
  if (r.error) return h("span", { class: "bad" }, ` refused: ${r.error}`);
  return h("span", { class: "ok rolled-back" }, " committed ", h("code", { class: "commit" }, short(r.done.commit)));
}

function renderHistory() {
  const items = state.history || [];
  if (!items.length) { fill("history", h("p", { class: "muted" }, "no revision applied yet")); return; }
  const newest = {};
  for (const e of items) if (!(e.env in newest)) newest[e.env] = e.revision;  // newest first
  fill("history", h("ol", { class: "commits" }, items.map((e) => {
    const c = state.commits[e.revision];
    return h("li", { class: "commit", dataset: { env: e.env, revision: e.revision } },
      h("div", {}, h("code", { class: "rev", title: e.revision }, short(e.revision)), " ", badge(e.env, "envname"), " ",
        h("b", {}, (c && c.subject) || e.message)),
      h("div", { class: "muted small" }, e.author, " · applied ", when(e.appliedAt)),
      c && c.body ? h("pre", { class: "body" }, c.body) : null,
      c && c.trailers.length ? h("dl", { class: "trailers" }, c.trailers.map((t) => [h("dt", {}, t.key), h("dd", {}, t.value)])) : null,
      h("div", { class: "small" }, e.apps.map((a) => h("span", { class: "hist-app", dataset: { app: a.name } }, a.name, ": ",
        a.components.map((x) => [x.name, " ", h("code", { class: "digest", title: x.digest || "" }, shortDigest(x.digest)), " "]),
        renderRollback(e, a.name, newest)))));
  })));
}

function renderEvents() {
  const items = [...(state.events || [])].reverse();
  if (!items.length) { fill("events", h("p", { class: "muted" }, "no events")); return; }
  fill("events", h("ul", { class: "events" }, items.map((e) => h("li", { class: e.type === "Warning" ? "warn" : "" },
    when(e.at), " ", h("b", {}, e.reason), " ",
    h("span", { class: "muted" }, [e.env, e.app, e.host].filter(Boolean).join("/")), " ", e.message))));
}

// ------------------------------------------------------------------ live updates
let source = null;
function connect() {
  if (source) source.close();
  const url = "/api/v1/stream" + (token ? `?access_token=${encodeURIComponent(token)}` : "");
  source = new EventSource(url);
  const live = $("live");
  source.addEventListener("hello", () => {  // first connection or a reconnection: read everything
    live.textContent = "live";
    live.className = "live on";
    refresh(ALL);
  });
  source.addEventListener("change", (ev) => {
    const data = JSON.parse(ev.data);
    document.body.dataset.lastChange = ev.lastEventId;
    refresh(data.parts);
  });
  source.addEventListener("error", () => {
    live.textContent = "reconnecting…";
    live.className = "live off";
    if (source.readyState !== EventSource.CLOSED) return;  // the browser retries by itself
    const closed = source;  // refused (a token?) or gone: read once (asks for a token on 401), then retry
    refresh(ALL).then(() => { if (source === closed) setTimeout(connect, 3000); });
  });
}

// ------------------------------------------------------------------ token
// What a person in front of the page needs: how to get in, in words for a browser (the API's 401 text
// is advice for API clients, so it is not shown here).
const SIGN_IN = {
  missing: "Sign in to see your environments: open the sign-in link that driftless up printed in its terminal " +
    "(it ends in #token=…), or paste your access token here.",
  rejected: "This browser's token was not accepted (it may have been replaced or revoked). Open the sign-in " +
    "link again, or paste a current access token here.",
};
function askToken(why) {
  $("token-form").hidden = false;
  $("token-clear").hidden = !token;
  $("token-message").textContent = SIGN_IN[why] || SIGN_IN.missing;
  $("live").textContent = "signed out";
  $("live").className = "live off";
  $("token-input").focus();
  if (source) { source.close(); source = null; }
}

function setup() {
  $("token-toggle").addEventListener("click", () => { $("token-form").hidden = !$("token-form").hidden; });
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token-input").value.trim();
    if (token) localStorage.setItem(TOKEN_KEY, token); else localStorage.removeItem(TOKEN_KEY);
    $("token-form").hidden = true;
    connect();
  });
  $("token-clear").addEventListener("click", () => {
    token = "";
    localStorage.removeItem(TOKEN_KEY);
    $("token-input").value = "";
    connect();
  });
  $("app-filter").addEventListener("change", (ev) => { state.filter = ev.target.value; renderInstances(); });
  setInterval(() => {  // the time left of waiting gates; checked again once it is over
    for (const el of document.querySelectorAll(".left[data-until]")) {
      el.textContent = ` ${Math.max(0, Math.ceil((Number(el.dataset.until) - Date.now()) / 1000))}s left`;
    }
    for (const [key, g] of Object.entries(state.gates)) {
      if (!g.until || g.rechecked || Date.now() < g.until + 500) continue;
      g.rechecked = true;
      const [envName, app] = key.split("/");
      const env = (state.envs || []).find((x) => x.name === envName);
      if (env && env.promotion) checkGates(env, app);
    }
  }, 1000);
  setInterval(() => {  // keep "Ns ago" honest between changes
    for (const t of document.querySelectorAll("time[datetime]")) {
      const at = Date.parse(t.getAttribute("datetime"));
      if (!Number.isNaN(at)) t.textContent = ago(at / 1000);
    }
  }, 5000);
  connect();
}

setup();
