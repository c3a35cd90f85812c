// Fulcrum admin UI: one vanilla script, no framework, no build step.
// Every value from the API reaches the DOM through textContent or attributes set by
// el(): never through innerHTML.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const PAGE = document.body.dataset.page;
const app = document.getElementById("app");

// === helpers ===

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "value") node.value = v;
    else if (k === "checked") node.checked = !!v;
    // CSSOM, not a style attribute: the CSP allows no inline style attributes.
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function toast(message, bad) {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.className = "show" + (bad ? " bad" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ""; }, bad ? 6000 : 3000);
}

async function api(path, body) {
  const init = { headers: { accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["content-type"] = "application/json";
    init.headers["x-csrf-token"] = CSRF;
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    location.href = "/ui/login";
    throw new Error("signed out");
  }
  let data = null;
  try { data = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) throw new Error((data && data.error) || ("HTTP " + res.status));
  return data;
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== undefined && v !== null && v !== false) p.set(k, v);
  const s = p.toString();
  return s ? "?" + s : "";
}

const nf = new Intl.NumberFormat();
function num(n) { return nf.format(n || 0); }
function pct(x, requests) { return requests ? (x * 100).toFixed(1) + "%" : "–"; }
function when(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  const ago = (Date.now() - ms) / 1000;
  const rel = ago < 0 ? "in " + human(-ago) : human(ago) + " ago";
  return d.toLocaleString() + " (" + rel + ")";
}
function human(s) {
  if (s < 60) return Math.round(s) + "s";
  if (s < 3600) return Math.round(s / 60) + "m";
  if (s < 86400) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}
function short(ms) { return ms ? new Date(ms).toLocaleString() : "–"; }
function badge(text, cls) { return el("span", { class: "badge " + (cls || text) }, text); }
function statusBadge(status) { return el("span", { class: "badge s" + String(status).charAt(0) }, String(status || "–")); }

function table(id, headers, rows) {
  return el("div", { class: "table-wrap" },
    el("table", { id },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { class: h.endsWith("#") ? "num" : "" }, h.replace(/#$/, ""))))),
      el("tbody", {}, rows)));
}

function drawer(id, title, ...content) {
  closeDrawer();
  const d = el("aside", { class: "drawer", id },
    el("button", { class: "ghost close", onclick: closeDrawer, "aria-label": "close" }, "Close"),
    el("h2", {}, title), ...content);
  document.body.append(d);
  return d;
}
function closeDrawer() { document.querySelectorAll(".drawer").forEach((d) => d.remove()); }
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDrawer(); });

function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    // Plain-HTTP pages have no clipboard API: fall back to a hidden selection.
    const t = el("textarea", { style: "position:fixed;opacity:0" });
    t.value = text;
    document.body.append(t);
    t.select();
    document.execCommand("copy");
    t.remove();
  }
}

function chart(points, bucketMs) {
  const w = 800, h = 180, pad = 4;
  const s = svg("svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", role: "img", "aria-label": "requests and errors over time" });
  const max = Math.max(1, ...points.map((p) => p.requests));
  const n = Math.max(points.length, 1);
  const bw = (w - pad) / n;
  s.append(svg("line", { x1: pad, y1: h - pad, x2: w, y2: h - pad, stroke: "#e3e6eb" }));
  points.forEach((p, i) => {
    const x = pad + i * bw;
    const rh = (p.requests / max) * (h - pad - 14);
    const eh = (p.errors / max) * (h - pad - 14);
    const r = svg("rect", { x: x + 1, y: h - pad - rh, width: Math.max(bw - 2, 1), height: rh, fill: "#3b5bdb", opacity: 0.75 });
    const t = svg("title", {});
    t.textContent = `${short(p.at_ms)}: ${p.requests} requests, ${p.errors} errors`;
    r.append(t);
    s.append(r);
    if (p.errors) s.append(svg("rect", { x: x + 1, y: h - pad - eh, width: Math.max(bw - 2, 1), height: eh, fill: "#c92a2a" }));
  });
  // Labels are HTML, not SVG text: the drawing stretches to the width, text must not.
  const at = (ms) => new Date(ms).toLocaleString([], bucketMs >= 86400000 ? { month: "short", day: "numeric" } : { hour: "2-digit", minute: "2-digit" });
  const axis = el("div", { class: "axis" },
    el("span", {}, points.length ? at(points[0].at_ms) : ""), el("span", {}, "peak " + num(max) + " per " + human(bucketMs / 1000)),
    el("span", {}, points.length ? at(points[points.length - 1].at_ms) : ""));
  return el("div", { class: "chart", id: "dash-chart" }, s, axis,
    el("div", { class: "legend" }, el("span", { class: "req" }, "requests"), el("span", { class: "err" }, "errors")));
}

function guard(fn) {
  return async (...args) => {
    try { await fn(...args); } catch (e) { if (e.message !== "signed out") toast(e.message, true); }
  };
}

// === dashboard ===

async function dashboard() {
  let window_ = "hour";
  const root = el("div", {});
  app.replaceChildren(el("h1", {}, "Dashboard"), root);
  const draw = guard(async () => {
    const d = await api("/ui/api/overview" + qs({ chart: window_ }));
    const cards = [["minute", "Last minute"], ["hour", "Last hour"], ["day", "Last 24 hours"], ["month", "Last 30 days"]]
      .map(([k, label]) => {
        const c = d.windows[k];
        return el("div", { class: "card", "data-window": k },
          el("div", { class: "label" }, label),
          el("div", { class: "value" }, num(c.requests)),
          el("div", { class: "sub" }, "success " + pct(c.success_rate, c.requests) + " · errors " + num(c.error_total)));
      });
    const states = Object.entries(d.key_counts).map(([state, n]) =>
      el("a", { class: "card", href: "/ui/keys?state=" + encodeURIComponent(state) },
        el("div", { class: "label" }, state + " keys"), el("div", { class: "value" }, num(n))));
    const top = (title, rows) => el("div", { class: "panel" }, el("h2", {}, title),
      rows.length ? table(null, ["Key", "Count#", "Calls#"], rows.map((r) => el("tr", {},
        el("td", { class: "mono" }, el("a", { href: "/ui/keys?key=" + encodeURIComponent(r.key_id) }, r.key_id)),
        el("td", { class: "num" }, num(r.count)), el("td", { class: "num" }, num(r.calls)))))
        : el("p", { class: "muted" }, "None in 24 hours."));
    const picker = el("select", { id: "chart-window", onchange: (e) => { window_ = e.target.value; draw(); } },
      [["hour", "Last hour"], ["day", "Last 24 hours"], ["month", "Last 30 days"]].map(([v, t]) => el("option", { value: v, selected: v === window_ }, t)));
    root.replaceChildren(
      el("div", { class: "grid", id: "dash-windows" }, cards),
      el("div", { class: "panel" }, el("div", { class: "toolbar" }, el("h2", { class: "grow" }, "Requests and errors"), picker),
        chart(d.chart.points, d.chart.bucket_ms)),
      el("div", { class: "grid" }, states,
        el("div", { class: "card" }, el("div", { class: "label" }, "Data planes"), el("div", { class: "value" }, num(d.data_planes)),
          el("div", { class: "sub" }, "config revision " + d.revision))),
      el("div", { class: "two" }, top("Most 429s (24h)", d.top_429), top("Most 401s (24h)", d.top_401), top("Most errors (24h)", d.top_errors)));
  });
  await draw();
  setInterval(() => { if (!document.hidden) draw(); }, 10000);
}

// === keys ===

async function keys() {
  const url = new URLSearchParams(location.search);
  const st = { provider: url.get("provider") || "", state: url.get("state") || "", q: url.get("key") || "", tokens: [""], size: 50 };
  const selected = new Set();
  const counts = el("div", { class: "grid", id: "key-counts" });
  const provider = el("select", { id: "key-provider" }, el("option", { value: "" }, "All providers"));
  const state = el("select", { id: "key-state" }, el("option", { value: "" }, "Any state"),
    ["active", "cooling", "exhausted", "failing", "invalid", "disabled"].map((s) => el("option", { value: s, selected: s === st.state }, s)));
  const search = el("input", { id: "key-search", type: "search", placeholder: "Search id or masked secret", value: st.q });
  const size = el("select", { id: "key-page-size" }, [50, 100, 500].map((n) => el("option", { value: n }, n + " / page")));
  const byFilter = el("input", { type: "checkbox", id: "bulk-filter" });
  const info = el("span", { class: "muted", id: "key-selection" });
  const tableBox = el("div", {});
  const pager = el("div", { class: "pager" });

  const bulk = (action) => guard(async () => {
    const body = { action };
    if (byFilter.checked) body.filter = { provider: st.provider, state: st.state, q: st.q };
    else body.ids = [...selected];
    if (!byFilter.checked && !body.ids.length) throw new Error("select keys first, or tick 'every key matching the filter'");
    const what = byFilter.checked ? "every key matching the filter" : body.ids.length + " key(s)";
    if ((action === "remove" || byFilter.checked) && !confirm(`${action} ${what}?`)) return;
    const r = await api("/ui/api/keys/action", body);
    if (action === "validate") {
      const s = r.summary || {};
      toast(`validated ${num(s.probed)} key(s)` + (s.skipped ? `, ${num(s.skipped)} disabled skipped` : ""));
    } else toast(`${action}: ${num(r.changed)} of ${num(r.selected)} key(s) changed`);
    selected.clear();
    await load();
  });

  const row = (k) => {
    const pick = el("input", { type: "checkbox", class: "pick", checked: selected.has(k.id), "aria-label": "select " + k.id,
      onchange: (e) => { e.target.checked ? selected.add(k.id) : selected.delete(k.id); info.textContent = selected.size + " selected"; } });
    const act = (action, label, cls) => el("button", { class: "small " + (cls || "ghost"), "data-action": action,
      onclick: guard(async (e) => {
        e.stopPropagation();
        if (action === "remove" && !confirm("remove key " + k.id + "?")) return;
        const r = await api("/ui/api/keys/action", { action, ids: [k.id] });
        toast(action === "validate" ? `${k.id}: ${(r.results[0] || {}).state || "probed"}` : `${action}: ${k.id}`);
        await load();
      }) }, label);
    const copy = el("button", { class: "small ghost", "data-action": "copy", title: "copies the key id and masked secret; the full secret never leaves the control plane",
      onclick: guard(async (e) => { e.stopPropagation(); await copyText(k.id + " " + k.masked); toast("copied id and masked secret"); }) }, "Copy");
    return el("tr", { class: "clickable", "data-id": k.id, "data-state": k.state, onclick: (e) => { if (e.target.tagName !== "INPUT") keyDetail(k.id); } },
      el("td", {}, pick),
      el("td", { class: "mono" }, k.id),
      el("td", { class: "state" }, badge(k.state)),
      el("td", { class: "mono" }, k.masked),
      el("td", {}, k.provider),
      el("td", { class: "wrap" }, k.reason + (k.until_ms ? " · until " + short(k.until_ms) : "")),
      el("td", { class: "num" }, num(k.failures)),
      el("td", {}, short(k.last_success_ms)),
      el("td", { class: "num" }, num(k.calls_24h)),
      el("td", { class: "num" }, num(k.errors_24h)),
      el("td", { class: "num" }, num(k.tokens_24h)),
      el("td", {}, act("validate", "Validate"), " ",
        k.state === "disabled" ? act("enable", "Enable") : act("disable", "Disable"), " ",
        act("remove", "Remove"), " ", copy));
  };

  const load = guard(async () => {
    const token = st.tokens[st.tokens.length - 1];
    const d = await api("/ui/api/keys" + qs({ provider: st.provider, state: st.state, q: st.q, page_token: token, page_size: st.size }));
    if (provider.options.length === 1 || provider.dataset.count !== String(d.providers.length)) {
      provider.replaceChildren(el("option", { value: "" }, "All providers"),
        ...d.providers.map((p) => el("option", { value: p, selected: p === st.provider }, p)));
      provider.dataset.count = String(d.providers.length);
      pasteProvider.replaceChildren(...d.providers.map((p) => el("option", { value: p, selected: p === st.provider }, p)));
    }
    counts.replaceChildren(...Object.entries(d.counts).map(([s, n]) =>
      el("div", { class: "card state" + (s === st.state ? " selected" : ""), "data-state": s,
        onclick: () => { st.state = st.state === s ? "" : s; state.value = st.state; st.tokens = [""]; load(); } },
      el("div", { class: "label" }, s), el("div", { class: "value" }, num(n)))));
    tableBox.replaceChildren(table("keys-table",
      ["", "Id", "State", "Secret", "Provider", "Reason", "Failures#", "Last OK", "Calls 24h#", "Errors 24h#", "Tokens 24h#", "Actions"],
      d.keys.length ? d.keys.map(row) : [el("tr", {}, el("td", { colspan: 12, class: "muted" }, "No keys match."))]));
    info.textContent = selected.size + " selected";
    pager.replaceChildren(
      el("button", { class: "ghost", id: "key-prev", disabled: st.tokens.length === 1, onclick: () => { st.tokens.pop(); load(); } }, "← Previous"),
      el("span", { class: "muted" }, "page " + st.tokens.length),
      el("button", { class: "ghost", id: "key-next", disabled: !d.next_page_token, onclick: () => { st.tokens.push(d.next_page_token); load(); } }, "Next →"));
  });

  provider.addEventListener("change", () => { st.provider = provider.value; st.tokens = [""]; load(); });
  state.addEventListener("change", () => { st.state = state.value; st.tokens = [""]; load(); });
  size.addEventListener("change", () => { st.size = Number(size.value); st.tokens = [""]; load(); });
  let debounce;
  search.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(() => { st.q = search.value.trim(); st.tokens = [""]; load(); }, 300); });

  const pasteProvider = el("select", { id: "paste-provider" });
  const paste = el("textarea", { id: "paste-keys", rows: 5, placeholder: "One key per line; blank lines and # comments are skipped" });
  const validate = el("input", { type: "checkbox", id: "paste-validate", checked: true });
  const pasteResults = el("div", { id: "paste-results" });
  const add = guard(async () => {
    if (!pasteProvider.value) throw new Error("create a provider first (Config page)");
    const r = await api("/ui/api/keys/add", { provider: pasteProvider.value, text: paste.value, validate: validate.checked });
    pasteResults.replaceChildren(
      el("p", {}, `${num(r.added)} added, ${num(r.duplicates)} duplicate, ${num(r.invalid)} invalid, ${num(r.skipped)} skipped`),
      table("paste-table", ["Line#", "Result", "Id", "Secret", "Message"], r.results.map((x) => el("tr", { "data-outcome": x.outcome },
        el("td", { class: "num" }, x.line), el("td", {}, badge(x.outcome)), el("td", { class: "mono" }, x.id),
        el("td", { class: "mono" }, x.masked), el("td", { class: "wrap" }, x.message)))));
    paste.value = "";
    await load();
  });

  app.replaceChildren(
    el("h1", {}, "Keys"),
    counts,
    el("div", { class: "panel" },
      el("div", { class: "toolbar" }, provider, state, search, size),
      el("div", { class: "toolbar" },
        el("strong", {}, "Bulk:"),
        el("button", { class: "ghost", id: "bulk-validate", onclick: bulk("validate") }, "Validate"),
        el("button", { class: "ghost", id: "bulk-enable", onclick: bulk("enable") }, "Enable"),
        el("button", { class: "ghost", id: "bulk-disable", onclick: bulk("disable") }, "Disable"),
        el("button", { class: "danger", id: "bulk-remove", onclick: bulk("remove") }, "Remove"),
        el("label", { style: "display:inline;margin:0" }, byFilter, " every key matching the filter"),
        info),
      tableBox, pager),
    el("div", { class: "panel" }, el("h2", {}, "Add keys"),
      el("div", { class: "form-row" }, el("div", { class: "field" }, el("label", { for: "paste-provider" }, "Provider"), pasteProvider),
        el("label", { style: "display:inline" }, validate, " validate after adding")),
      paste, el("div", { class: "toolbar", style: "margin-top:8px" }, el("button", { id: "paste-add", onclick: add }, "Add keys")),
      pasteResults));
  await load();
  if (url.get("key")) keyDetail(url.get("key"));
}

const keyDetail = guard(async (id) => {
  const d = await api("/ui/api/keys/" + encodeURIComponent(id));
  const k = d.key || {};
  const u = d.usage_24h;
  drawer("key-detail", "Key " + id,
    kv([["Provider", k.provider], ["Secret", el("span", { class: "mono" }, k.masked)], ["State", badge(k.state)],
      ["Reason", k.reason || "–"], ["Until", when(k.until_ms)], ["Added", when(k.added_ms)], ["Failures", num(k.failures)],
      ["Last OK", when(k.last_success_ms)], ["Next probe", when(k.next_probe_ms)],
      ["Calls 24h", num(u.requests) + " (success " + pct(u.success_rate, u.requests) + ")"],
      ["Tokens 24h", num(u.input_tokens) + " in / " + num(u.output_tokens) + " out"],
      ["Exhausted models", (k.exhausted_models || []).map((m) => m.model + " until " + short(m.until_ms)).join(", ") || "–"]]),
    el("h3", {}, "Calls over 24 hours"), chart(d.chart.points, d.chart.bucket_ms),
    el("h3", {}, "State history"),
    table("history-table", ["When", "From", "To", "Reason", "Source"], d.transitions.slice().reverse().map((t) => el("tr", {},
      el("td", {}, short(t.at_ms)), el("td", {}, badge(t.from)), el("td", {}, badge(t.to)), el("td", { class: "wrap" }, t.reason + (t.model ? " (" + t.model + ")" : "")), el("td", {}, t.source)))),
    el("h3", {}, "Recent errors"),
    d.recent_errors.length ? table(null, ["When", "Status", "Class", "Excerpt"], d.recent_errors.map((r) => el("tr", {},
      el("td", {}, short(r.at_ms)), el("td", {}, statusBadge(r.status)), el("td", {}, r.error_class), el("td", { class: "wrap" }, r.error_excerpt))))
      : el("p", { class: "muted" }, "None."));
});

// === logs ===

async function logs() {
  const f = {
    key: el("input", { id: "log-key", placeholder: "key id" }),
    model: el("input", { id: "log-model", placeholder: "model" }),
    status: el("input", { id: "log-status", placeholder: "status: 429 or 5xx", size: 10 }),
    text: el("input", { id: "log-text", placeholder: "text in id, model, route, error" }),
    from: el("input", { id: "log-from", type: "datetime-local" }),
    to: el("input", { id: "log-to", type: "datetime-local" }),
    errors: el("input", { id: "log-errors", type: "checkbox" }),
    attempts: el("input", { id: "log-attempts", type: "checkbox" }),
    tail: el("input", { id: "log-tail", type: "checkbox" }),
  };
  const url = new URLSearchParams(location.search);
  if (url.get("key")) f.key.value = url.get("key");
  if (url.get("errors")) f.errors.checked = true;
  const body = el("tbody", {});
  const more = el("button", { class: "ghost", id: "log-more" }, "Older →");
  let cursor = "";
  let newest = 0;
  const seen = new Set();
  const params = () => ({
    key: f.key.value.trim(), model: f.model.value.trim(), status: f.status.value.trim(), text: f.text.value.trim(),
    errors: f.errors.checked, attempts: f.attempts.checked,
    from_ms: f.from.value ? new Date(f.from.value).getTime() : "", to_ms: f.to.value ? new Date(f.to.value).getTime() : "",
  });
  const ident = (r) => r.request_id + "/" + r.attempt + "/" + r.at_ms + "/" + r.node;
  const row = (r) => el("tr", { class: "clickable", "data-request": r.request_id, "data-status": r.status, onclick: () => logDetail(r) },
    el("td", {}, short(r.at_ms)), el("td", {}, statusBadge(r.status)), el("td", {}, r.error_class || ""),
    el("td", {}, r.model_requested), el("td", {}, r.provider), el("td", { class: "mono" }, r.key_id),
    el("td", { class: "num" }, r.latency_ms + " ms"), el("td", { class: "num" }, num(r.input_tokens + r.output_tokens)),
    el("td", { class: "wrap" }, r.error_excerpt));
  const search = guard(async (older) => {
    const d = await api("/ui/api/logs" + qs({ ...params(), cursor: older ? cursor : "", limit: 100 }));
    if (!older) { body.replaceChildren(); seen.clear(); newest = 0; }
    for (const r of d.records) { seen.add(ident(r)); newest = Math.max(newest, r.at_ms); body.append(row(r)); }
    if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No records match.")));
    cursor = d.next_cursor;
    more.disabled = !cursor;
  });
  // Live tail: poll for records newer than the newest shown, with the same filters.
  const tail = guard(async () => {
    if (!f.tail.checked || document.hidden) return;
    const d = await api("/ui/api/logs" + qs({ ...params(), from_ms: newest || Date.now() - 60000, limit: 200 }));
    const fresh = d.records.filter((r) => !seen.has(ident(r)));
    if (fresh.length && body.firstChild && !body.firstChild.dataset.request) body.replaceChildren();
    for (const r of fresh.reverse()) { seen.add(ident(r)); newest = Math.max(newest, r.at_ms); body.prepend(row(r)); }
  });
  setInterval(tail, 2000);
  more.addEventListener("click", () => search(true));
  const go = el("button", { id: "log-search", onclick: () => search(false) }, "Search");
  for (const input of [f.key, f.model, f.status, f.text]) input.addEventListener("keydown", (e) => { if (e.key === "Enter") search(false); });
  const field = (label, input) => el("div", { class: "field" }, el("label", { for: input.id }, label), input);
  app.replaceChildren(el("h1", {}, "Logs"),
    el("div", { class: "panel" },
      el("div", { class: "form-row" }, field("Key", f.key), field("Model", f.model), field("Status", f.status), field("Text", f.text),
        field("From", f.from), field("To", f.to)),
      el("div", { class: "toolbar" },
        el("label", { style: "display:inline" }, f.errors, " errors only"),
        el("label", { style: "display:inline" }, f.attempts, " include upstream attempts"),
        el("label", { style: "display:inline" }, f.tail, " live tail"), go)),
    el("div", { class: "table-wrap" }, el("table", { id: "logs-table" },
      el("thead", {}, el("tr", {}, ["When", "Status", "Error", "Model", "Provider", "Key", "Latency", "Tokens", "Excerpt"].map((h) => el("th", {}, h)))),
      body)),
    el("div", { class: "pager" }, more));
  await search(false);
}

function logDetail(r) {
  drawer("log-detail", "Request " + (r.request_id || ""),
    kv([["When", when(r.at_ms)], ["Status", statusBadge(r.status)], ["Error class", r.error_class || "–"],
      ["Protocol", r.protocol], ["Operation", r.operation], ["Route", r.route || "–"],
      ["Model asked", r.model_requested], ["Model served", r.model_served || "–"], ["Provider", r.provider || "–"],
      ["Key", r.key_id ? el("a", { href: "/ui/keys?key=" + encodeURIComponent(r.key_id) }, r.key_id) : "–"],
      ["Attempt", String(r.attempt)], ["Stream", r.stream ? "yes" : "no"], ["Client token", r.client_token || "–"],
      ["Data plane", r.node], ["Latency", r.latency_ms + " ms (first byte " + r.ttfb_ms + " ms)"],
      ["Tokens", num(r.input_tokens) + " in / " + num(r.output_tokens) + " out"]]),
    el("h3", {}, "Error"), el("pre", { id: "log-detail-error" }, r.error_excerpt || "–"),
    el("h3", {}, "Request body"), el("pre", {}, r.request_body || "(not recorded)"));
}

// === config ===

async function config() {
  const root = el("div", {});
  app.replaceChildren(el("h1", {}, "Config"), root);
  const load = guard(async () => {
    const d = await api("/ui/api/config");
    root.replaceChildren(providersPanel(d, load), routesPanel(d, load), tokensPanel(d, load), settingsPanel(d, load),
      el("p", { class: "muted" }, "Config revision " + d.revision + ". Changes reach every data plane at once."));
  });
  await load();
}

function formError(id) { return el("p", { class: "error", id }); }
function submit(errorBox, fn) {
  return async () => {
    errorBox.textContent = "";
    try { await fn(); } catch (e) { errorBox.textContent = e.message; }
  };
}

function providersPanel(d, reload) {
  const name = el("input", { id: "provider-name", placeholder: "name" });
  const type = el("select", { id: "provider-type" }, d.provider_types.map((t) => el("option", { value: t }, t)));
  const base = el("input", { id: "provider-url", placeholder: "base URL (default for the type)", size: 34 });
  const priority = el("input", { id: "provider-priority", type: "number", min: 0, placeholder: "priority", style: "width:90px" });
  const weight = el("input", { id: "provider-weight", type: "number", min: 0, placeholder: "weight", style: "width:80px" });
  const err = formError("provider-error");
  const numberOr = (input) => (input.value === "" ? undefined : Number(input.value));
  // One form for both: a name that exists is updated (its type cannot change), else created.
  const save = el("button", { id: "provider-save", onclick: submit(err, async () => {
    const exists = d.providers.some((p) => p.name === name.value.trim());
    if (exists) {
      await api("/ui/api/providers/update", { name: name.value.trim(), base_url: base.value.trim() || undefined,
        priority: numberOr(priority), weight: numberOr(weight) });
      toast("provider updated");
    } else {
      await api("/ui/api/providers", { name: name.value.trim(), type: type.value, base_url: base.value.trim(),
        priority: numberOr(priority) || 0, weight: numberOr(weight) || 0 });
      toast("provider created");
    }
    await reload();
  }) }, "Save provider");
  const edit = (p) => {
    name.value = p.name; type.value = p.type; base.value = p.base_url; priority.value = p.priority; weight.value = p.weight;
    name.focus();
  };
  return el("div", { class: "panel" }, el("h2", {}, "Providers"),
    table("providers-table", ["Name", "Type", "Base URL", "Priority#", "Weight#", ""], d.providers.map((p) => el("tr", { "data-provider": p.name },
      el("td", {}, p.name), el("td", {}, p.type), el("td", { class: "mono" }, p.base_url), el("td", { class: "num" }, p.priority),
      el("td", { class: "num" }, p.weight),
      el("td", {}, el("button", { class: "small ghost", "data-action": "edit", onclick: () => edit(p) }, "Edit"), " ",
        el("button", { class: "small ghost", onclick: guard(async () => {
          if (!confirm("delete provider " + p.name + " and all its keys?")) return;
          const r = await api("/ui/api/providers/delete", { name: p.name, force: true });
          toast(`provider deleted (${r.keys_deleted} keys)`); await reload();
        }) }, "Delete"))))),
    el("div", { class: "form-row", style: "margin-top:10px" }, name, type, base, priority, weight, save), err);
}

function routesPanel(d, reload) {
  const pattern = el("input", { id: "route-pattern", placeholder: "model pattern, e.g. gpt-4o*" });
  const strategy = el("select", { id: "route-strategy" }, d.strategies.map((s) => el("option", { value: s }, s)));
  const sticky = el("input", { id: "route-sticky", type: "number", min: 0, value: 0, style: "width:90px", title: "sticky seconds" });
  const targets = el("textarea", { id: "route-targets", rows: 3, placeholder: "one target per line: provider [model] [priority] [weight]" });
  const err = formError("route-error");
  const edit = (r) => {
    pattern.value = r.model_pattern; strategy.value = r.strategy; sticky.value = r.sticky_secs;
    targets.value = r.targets.map((t) => [t.provider, t.model || "-", t.priority, t.weight].join(" ")).join("\n");
    pattern.focus();
  };
  const save = el("button", { id: "route-save", onclick: submit(err, async () => {
    const ts = targets.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
      const [provider, model, priority, weight] = l.split(/\s+/);
      return { provider, model: model && model !== "-" ? model : "", priority: Number(priority || 0), weight: Number(weight || 0) };
    });
    await api("/ui/api/routes", { model_pattern: pattern.value.trim(), strategy: strategy.value, sticky_secs: Number(sticky.value || 0), targets: ts });
    toast("route saved"); await reload();
  }) }, "Save route");
  const model = el("input", { id: "explain-model", placeholder: "model a client asks for" });
  const protocol = el("select", { id: "explain-protocol" }, ["openai", "gemini", "anthropic"].map((p) => el("option", { value: p }, p)));
  const result = el("div", { id: "explain-result" });
  const explainErr = formError("explain-error");
  const explain = el("button", { class: "ghost", id: "explain-go", onclick: submit(explainErr, async () => {
    const x = await api("/ui/api/routes/explain" + qs({ model: model.value.trim(), protocol: protocol.value }));
    result.replaceChildren(
      el("p", {}, (x.matched_pattern ? `matched ${x.matched_pattern}` : "no route matched") + ` · strategy ${x.strategy} · ${x.reason}`),
      table("explain-table", ["Provider", "Model", "Priority#", "Weight#", "Usable keys#", "Note"], x.candidates.map((c) => el("tr", {},
        el("td", {}, c.provider), el("td", {}, c.model + (c.model_rewritten ? " (rewritten)" : "")), el("td", { class: "num" }, c.priority),
        el("td", { class: "num" }, c.weight), el("td", { class: "num" }, c.usable_keys + " / " + c.total_keys), el("td", { class: "wrap" }, c.note)))));
  }) }, "Explain");
  return el("div", { class: "panel" }, el("h2", {}, "Routes"),
    table("routes-table", ["Pattern", "Strategy", "Sticky", "Targets", ""], d.routes.map((r) => el("tr", { "data-pattern": r.model_pattern },
      el("td", { class: "mono" }, r.model_pattern), el("td", {}, r.strategy), el("td", {}, r.sticky_secs ? r.sticky_secs + "s" : "–"),
      el("td", { class: "wrap targets" }, r.targets.map((t) => t.provider + (t.model ? ":" + t.model : "") + (t.priority ? " p" + t.priority : "") + (t.weight ? " w" + t.weight : "")).join(", ")),
      el("td", {}, el("button", { class: "small ghost", "data-action": "edit", onclick: () => edit(r) }, "Edit"), " ",
        el("button", { class: "small ghost", onclick: guard(async () => {
          if (!confirm("delete route " + r.model_pattern + "?")) return;
          await api("/ui/api/routes/delete", { model_pattern: r.model_pattern }); toast("route deleted"); await reload();
        }) }, "Delete"))))),
    el("h3", {}, "Add or edit a route"),
    el("div", { class: "form-row" }, pattern, strategy, el("label", { style: "display:inline" }, "sticky s ", sticky)),
    targets, el("div", { class: "toolbar", style: "margin-top:8px" }, save), err,
    el("h3", {}, "Explain"), el("div", { class: "form-row" }, model, protocol, explain), explainErr, result);
}

function tokensPanel(d, reload) {
  const name = el("input", { id: "token-name", placeholder: "token name" });
  const shown = el("div", { id: "token-new" });
  const err = formError("token-error");
  const create = el("button", { id: "token-create", onclick: submit(err, async () => {
    const r = await api("/ui/api/tokens", { name: name.value.trim() });
    await reload();
    // Shown once, after the reload so that it stays on screen; never stored by the page.
    const box = document.getElementById("token-new");
    box.replaceChildren(el("p", { class: "secret-once" }, "New token (shown only now): ", el("code", {}, r.token)));
  }) }, "Create token");
  return el("div", { class: "panel" }, el("h2", {}, "Client tokens"),
    table("tokens-table", ["Name", "Prefix", "Created", ""], d.tokens.map((t) => el("tr", {},
      el("td", {}, t.name), el("td", { class: "mono" }, t.prefix + "…"), el("td", {}, short(t.created_ms)),
      el("td", {}, el("button", { class: "small ghost", onclick: guard(async () => {
        if (!confirm("revoke token " + t.name + "?")) return;
        await api("/ui/api/tokens/revoke", { name: t.name }); toast("token revoked"); await reload();
      }) }, "Revoke"))))),
    el("div", { class: "form-row", style: "margin-top:10px" }, name, create), err, shown);
}

function settingsPanel(d, reload) {
  const err = formError("setting-error");
  return el("div", { class: "panel" }, el("h2", {}, "Settings"),
    table("settings-table", ["Name", "Value", "Default", "Description"], d.settings.map((s) => {
      const input = el("input", { value: s.value, "data-setting": s.name, size: 12 });
      const save = el("button", { class: "small", onclick: submit(err, async () => {
        await api("/ui/api/settings", { name: s.name, value: input.value.trim() }); toast(s.name + " saved"); await reload();
      }) }, "Save");
      return el("tr", {}, el("td", { class: "mono" }, s.name), el("td", {}, input, " ", save), el("td", { class: "mono" }, s.default),
        el("td", { class: "wrap" }, s.description));
    })), err);
}

// === data planes ===

async function planes() {
  const root = el("div", {});
  app.replaceChildren(el("h1", {}, "Data planes"), root);
  const load = guard(async () => {
    const d = await api("/ui/api/planes");
    root.replaceChildren(
      el("p", { class: "muted" }, `Control plane ${d.version}, config revision ${d.revision}.`),
      table("planes-table", ["Node", "Address", "Applied revision#", "Last seen", "Requests/min#", "Connected since", "Version", "Last NACK"],
        d.planes.length ? d.planes.map((p) => el("tr", { "data-node": p.node_id },
          el("td", {}, p.node_id), el("td", { class: "mono" }, p.listen_addr || p.peer_addr),
          el("td", { class: "num" }, el("span", { class: p.applied_revision === d.revision ? "okmsg" : "" }, p.applied_revision)),
          el("td", {}, when(p.last_seen_ms)), el("td", { class: "num" }, num(p.requests_last_minute)),
          el("td", {}, short(p.connected_since_ms)), el("td", {}, p.version),
          el("td", { class: "wrap" }, p.last_nack_reason || "–")))
          : [el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No data plane connected."))]));
  });
  await load();
  setInterval(() => { if (!document.hidden) load(); }, 5000);
}

// === start ===

document.getElementById("logout").addEventListener("click", guard(async () => {
  await api("/ui/logout", {});
  location.href = "/ui/login";
}));
for (const a of document.querySelectorAll("[data-nav]")) if (a.dataset.nav === PAGE) a.classList.add("active");
({ dashboard, keys, logs, config, planes })[PAGE]();
