// The interactive page of GET /docs: renders ./openapi.json and sends requests to this
// server. Self-contained (no CDN, no framework) so that it works offline.
"use strict";

(function () {
  let spec = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function resolve(schema) {
    let seen = 0;
    while (schema && schema.$ref && seen++ < 20) {
      const name = schema.$ref.split("/").pop();
      schema = spec.components.schemas[name];
    }
    return schema || {};
  }

  function typeOf(schema) {
    schema = resolve(schema);
    if (schema["x-tungsten-file"]) return "file (" + schema["x-tungsten-file"] + ")";
    if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
    if (schema.allOf) return schema.allOf.map(typeOf).join(" & ");
    if (schema.type === "array") return "array of " + typeOf(schema.items || {});
    if (schema.enum) return (schema.type || "") + " (" + schema.enum.map((v) => JSON.stringify(v)).join(", ") + ")";
    if (schema.title && schema.type === "object") return schema.title;
    return schema.type || "any";
  }

  function constraints(schema) {
    const parts = [];
    for (const [key, label] of [["minimum", "≥"], ["maximum", "≤"], ["exclusiveMinimum", ">"], ["exclusiveMaximum", "<"],
      ["minLength", "min length"], ["maxLength", "max length"], ["minItems", "min items"], ["maxItems", "max items"]]) {
      if (schema[key] !== undefined) parts.push(label + " " + schema[key]);
    }
    if (schema.default !== undefined) parts.push("default " + JSON.stringify(schema.default));
    return parts.join(", ");
  }

  function example(schema, depth) {
    schema = resolve(schema);
    if ((depth || 0) > 6) return null;
    if (schema.examples && schema.examples.length) return schema.examples[0];
    if (schema.default !== undefined) return schema.default;
    if (schema.enum) return schema.enum[0];
    if (schema.anyOf) return example(schema.anyOf.find((s) => resolve(s).type !== "null") || {}, depth + 1);
    // A 1x1 white PNG, so that "Send" works as it stands (replace it with a data URI or URL).
    if (schema["x-tungsten-file"]) return "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4AAAAAElFTkSuQmCC";
    switch (schema.type) {
      case "object": {
        const value = {};
        const required = new Set(schema.required || []);
        for (const [name, field] of Object.entries(schema.properties || {})) {
          if (required.has(name) || resolve(field).default !== undefined) value[name] = example(field, (depth || 0) + 1);
        }
        return value;
      }
      case "array": return [example(schema.items || {}, (depth || 0) + 1)];
      case "integer": return schema.minimum !== undefined ? schema.minimum : 0;
      case "number": return schema.minimum !== undefined ? schema.minimum : 0;
      case "boolean": return false;
      case "string": return schema.minLength ? "x".repeat(schema.minLength) : "";
      default: return null;
    }
  }

  function fieldsTable(schema) {
    schema = resolve(schema);
    const required = new Set(schema.required || []);
    const table = el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "constraints"), el("th", {}, "description")));
    for (const [name, field] of Object.entries(schema.properties || {})) {
      const resolved = resolve(field);
      table.append(el("tr", {},
        el("td", {}, el("code", {}, name), required.has(name) ? el("span", { class: "required" }, " *") : null),
        el("td", {}, typeOf(field)),
        el("td", {}, constraints(resolved)),
        el("td", {}, field.description || resolved.description || "")));
    }
    return table;
  }

  function showResponse(target, status, text) {
    target.replaceChildren();
    target.append(el("p", {}, "Status ", el("span", { class: "status " + (status < 400 ? "ok" : "bad") }, String(status))));
    let shown = text;
    const images = [];
    try {
      const data = JSON.parse(text);
      shown = JSON.stringify(data, (key, value) => {
        if (typeof value === "string" && value.startsWith("data:image/")) {
          images.push(value);
          return value.slice(0, 60) + "… (" + value.length + " characters)";
        }
        return value;
      }, 2);
    } catch (error) { /* not JSON: show as text */ }
    target.append(el("pre", { class: "response" }, shown));
    if (images.length) {
      const previews = el("div", { class: "previews" });
      for (const uri of images) previews.append(el("img", { src: uri, alt: "output image" }));
      target.append(previews);
    }
  }

  function operation(path, method, op) {
    const body = el("div", { class: "op-body" });
    if (op.description) body.append(el("p", {}, op.description));
    const inputs = {};
    const params = op.parameters || [];
    if (params.length) {
      const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "value"), el("th", {}, "description")));
      for (const param of params) {
        const input = el("input", { type: "text", placeholder: typeOf(param.schema || {}) });
        inputs[param.in + ":" + param.name] = input;
        table.append(el("tr", {},
          el("td", {}, el("code", {}, param.name), param.required ? el("span", { class: "required" }, " *") : null),
          el("td", {}, param.in), el("td", {}, input), el("td", {}, param.description || "")));
      }
      body.append(table);
    }
    let textarea = null;
    const content = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
    if (content) {
      const schema = resolve(content.schema);
      body.append(el("p", {}, op.requestBody.description || "Request body"));
      if (schema.type === "array" && schema.items) body.append(fieldsTable(schema.items));
      textarea = el("textarea", {});
      textarea.value = JSON.stringify(example(content.schema), null, 2);
      body.append(textarea);
    }
    const result = el("div", {});
    const button = el("button", { type: "button" }, "Send");
    button.addEventListener("click", async () => {
      let url = path;
      const query = new URLSearchParams();
      for (const param of params) {
        const value = inputs[param.in + ":" + param.name].value;
        if (param.in === "path") url = url.replace("{" + param.name + "}", encodeURIComponent(value));
        else if (param.in === "query" && value !== "") query.set(param.name, value);
      }
      const full = "." + url + (query.toString() ? "?" + query : "");
      const options = { method: method.toUpperCase(), headers: { Accept: "application/json" } };
      if (textarea) {
        options.headers["Content-Type"] = "application/json";
        options.body = textarea.value;
      }
      result.replaceChildren(el("p", { class: "muted" }, "Waiting for " + options.method + " " + full + " …"));
      try {
        const response = await fetch(full, options);
        showResponse(result, response.status, await response.text());
      } catch (error) {
        result.replaceChildren(el("p", { class: "status bad" }, "Request failed: " + error));
      }
    });
    body.append(button, result);
    const responses = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning")));
    for (const [code, response] of Object.entries(op.responses || {})) {
      responses.append(el("tr", {}, el("td", {}, code), el("td", {}, response.description || "")));
    }
    body.append(el("h4", {}, "Responses"), responses);
    return el("details", { class: "op" },
      el("summary", {}, el("span", { class: "method " + method }, method.toUpperCase()), el("span", { class: "path" }, path),
        el("span", { class: "muted" }, op.summary || "")),
      body);
  }

  function render() {
    document.title = spec.info.title + " — API documentation";
    document.getElementById("title").textContent = spec.info.title;
    document.getElementById("version").textContent = "OpenAPI " + spec.openapi + " · version " + spec.info.version;
    const description = document.getElementById("description");
    for (const paragraph of (spec.info.description || "").split(/\n\n+/)) description.append(el("p", {}, paragraph));
    const operations = document.getElementById("operations");
    operations.replaceChildren(el("h2", {}, "Endpoints"));
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const method of ["get", "post", "put", "delete"]) {
        if (item[method]) operations.append(operation(path, method, item[method]));
      }
    }
    const schemas = document.getElementById("schemas");
    schemas.replaceChildren(el("h2", {}, "Schemas"));
    for (const [name, schema] of Object.entries(spec.components.schemas)) {
      const section = el("details", { class: "op" }, el("summary", {}, el("span", { class: "path" }, name), el("span", { class: "muted" }, schema.description || "")));
      const inner = el("div", { class: "op-body" });
      if (resolve(schema).properties) inner.append(fieldsTable(schema));
      else inner.append(el("p", {}, typeOf(schema)));
      section.append(inner);
      schemas.append(section);
    }
  }

  fetch("./openapi.json")
    .then((response) => response.json())
    .then((loaded) => { spec = loaded; render(); })
    .catch((error) => {
      document.getElementById("operations").replaceChildren(el("p", { class: "status bad" }, "Could not load openapi.json: " + error));
    });
})();
