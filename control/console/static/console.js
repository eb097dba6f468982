// The Linx console: plain DOM, no framework, no build step. Every call goes to /console/api/<path>,
// which runs the real /api/<path> as the signed-in tenant or operator (the key never reaches
// this page). State-changing calls carry the session's CSRF token.
"use strict";

const app = document.getElementById("app");
const CSRF = app.dataset.csrf;
const KIND = app.dataset.kind;
// The API's enumerations, from the server (shared.records declares them once)
const CHOICES = JSON.parse(app.dataset.choices);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

async function api(method, path, body) {
  const init = { method, headers: { "X-CSRF-Token": CSRF } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch("/console/api/" + path, init);
  if (resp.status === 401) { location.reload(); throw new Error("signed out"); }
  const data = resp.status === 204 ? null : await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = new Error((data && data.error && data.error.message) || "HTTP " + resp.status);
    err.field = data && data.error && data.error.field;
    err.code = data && data.error && data.error.code;
    throw err;
  }
  return data;
}

const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
const hideToken = (url) => (url ? url.replace(/linx_token=[^&]+/, "linx_token=…") : "—");

// A form whose API errors appear next to the field they name (or at the form's foot).
function apiForm(id, fields, submitText, onSubmit) {
  const foot = h("p", { class: "error", role: "alert", "data-for": "form" });
  const form = h("form", { id, class: "row", novalidate: true });
  for (const f of fields) {
    const input = f.type === "select"
      ? h("select", { id: id + "-" + f.name, name: f.name }, f.options.map((o) => h("option", { value: o }, o)))
      : h("input", { id: id + "-" + f.name, name: f.name, type: f.type || "text", placeholder: f.placeholder || "",
          checked: f.checked, required: f.required });
    if (f.value !== undefined) input.value = f.value;
    form.append(h("div", {}, h("label", { for: input.id }, f.label), input,
      h("span", { class: "error", "data-for": f.name })));
  }
  form.append(h("div", {}, h("button", { type: "submit", id: id + "-submit" }, submitText)), foot);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    form.querySelectorAll(".error").forEach((e) => (e.textContent = ""));
    const values = {};
    for (const f of fields) {
      const el = form.elements[f.name];
      if (f.type === "checkbox") values[f.name] = el.checked;
      else if (el.value !== "") values[f.name] = f.type === "number" ? Number(el.value) : el.value;
    }
    try { await onSubmit(values, form); } catch (err) {
      const slot = err.field && form.querySelector(`[data-for="${err.field}"]`);
      (slot || foot).textContent = err.message;
    }
  });
  return form;
}

function copyButton(text, label) {
  return h("button", { type: "button", class: "secondary", onclick: async (ev) => {
    try { await navigator.clipboard.writeText(text); ev.target.textContent = "Copied"; }
    catch { window.prompt("Copy:", text); }
  } }, label || "Copy");
}

// ------------------------------------------------------------------------------- tenant view
async function tenantView() {
  const { containers } = await api("GET", "containers");
  app.replaceChildren(h("h1", {}, "Your containers"));
  if (!containers.length) app.append(h("p", { class: "muted" }, "No containers yet: an operator registers them."));
  for (const c of containers) app.append(containerCard(c));
}

function containerCard(c) {
  const list = h("div", { class: "table-wrap", id: "services-" + c.container_id });
  const card = h("section", { class: "card", "aria-label": "container " + (c.name || c.container_id) },
    h("h2", {}, (c.name || c.container_id) + " ", h("span", { class: "muted" }, c.state)),
    list,
    h("h3", {}, "Publish a port"),
    apiForm("publish-" + c.container_id, [
      { name: "name", label: "Name", required: true, placeholder: "web" },
      { name: "target_port", label: "Port", type: "number", required: true, placeholder: "8080" },
      { name: "enable_websockets", label: "WebSockets", type: "checkbox" },
      { name: "auth_mode", label: "Access", type: "select", options: CHOICES.auth_mode },
      { name: "ttl_secs", label: "TTL (seconds)", type: "number" },
      { name: "routing", label: "Routing", type: "select", options: CHOICES.routing },
      { name: "cors_preflight", label: "CORS preflight", type: "select", options: CHOICES.cors_preflight },
      { name: "strip_prefix", label: "Strip /linx/<id>", type: "checkbox", checked: true },
    ], "Publish", async (values, form) => {
      await api("POST", `containers/${c.container_id}/services`, values);
      form.reset();
      await refreshServices(c, list);
    }));
  refreshServices(c, list);
  return card;
}

async function refreshServices(c, list) {
  const { services } = await api("GET", `containers/${c.container_id}/services`);
  const rows = services.map((s) => serviceRow(c, s, list));
  list.replaceChildren(services.length ? h("table", {},
    h("thead", {}, h("tr", {}, ["Name", "Status", "URL", "Expires", "Actions"].map((t, i) =>
      h("th", { class: i === 3 ? "opt" : null }, t)))),
    h("tbody", {}, rows)) : h("p", { class: "muted" }, "Nothing published."));
}

function serviceRow(c, s, list) {
  const refresh = () => refreshServices(c, list);
  const url = h("span", { class: "url", "data-url": s.service_id }, hideToken(s.public_url));
  const links = h("div", { id: "links-" + s.service_id });
  return h("tr", { "data-service": s.service_id },
    h("td", {}, s.name, h("div", { class: "muted" }, s.service_id)),
    h("td", {}, h("span", { class: "status status-" + s.status, "data-status": s.service_id }, s.status)),
    h("td", {}, url, h("div", { class: "actions" },
      copyButton(s.public_url, "Copy URL"),
      s.auth_mode === "service_token" ? h("button", { type: "button", class: "secondary",
        onclick: () => { url.textContent = url.textContent.includes("…") ? s.public_url : hideToken(s.public_url); } },
        "Show token") : "",
      h("a", { href: s.public_url, target: "_blank", rel: "noopener noreferrer", id: "open-" + s.service_id }, "Open")),
      links),
    h("td", { class: "opt" }, when(s.expires_at)),
    h("td", { class: "actions" },
      h("button", { type: "button", class: "secondary", id: "rotate-" + s.service_id, onclick: async () => {
        if (!confirm(`Rotate the token of ${s.name}? Every URL and cookie issued before stops working.`)) return;
        await api("POST", `services/${s.service_id}/rotate-token`); refresh();
      } }, "Rotate"),
      h("button", { type: "button", class: "secondary", onclick: async () => {
        const ttl = prompt("New TTL in seconds from now (empty: no expiry)", "");
        if (ttl === null) return;
        try { await api("PATCH", `services/${s.service_id}`, { ttl_secs: ttl === "" ? null : Number(ttl) }); refresh(); }
        catch (err) { alert(err.message); }
      } }, "TTL"),
      h("button", { type: "button", class: "secondary", onclick: async () => {
        const mode = s.auth_mode === "public" ? "service_token" : "public";
        if (!confirm(`Switch ${s.name} to ${mode}?`)) return;
        await api("PATCH", `services/${s.service_id}`, { auth_mode: mode }); refresh();
      } }, s.auth_mode === "public" ? "Require token" : "Make public"),
      h("button", { type: "button", class: "secondary", id: "cors-" + s.service_id, onclick: async () => {
        const mode = s.cors_preflight === "passthrough" ? "deny" : "passthrough";
        if (!confirm(`Set CORS preflight of ${s.name} to ${mode}?`)) return;
        await api("PATCH", `services/${s.service_id}`, { cors_preflight: mode }); refresh();
      } }, s.cors_preflight === "passthrough" ? "CORS: passthrough" : "CORS: deny"),
      h("button", { type: "button", class: "secondary", id: "links-btn-" + s.service_id,
        onclick: () => shareLinks(s, links) }, "Share links"),
      h("button", { type: "button", class: "danger", id: "delete-" + s.service_id, onclick: async () => {
        if (!confirm(`Delete ${s.name}? Its URL stops working at once.`)) return;
        await api("DELETE", `services/${s.service_id}`); refresh();
      } }, "Delete")));
}

async function shareLinks(s, box) {
  const { share_links } = await api("GET", `services/${s.service_id}/share-links`);
  const shown = h("div", { id: "new-link-" + s.service_id });
  box.replaceChildren(h("h3", {}, "Share links"),
    share_links.length ? h("table", {}, h("tbody", {}, share_links.map((l) => h("tr", { "data-link": l.link_id },
      h("td", {}, l.label || l.link_id), h("td", { class: "opt" }, "expires " + when(l.expires_at)),
      h("td", { class: "opt" }, "last used " + when(l.last_used_at)),
      h("td", {}, h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm("Revoke this link? It stops working at once.")) return;
        await api("DELETE", `services/${s.service_id}/share-links/${l.link_id}`); shareLinks(s, box);
      } }, "Revoke")))))) : h("p", { class: "muted" }, "No share links."),
    apiForm("link-" + s.service_id, [
      { name: "label", label: "Label" },
      { name: "ttl_secs", label: "TTL (seconds)", type: "number" },
    ], "Create link", async (values) => {
      const link = await api("POST", `services/${s.service_id}/share-links`, values);
      await shareLinks(s, box);
      box.querySelector("#new-link-" + s.service_id).replaceChildren(h("p", { class: "once" },
        "Shown once: ", h("span", { class: "url", id: "link-url-" + s.service_id }, link.url), " ", copyButton(link.url)));
    }), shown);
}

async function pollStatuses() {
  const cells = document.querySelectorAll("[data-status]");
  for (const cell of cells) {
    try {
      const s = await api("GET", "services/" + cell.dataset.status);
      cell.textContent = s.status;
      cell.className = "status status-" + s.status;
    } catch { /* deleted meanwhile: the next refresh drops the row */ }
  }
}

// ----------------------------------------------------------------------------- operator view
async function operatorView() {
  app.replaceChildren(
    h("section", { class: "card", id: "tenants" }), h("section", { class: "card", id: "containers" }),
    h("section", { class: "card", id: "proxies" }));
  await Promise.all([tenantsCard(), containersCard(), proxiesCard()]);
}

async function tenantsCard() {
  const box = document.getElementById("tenants");
  const { tenants } = await api("GET", "admin/tenants");
  const once = h("div", { id: "tenant-key-once" });
  box.replaceChildren(h("h2", {}, "Tenants"),
    h("div", { class: "table-wrap" }, h("table", {}, h("tbody", {}, tenants.map((t) => h("tr", { "data-tenant": t.tenant_id },
      h("td", {}, t.name, h("div", { class: "muted" }, t.tenant_id)),
      h("td", {}, t.key_ids.map((k) => h("div", {}, h("span", { class: "url" }, k), " ",
        h("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm(`Revoke key ${k}? Its sessions and calls stop at once.`)) return;
          await api("DELETE", `admin/tenants/${t.tenant_id}/keys/${k}`); tenantsCard();
        } }, "Revoke")))),
      h("td", {}, h("button", { type: "button", class: "secondary", onclick: async () => {
        const key = await api("POST", `admin/tenants/${t.tenant_id}/keys`);
        await tenantsCard();
        document.getElementById("tenant-key-once").replaceChildren(h("p", { class: "once" },
          `New key for ${t.name} (shown once): `, h("span", { class: "url" }, key.api_key), " ", copyButton(key.api_key)));
      } }, "New key"))))))),
    apiForm("tenant-create", [{ name: "name", label: "New tenant", required: true }], "Create tenant", async (values) => {
      const t = await api("POST", "admin/tenants", values);
      await tenantsCard();
      document.getElementById("tenant-key-once").replaceChildren(h("p", { class: "once" },
        `API key of ${t.name} (shown once): `, h("span", { class: "url", id: "new-tenant-key" }, t.api_key), " ", copyButton(t.api_key)));
    }), once);
}

async function containersCard() {
  const box = document.getElementById("containers");
  const { containers } = await api("GET", "admin/containers");
  const toggle = (c, field) => h("input", { type: "checkbox", checked: c[field], "aria-label": field + " of " + c.container_id,
    onchange: async (ev) => { await api("PATCH", `admin/containers/${c.container_id}`, { [field]: ev.target.checked }); containersCard(); } });
  box.replaceChildren(h("h2", {}, "Containers"),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Container", "Tenant", "Address", "State", "Network ready", "Networking", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, containers.map((c) => h("tr", { "data-container": c.container_id },
        h("td", {}, c.name || "", h("div", { class: "muted" }, c.container_id)),
        h("td", {}, c.tenant_id), h("td", { class: "url" }, c.address),
        h("td", {}, h("select", { "aria-label": "state of " + c.container_id, onchange: async (ev) => {
          await api("PATCH", `admin/containers/${c.container_id}`, { state: ev.target.value }); containersCard();
        } }, CHOICES.state.map((s) => h("option", { value: s, selected: s === c.state }, s)))),
        h("td", {}, toggle(c, "network_ready")), h("td", {}, toggle(c, "networking_enabled")),
        h("td", {}, h("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm(`Delete ${c.container_id} and every service on it?`)) return;
          await api("DELETE", `admin/containers/${c.container_id}`); containersCard();
        } }, "Delete"))))))),
    h("h3", {}, "Register a container"),
    apiForm("container-register", [
      { name: "tenant_id", label: "Tenant id", required: true },
      { name: "address", label: "Address (IP)", required: true },
      { name: "name", label: "Name" },
      { name: "state", label: "State", type: "select", options: CHOICES.state, value: "running" },
      { name: "network_ready", label: "Network ready", type: "checkbox", checked: true },
      { name: "networking_enabled", label: "Networking enabled", type: "checkbox", checked: true },
      { name: "exec_ready", label: "Exec ready", type: "checkbox", checked: true },
    ], "Register", async (values) => { await api("POST", "admin/containers", values); containersCard(); }));
}

async function proxiesCard() {
  const box = document.getElementById("proxies");
  const { proxies } = await api("GET", "admin/proxies");
  box.replaceChildren(h("h2", {}, "Proxy replicas"), proxies.length ? h("div", { class: "table-wrap" }, h("table", { id: "proxy-table" },
    h("thead", {}, h("tr", {}, ["Proxy", "Host", "Version", "Routes", "Connections", "Sync lag", "Started", "Last seen"].map((t) => h("th", {}, t)))),
    h("tbody", {}, proxies.map((p) => h("tr", { "data-proxy": p.proxy_id },
      h("td", { class: "url" }, p.proxy_id), h("td", {}, p.host), h("td", {}, p.version), h("td", {}, p.routes),
      h("td", {}, p.open_connections), h("td", {}, p.sync_lag_secs === null ? "—" : p.sync_lag_secs.toFixed(1) + " s"),
      h("td", {}, when(p.started_at)), h("td", {}, when(p.last_seen_at)))))))
    : h("p", { class: "muted" }, "No proxy has sent a heartbeat in the last 15 s."));
}

if (KIND === "admin") {
  operatorView();
  setInterval(() => proxiesCard().catch(() => {}), 5000);
} else {
  tenantView();
  setInterval(() => pollStatuses().catch(() => {}), 2000);
}
