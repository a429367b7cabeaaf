// Runs app/static/docs.js against a minimal DOM, with openapi.json from a file, and prints
// what the page rendered as JSON. No browser and no network: the test that runs it checks
// that the page works offline. Usage: node docs_smoke.js docs.js openapi.json
"use strict";
const fs = require("fs");
const vm = require("vm");

class Node_ {
  constructor(tag) { this.tag = tag; this.children = []; this.attributes = {}; this.listeners = {}; this.value = ""; this._text = ""; }
  append(...nodes) { for (const n of nodes) this.children.push(n); }
  replaceChildren(...nodes) { this.children = nodes; }
  setAttribute(name, value) { this.attributes[name] = value; }
  addEventListener(kind, fn) { this.listeners[kind] = fn; }
  set textContent(value) { this._text = value; this.children = []; }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(""); }
  set className(value) { this.attributes.class = value; }
}
class Text_ extends Node_ { constructor(text) { super("#text"); this._text = text; } }

const byId = {};
for (const id of ["title", "version", "description", "operations", "schemas"]) byId[id] = new Node_("div");
const requests = [];
const spec = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
const sandbox = {
  Node: Node_,
  console,
  URLSearchParams,
  JSON,
  document: {
    title: "",
    createElement: (tag) => new Node_(tag),
    createTextNode: (text) => new Text_(text),
    getElementById: (id) => byId[id],
  },
  fetch: async (url, options) => {
    requests.push({ url, method: (options && options.method) || "GET", body: options && options.body });
    if (url === "./openapi.json") return { json: async () => spec };
    return { status: 200, text: async () => JSON.stringify({ outputs: [{ image: "data:image/png;base64,AAAA" }] }) };
  },
};
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), sandbox);

function find(node, predicate, found = []) {
  if (predicate(node)) found.push(node);
  for (const child of node.children) find(child, predicate, found);
  return found;
}

setTimeout(async () => {
  const operations = find(byId.operations, (n) => n.tag === "details");
  // Press "Send" on POST /predictions with its example body.
  const create = operations.find((op) => op.textContent.includes("POST/predictions") && !op.textContent.includes("POST/predictions/"));
  const button = find(create, (n) => n.tag === "button")[0];
  const body = find(create, (n) => n.tag === "textarea")[0].value;
  await button.listeners.click();
  console.log(JSON.stringify({
    title: byId.title.textContent,
    operations: operations.map((op) => find(op, (n) => n.attributes.class === "path")[0].textContent),
    schemas: find(byId.schemas, (n) => n.tag === "details").length,
    example: JSON.parse(body),
    requests,
    previews: find(create, (n) => n.tag === "img").length,
  }));
}, 50);
