// Renders /v1/openapi.json as a list of operations grouped by tag. Self-contained: no
// framework, no request to any other origin; every string from the document is inserted as
// text, never as HTML.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function resolve(doc, schema) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return doc.components.schemas[name] || {};
  }
  return schema || {};
}

function describeSchema(doc, schema, depth) {
  schema = resolve(doc, schema);
  if (depth > 3) return "…";
  if (schema.oneOf) return schema.oneOf.map((s) => describeSchema(doc, s, depth + 1)).join(" | ");
  if (schema.type === "array") return "[" + describeSchema(doc, schema.items, depth + 1) + "]";
  if (schema.type === "object" && schema.properties) {
    const fields = Object.entries(schema.properties).map(
      ([k, v]) => k + ": " + describeSchema(doc, v, depth + 1));
    return "{" + fields.join(", ") + "}";
  }
  return (schema.type || "any") + (schema.nullable ? "?" : "");
}

function parametersTable(params) {
  const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "description")));
  for (const p of params) {
    table.append(el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, p.description || "")));
  }
  return table;
}

function operationView(doc, path, method, op) {
  const head = el("summary", {},
    el("span", { class: "method " + method }, method),
    el("code", { class: op.deprecated ? "deprecated" : "" }, path), " — ", op.summary || "");
  const body = el("div", { class: "body" });
  if (op.description) body.append(el("p", {}, op.description));
  if (op.parameters) body.append(parametersTable(op.parameters));
  if (op.requestBody) {
    const content = op.requestBody.content["application/json"];
    body.append(el("p", {}, el("strong", {}, "Body: "), describeSchema(doc, content.schema, 0)));
    if (content.example !== undefined) body.append(el("pre", {}, JSON.stringify(content.example, null, 2)));
  }
  const responses = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"), el("th", {}, "shape")));
  for (const [code, r] of Object.entries(op.responses)) {
    const media = r.content ? Object.entries(r.content)[0] : null;
    const shape = media ? media[0] + " " + describeSchema(doc, media[1].schema, 0) : "";
    responses.append(el("tr", {}, el("td", {}, code), el("td", {}, r.description), el("td", {}, el("code", {}, shape))));
  }
  body.append(responses);
  const curl = "curl -u \"$MEDS_USERNAME:$MEDS_PASSWORD\"" +
    (method === "get" ? "" : " -X " + method.toUpperCase()) +
    (op.requestBody ? " -H 'Content-Type: application/json' -d '" +
      JSON.stringify(op.requestBody.content["application/json"].example || {}) + "'" : "") +
    " " + window.location.origin + path;
  body.append(el("pre", {}, curl));
  const details = el("details", {}, head, body);
  details.dataset.search = (path + " " + method + " " + (op.summary || "") + " " + (op.tags || []).join(" ")).toLowerCase();
  return details;
}

async function main() {
  // From the origin: a page opened as http://user:pass@host/ has credentials in its URL, and a
  // relative fetch would inherit them, which browsers refuse.
  const url = new URL("/v1/openapi.json", window.location.origin);
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error("GET /v1/openapi.json: HTTP " + response.status);
  const doc = await response.json();
  document.getElementById("title").textContent = doc.info.title + " " + doc.info.version;
  document.getElementById("summary").textContent = doc.info.description;
  const groups = new Map((doc.tags || []).map((t) => [t.name, []]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags && op.tags[0]) || "other";
      if (!groups.has(tag)) groups.set(tag, []);
      groups.get(tag).push(operationView(doc, path, method, op));
    }
  }
  const main = document.getElementById("operations");
  for (const [tag, views] of groups) {
    if (views.length === 0) continue;
    const section = el("section", {}, el("h2", {}, tag));
    for (const v of views) section.append(v);
    main.append(section);
  }
  document.getElementById("filter").addEventListener("input", (event) => {
    const q = event.target.value.toLowerCase();
    for (const d of main.querySelectorAll("details")) d.hidden = q !== "" && !d.dataset.search.includes(q);
  });
}

main().catch((error) => {
  document.getElementById("summary").textContent = "Could not load the API description: " + error.message;
});
