// The demo page of GET / (for browsers): a form built from the model's input schema, a
// prediction followed to its end, the outputs shown by type, and the predictions made
// from this browser. Plain JavaScript served by the package: no CDN, works offline.
"use strict";

(function () {
  // Seconds one long-poll may be held. The server answers at once when the prediction ends,
  // so this only bounds how late "Queued" turns into "Running" on the page.
  const HOLD_S = 1;
  const SUBMIT_RETRIES = 5; // 429 and 503 are retried, as Retry-After says
  const HISTORY_LIMIT = 20;
  const ENDED = new Set(["success", "failed"]);

  const $ = (id) => document.getElementById(id);
  let meta = null;
  let inputDefs = {};
  let outputDefs = {};
  let fields = [];
  let view = null; // the prediction on show: {id, controller, startedAt, timer, ended}

  // -- small helpers ------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Descriptions are Markdown: `code`, **bold**, *emphasis*, [links](https://...) and
  // paragraphs are rendered; everything else stays text (never parsed as HTML).
  function markdown(text) {
    const fragment = document.createDocumentFragment();
    for (const paragraph of String(text || "").split(/\n\s*\n/)) {
      if (!paragraph.trim()) continue;
      const p = el("p");
      const pattern = /`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*|\[([^\]]+)\]\(((?:https?:\/\/|\/|\.\/)[^)\s]*)\)/g;
      let last = 0;
      let match;
      while ((match = pattern.exec(paragraph)) !== null) {
        p.append(paragraph.slice(last, match.index));
        if (match[1] !== undefined) p.append(el("code", { text: match[1] }));
        else if (match[2] !== undefined) p.append(el("strong", { text: match[2] }));
        else if (match[3] !== undefined) p.append(el("em", { text: match[3] }));
        else p.append(el("a", { href: match[5], text: match[4], rel: "noopener" }));
        last = pattern.lastIndex;
      }
      p.append(paragraph.slice(last));
      fragment.append(p);
    }
    return fragment;
  }

  function resolve(schema, defs) {
    for (let i = 0; schema && i < 32; i++) {
      if (typeof schema.$ref === "string") schema = defs[schema.$ref.split("/").pop()] || {};
      else if (Array.isArray(schema.allOf) && schema.allOf.length === 1) schema = schema.allOf[0];
      else break;
    }
    return schema || {};
  }

  // An Optional field is anyOf [X, null]: X, and whether null is allowed.
  function unwrap(schema, defs) {
    schema = resolve(schema, defs);
    const branches = schema.anyOf || schema.oneOf;
    if (Array.isArray(branches)) {
      const others = branches.filter((b) => resolve(b, defs).type !== "null");
      if (others.length === 1) {
        const inner = resolve(others[0], defs);
        return { schema: { ...inner, description: schema.description || inner.description, title: schema.title || inner.title,
          default: schema.default !== undefined ? schema.default : inner.default }, nullable: others.length < branches.length };
      }
    }
    return { schema, nullable: false };
  }

  function humanSize(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KB";
    return (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  function titleOf(name, schema) {
    return schema.title && schema.title.toLowerCase().replace(/ /g, "_") !== name.toLowerCase() ? schema.title : name;
  }

  function detailText(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((e) => (e && e.msg) || JSON.stringify(e)).join("; ");
    if (detail && detail.message) return detail.message;
    return JSON.stringify(detail);
  }

  async function readJson(response) {
    try { return await response.json(); } catch (error) { return {}; }
  }

  function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

  // -- the API key (a server with TUNGSTEN_API_KEYS=on), kept for this tab only ------------
  // sessionStorage, not localStorage: the key goes when the tab closes. A browser never
  // adds it to a request this page did not make itself.
  const KEY_STORE = "tungsten-demo:api-key";

  function apiKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ""; } catch (error) { return ""; }
  }

  function withKey(headers) {
    const key = apiKey();
    return key ? { ...headers, Authorization: "Bearer " + key } : headers;
  }

  function showKeyBox(focus) {
    $("api-key-box").hidden = false;
    if (focus) $("api-key").focus();
  }

  function setUpKeyBox() {
    $("api-key").value = apiKey();
    if (apiKey()) showKeyBox(false);
    $("api-key").addEventListener("change", () => {
      try { sessionStorage.setItem(KEY_STORE, $("api-key").value.trim()); } catch (error) { /* private mode */ }
    });
  }

  // -- fields -------------------------------------------------------------------------
  // Each field: {name, node, read() -> value or undefined (leave it to the default),
  // showError(message), clearError(), reset()}. read() throws an Error with a message for
  // what the browser can tell is wrong; everything else is left to the server (422).
  function fieldShell(name, schema, required, control, id) {
    const error = el("p", { class: "field-error", id: "error-" + name, role: "alert", hidden: true });
    const label = el(id ? "label" : "div", { class: "label", for: id },
      titleOf(name, schema), required ? el("span", { class: "required", title: "required" }, "*") : null,
      el("span", { class: "type" }, typeHint(schema)));
    const description = schema.description && schema.description !== schema.title
      ? el("div", { class: "description" }, markdown(schema.description)) : null;
    const node = el("div", { class: "field", "data-field": name }, label, description, control, error);
    return {
      node,
      showError(message) { error.textContent = message; error.hidden = false; node.classList.add("invalid"); },
      clearError() { error.textContent = ""; error.hidden = true; node.classList.remove("invalid"); },
    };
  }

  function typeHint(schema) {
    const kind = schema["x-tungsten-file"];
    if (kind === "masked_image") return "image + mask";
    if (kind) return kind + " file";
    if (schema.enum) return "choice";
    return schema.type || "";
  }

  function textField(name, schema, required) {
    const id = "field-" + name;
    const long = schema.maxLength === undefined || schema.maxLength > 120;
    const control = el(long ? "textarea" : "input", {
      id, name, type: long ? undefined : "text", rows: long ? 3 : undefined,
      minlength: schema.minLength, maxlength: schema.maxLength, placeholder: schema.examples ? String(schema.examples[0]) : undefined,
    });
    const initial = typeof schema.default === "string" ? schema.default : "";
    control.value = initial;
    const shell = fieldShell(name, schema, required, control, id);
    return { ...shell, name, control,
      read() {
        if (control.value === "" && !required) return undefined;
        if (control.value === "" && required) throw new Error("Required: enter some text.");
        return control.value;
      },
      reset() { control.value = initial; } };
  }

  function numberField(name, schema, required) {
    const id = "field-" + name;
    const integer = schema.type === "integer";
    const min = schema.minimum !== undefined ? schema.minimum : schema.exclusiveMinimum;
    const max = schema.maximum !== undefined ? schema.maximum : schema.exclusiveMaximum;
    const number = el("input", { id, name, type: "number", min, max, step: integer ? 1 : "any", inputmode: integer ? "numeric" : "decimal" });
    const initial = typeof schema.default === "number" ? String(schema.default) : "";
    number.value = initial;
    let control = number;
    let slider = null;
    const span = max - min;
    if (min !== undefined && max !== undefined && span > 0 && (!integer || span <= 100000)) {
      slider = el("input", { type: "range", min, max, step: integer ? 1 : span / 200, "aria-label": name + " slider" });
      slider.value = initial !== "" ? initial : String(min);
      slider.addEventListener("input", () => { number.value = integer ? slider.value : String(Number(Number(slider.value).toPrecision(6))); });
      number.addEventListener("input", () => { if (number.value !== "") slider.value = number.value; });
      control = el("div", {}, el("div", { class: "range" }, slider, number),
        el("div", { class: "bounds" }, el("span", { text: String(min) }), el("span", { text: String(max) })));
    }
    const shell = fieldShell(name, schema, required, control, id);
    return { ...shell, name, control: number,
      read() {
        if (number.value === "") {
          if (required) throw new Error("Required: enter a number.");
          return undefined;
        }
        if (!number.checkValidity()) throw new Error(number.validationMessage);
        const value = Number(number.value);
        if (schema.exclusiveMinimum !== undefined && !(value > schema.exclusiveMinimum)) throw new Error("Must be greater than " + schema.exclusiveMinimum + ".");
        if (schema.exclusiveMaximum !== undefined && !(value < schema.exclusiveMaximum)) throw new Error("Must be less than " + schema.exclusiveMaximum + ".");
        return value;
      },
      reset() { number.value = initial; if (slider) slider.value = initial !== "" ? initial : String(min); } };
  }

  function choiceField(name, schema, required, nullable) {
    const id = "field-" + name;
    const values = schema.enum || schema.choices;
    const select = el("select", { id, name });
    if (schema.default === undefined) select.append(el("option", { value: "", text: required ? "Choose…" : "—" }));
    values.forEach((value, index) => select.append(el("option", { value: String(index), text: String(value) })));
    const initial = schema.default !== undefined ? String(values.indexOf(schema.default)) : "";
    select.value = initial;
    const shell = fieldShell(name, schema, required, select, id);
    return { ...shell, name, control: select,
      read() {
        if (select.value === "") {
          if (required) throw new Error("Required: choose one.");
          return nullable ? undefined : undefined;
        }
        return values[Number(select.value)];
      },
      reset() { select.value = initial; } };
  }

  function booleanField(name, schema, required) {
    const id = "field-" + name;
    const box = el("input", { id, name, type: "checkbox", role: "switch" });
    const initial = schema.default === true;
    box.checked = initial;
    const state = el("span", { class: "muted", text: initial ? "on" : "off" });
    box.addEventListener("change", () => { state.textContent = box.checked ? "on" : "off"; });
    const control = el("label", { class: "switch" }, box, el("span", { class: "track" }), state);
    const shell = fieldShell(name, schema, required, control, null);
    return { ...shell, name, control: box,
      read() { return box.checked; },
      reset() { box.checked = initial; state.textContent = initial ? "on" : "off"; } };
  }

  const ACCEPT = { image: "image/*", audio: "audio/*", video: "video/*" };

  // A drop zone with a file input, a preview, and an "or a URL" box. Returns
  // {node, read() -> data URI, URL or undefined, reset()}.
  function fileDrop(name, kind, label) {
    const input = el("input", { type: "file", name, accept: ACCEPT[kind], "aria-label": label });
    const hint = el("div", { class: "hint" }, el("b", { text: "Choose a file" }), " or drop it here");
    const preview = el("div", { class: "preview", hidden: true });
    const drop = el("label", { class: "drop" }, input, hint, preview);
    const url = el("input", { type: "url", class: "url-input", placeholder: "…or paste an http(s) URL", "aria-label": label + " URL" });
    let chosen = null; // {dataUrl, name, size}

    function show(file, dataUrl) {
      preview.replaceChildren();
      const media = file.type.split("/")[0];
      if (media === "image") preview.append(el("img", { src: dataUrl, alt: file.name }));
      else if (media === "audio") preview.append(el("audio", { src: dataUrl, controls: true }));
      else if (media === "video") preview.append(el("video", { src: dataUrl, controls: true, muted: true }));
      preview.append(el("span", { class: "file-name", text: file.name + " · " + humanSize(file.size) }),
        el("button", { type: "button", class: "remove", text: "Remove", onclick: (event) => { event.preventDefault(); clear(); } }));
      preview.hidden = false;
      hint.hidden = true;
    }
    function clear() { chosen = null; input.value = ""; preview.replaceChildren(); preview.hidden = true; hint.hidden = false; }
    function take(file) {
      if (!file) return;
      const reader = new FileReader();
      const pending = new Promise((resolve, reject) => {
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(new Error("Could not read " + file.name));
      });
      chosen = { name: file.name, size: file.size, pending };
      url.value = "";
      reader.readAsDataURL(file);
      pending.then((dataUrl) => { if (chosen && chosen.pending === pending) { chosen.dataUrl = dataUrl; show(file, dataUrl); } }, () => {});
    }
    input.addEventListener("change", () => take(input.files[0]));
    drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      if (event.dataTransfer && event.dataTransfer.files.length) take(event.dataTransfer.files[0]);
    });
    url.addEventListener("input", () => { if (url.value) clear(); });
    return {
      node: el("div", {}, drop, url),
      input,
      async read() {
        if (chosen) return chosen.dataUrl || await chosen.pending;
        const text = url.value.trim();
        if (text && !/^https?:\/\//i.test(text)) throw new Error("A URL must start with http:// or https://");
        return text || undefined;
      },
      describe() { return chosen ? chosen.name : url.value.trim(); },
      reset: clear,
    };
  }

  function fileField(name, schema, required) {
    const drop = fileDrop(name, schema["x-tungsten-file"], titleOf(name, schema));
    const shell = fieldShell(name, schema, required, drop.node, null);
    return { ...shell, name, control: drop.input, describe: drop.describe,
      async read() {
        const value = await drop.read();
        if (value === undefined && required) throw new Error("Required: choose a file.");
        return value;
      },
      reset: drop.reset };
  }

  function maskedField(name, schema, required) {
    const image = fileDrop(name + ".image", "image", "image");
    const mask = fileDrop(name + ".mask", "image", "mask");
    const control = el("div", { class: "masked" },
      el("div", {}, el("div", { class: "muted small", text: "Image" }), image.node),
      el("div", {}, el("div", { class: "muted small", text: "Mask (same size; white = selected)" }), mask.node));
    const shell = fieldShell(name, schema, required, control, null);
    return { ...shell, name, control: image.input, describe: () => image.describe(),
      async read() {
        const [a, b] = [await image.read(), await mask.read()];
        if (a === undefined && b === undefined) {
          if (required) throw new Error("Required: choose an image and its mask.");
          return undefined;
        }
        if (a === undefined || b === undefined) throw new Error("Give both the image and its mask.");
        return { image: a, mask: b };
      },
      reset() { image.reset(); mask.reset(); } };
  }

  function jsonField(name, schema, required) {
    const id = "field-" + name;
    const control = el("textarea", { id, name, rows: 3, placeholder: "JSON" });
    const initial = schema.default !== undefined ? JSON.stringify(schema.default) : "";
    control.value = initial;
    const shell = fieldShell(name, schema, required, control, id);
    return { ...shell, name, control,
      read() {
        if (control.value.trim() === "") {
          if (required) throw new Error("Required.");
          return undefined;
        }
        try { return JSON.parse(control.value); } catch (error) { throw new Error("Not valid JSON: " + error.message); }
      },
      reset() { control.value = initial; } };
  }

  function makeField(name, raw, required) {
    const { schema, nullable } = unwrap(raw, inputDefs);
    const kind = schema["x-tungsten-file"];
    if (kind === "masked_image") return maskedField(name, schema, required);
    if (kind) return fileField(name, schema, required);
    if (Array.isArray(schema.enum) || Array.isArray(schema.choices)) return choiceField(name, schema, required, nullable);
    if (schema.type === "boolean") return booleanField(name, schema, required);
    if (schema.type === "integer" || schema.type === "number") return numberField(name, schema, required);
    if (schema.type === "string") return textField(name, schema, required);
    return jsonField(name, schema, required);
  }

  function buildForm() {
    const schema = resolve(meta.input_schema, inputDefs);
    const required = new Set(schema.required || []);
    fields = Object.entries(schema.properties || {}).map(([name, raw]) => makeField(name, raw, required.has(name)));
    const container = $("fields");
    container.replaceChildren(...fields.map((f) => f.node));
    if (!fields.length) container.append(el("p", { class: "muted", text: "This model takes no inputs: press Run." }));
    $("submit").disabled = false;
  }

  function clearErrors() {
    for (const field of fields) field.clearError();
    $("form-error").hidden = true;
  }

  function formError(message) {
    $("form-error").textContent = message;
    $("form-error").hidden = false;
  }

  // Server errors (422, 413) name the field in `loc`: ["body", 0, FIELD, ...].
  function showServerErrors(detail) {
    let shown = false;
    const rest = [];
    for (const error of Array.isArray(detail) ? detail : [{ msg: detailText(detail) }]) {
      const loc = (error && error.loc) || [];
      const field = loc[0] === "body" ? fields.find((f) => f.name === loc[2]) : null;
      if (field) {
        const inner = loc.slice(3).join(".");
        field.showError((inner ? inner + ": " : "") + (error.msg || "invalid"));
        if (!shown) field.node.scrollIntoView({ block: "nearest" });
        shown = true;
      } else {
        rest.push(error && error.msg ? error.msg : JSON.stringify(error));
      }
    }
    if (rest.length) formError(rest.join("; "));
  }

  // -- running a prediction --------------------------------------------------------------
  async function submitWithRetry(body) {
    for (let attempt = 0; ; attempt++) {
      const response = await fetch("predictions", {
        method: "POST", headers: withKey({ "Content-Type": "application/json", Accept: "application/json" }), body: JSON.stringify(body),
      });
      if ((response.status !== 429 && response.status !== 503) || attempt >= SUBMIT_RETRIES) return response;
      const wait = Math.min(Number(response.headers.get("Retry-After")) || 2 ** attempt, 30);
      runMessage("The server is busy (" + response.status + "); trying again in " + wait + " s…", "info");
      await sleep(wait * 1000);
      runMessage(null);
    }
  }

  // How the page learns that a prediction moved on: the one place to change. It reads the
  // prediction's event stream (GET predictions/{id}/events) with fetch, so the API key
  // goes along as a header (an EventSource cannot send one), resuming after a dropped
  // connection with Last-Event-ID; onUpdate gets a body like GET's, plus the newest
  // partial output of each input (partial) while a streaming model runs. Where the stream
  // cannot be had, it long-polls GET predictions/{id}?wait= instead.
  async function follow(id, onUpdate, signal) {
    try {
      const ended = await followEvents(id, onUpdate, signal);
      if (ended !== undefined) return ended;
    } catch (error) {
      if (signal.aborted) throw error;
    }
    return poll(id, onUpdate, signal);
  }

  // Returns the ended body, null for an unknown prediction, or undefined when the events
  // cannot be followed (then the caller polls).
  async function followEvents(id, onUpdate, signal) {
    const body = { status: "pending", outputs: null, progress: null, logs: null };
    const partial = [];
    let lastId = "";
    let failures = 0;
    for (;;) {
      const headers = withKey({ Accept: "text/event-stream" });
      if (lastId) headers["Last-Event-ID"] = lastId;
      let response;
      try {
        response = await fetch("predictions/" + encodeURIComponent(id) + "/events", { headers, signal });
      } catch (error) {
        if (signal.aborted) throw error;
        if (++failures > 5 || !lastId) return undefined;
        await sleep(Math.min(500 * 2 ** failures, 8000));
        continue;
      }
      if (response.status === 404) return lastId ? undefined : null;
      if (!response.ok || !response.body || response.status === 204) return undefined;
      let event = { name: "message", data: [] };
      let buffer = "";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, cut).replace(/\r$/, "");
            buffer = buffer.slice(cut + 1);
            if (line === "") {
              if (event.data.length) {
                const ended = onEvent(event.name, event.data.join("\n"));
                if (ended) return ended;
              }
              event = { name: "message", data: [] };
            } else if (line.startsWith("data:")) event.data.push(line.slice(5).replace(/^ /, ""));
            else if (line.startsWith("event:")) event.name = line.slice(6).trim();
            else if (line.startsWith("id:")) lastId = line.slice(3).trim();
          }
        }
      } catch (error) {
        if (signal.aborted) throw error;
      }
      failures = 0;  // the stream ended before the prediction did (a server stopping): resume
    }

    function onEvent(name, text) {
      let data;
      try { data = JSON.parse(text); } catch (error) { return undefined; }
      if (name === "completed") {
        onUpdate(data);
        return data;
      }
      if (name === "start") { body.status = "running"; body.started_at = data.started_at; }
      else if (name === "progress") { body.status = "running"; body.progress = data; }
      else if (name === "log") { body.status = "running"; body.logs = (body.logs || "") + (data.text || ""); }
      else if (name === "output" && Array.isArray(data)) {
        body.status = "running";
        for (const item of data) partial[item.index] = item.output;
        body.partial = partial.slice();
      } else if (name !== "queued") return undefined;
      onUpdate(Object.assign({}, body));
      return undefined;
    }
  }

  async function poll(id, onUpdate, signal) {
    let failures = 0;
    for (;;) {
      let response;
      try {
        response = await fetch("predictions/" + encodeURIComponent(id) + "?wait=" + HOLD_S, { headers: withKey({ Accept: "application/json" }), signal });
      } catch (error) {
        if (signal.aborted) throw error;
        if (++failures > 5) throw new Error("Lost the server: " + error.message);
        await sleep(Math.min(500 * 2 ** failures, 8000));
        continue;
      }
      if (response.status === 404) return null;
      if ([429, 502, 503, 504].includes(response.status) && ++failures <= 5) {
        await sleep((Number(response.headers.get("Retry-After")) || 1) * 1000);
        continue;
      }
      if (!response.ok) throw new Error("The server answered " + response.status + ": " + detailText((await readJson(response)).detail));
      failures = 0;
      const body = await response.json();
      onUpdate(body);
      if (ENDED.has(body.status)) return body;
    }
  }

  function runMessage(text, kind) {
    const node = $("run-message");
    node.hidden = !text;
    node.textContent = text || "";
    node.className = "run-message" + (kind ? " " + kind : "");
  }

  function startView(id) {
    if (view) { view.controller.abort(); clearInterval(view.timer); }
    view = { id, controller: new AbortController(), startedAt: performance.now(), timer: null, ended: false };
    $("run").hidden = false;
    $("raw").hidden = true;
    $("outputs").replaceChildren();
    runMessage(null);
    $("prediction-id").textContent = id ? "id " + id : "";
    $("progress").className = "progress";
    $("model-progress").hidden = true;
    $("logs").hidden = true;
    const mine = view;
    view.timer = setInterval(() => {
      if (!mine.ended) $("elapsed").textContent = ((performance.now() - mine.startedAt) / 1000).toFixed(1) + " s";
    }, 100);
    setStatus(id ? "loading" : "submitted");
    return view;
  }

  function stopTimer(current) {
    current.ended = true;
    clearInterval(current.timer);
  }

  const LABELS = { submitted: "Sending…", loading: "Loading…", pending: "Queued", running: "Running", success: "Succeeded",
    failed: "Failed", canceled: "Canceled", expired: "Expired", refused: "Refused" };
  const STEP_ORDER = ["submitted", "pending", "running", "ended"];

  function setStatus(status) {
    const pill = $("status");
    pill.textContent = LABELS[status] || status;
    pill.className = "pill " + status;
    const step = ["success", "failed", "canceled", "expired", "refused"].includes(status) ? "ended" : status;
    const at = STEP_ORDER.indexOf(step);
    for (const item of $("steps").children) {
      const index = STEP_ORDER.indexOf(item.dataset.step);
      item.className = index < at || (step === "ended" && index === at) ? "done" : index === at ? "current" : "";
    }
    const busy = status === "pending" || status === "running";
    $("cancel").hidden = !busy || !view || !view.id;
    $("cancel").disabled = false;
    if (!busy && status !== "submitted" && status !== "loading") {
      $("progress").className = "progress idle " + (status === "success" ? "success" : "failed");
    }
  }

  function durationText(body) {
    const start = Date.parse(body.created_at);
    const end = Date.parse(body.completed_at);
    return Number.isFinite(start) && Number.isFinite(end) ? ((end - start) / 1000).toFixed(2) + " s" : "";
  }

  // What a running model reports: its progress (step of total, message) and its logs.
  function showProgress(body) {
    const progress = body.progress;
    const line = $("model-progress");
    line.hidden = !progress;
    if (progress) {
      line.textContent = "Step " + progress.step + " of " + progress.total + (progress.message ? ": " + progress.message : "");
    }
    $("logs").hidden = !body.logs;
    $("logs-text").textContent = body.logs || "";
  }

  function showBody(body) {
    const canceled = body.status === "failed" && body.error_message === "Canceled";
    const status = canceled ? "canceled" : body.status;
    setStatus(status);
    updateHistory(view.id, status);
    showProgress(body);
    if (!ENDED.has(body.status)) {
      if (body.partial && body.partial.length) renderOutputs(body.partial.filter((output) => output !== undefined));
      return;
    }
    stopTimer(view);
    const took = durationText(body);
    if (took) $("elapsed").textContent = took;
    if (body.status === "success") renderOutputs(body.outputs || []);
    else runMessage(canceled ? "Canceled." : body.error_message || "The prediction failed.", canceled ? "info" : "");
    $("raw-json").textContent = JSON.stringify(body, (key, value) =>
      typeof value === "string" && value.startsWith("data:") && value.length > 120 ? value.slice(0, 80) + "… (" + value.length + " characters)" : value, 2);
    $("raw").hidden = false;
    $("submit").disabled = false;
  }

  async function watch(current) {
    try {
      const body = await follow(current.id, (update) => { if (view === current) showBody(update); }, current.controller.signal);
      if (body === null && view === current) expired(current);
    } catch (error) {
      if (view !== current || current.controller.signal.aborted) return;
      stopTimer(current);
      setStatus("failed");
      runMessage(error.message);
      $("submit").disabled = false;
    }
  }

  function expired(current) {
    stopTimer(current);
    setStatus("expired");
    updateHistory(current.id, "expired");
    runMessage("This prediction is no longer on the server: its result expired (or the server's data was reset).", "info");
    $("submit").disabled = false;
  }

  async function onSubmit(event) {
    event.preventDefault();
    clearErrors();
    const input = {};
    let firstBad = null;
    for (const field of fields) {
      try {
        const value = await field.read();
        if (value !== undefined) input[field.name] = value;
      } catch (error) {
        field.showError(error.message);
        firstBad = firstBad || field;
      }
    }
    if (firstBad) {
      if (firstBad.control && firstBad.control.focus) firstBad.control.focus();
      return;
    }
    $("submit").disabled = true;
    const current = startView(null);
    let response;
    try {
      response = await submitWithRetry([input]);
    } catch (error) {
      stopTimer(current);
      setStatus("failed");
      runMessage("Could not reach the server: " + error.message);
      $("submit").disabled = false;
      return;
    }
    if (!response.ok) {
      const detail = (await readJson(response)).detail;
      stopTimer(current);
      setStatus("refused");
      if (response.status === 401 || response.status === 403) {
        showKeyBox(true);
        runMessage("The server answered " + response.status + ": " + detailText(detail) + ". Enter a key above and run again.");
      } else if (response.status === 422 || response.status === 413) {
        showServerErrors(detail);
        runMessage("The server refused the input: see the marked " + (Array.isArray(detail) && detail.length > 1 ? "fields" : "field") + ".");
      } else {
        runMessage("The server answered " + response.status + ": " + detailText(detail));
      }
      $("submit").disabled = false;
      return;
    }
    const { prediction_id: id } = await response.json();
    current.id = id;
    $("prediction-id").textContent = "id " + id;
    addHistory(id, summarize(input));
    setStatus("pending");
    watch(current);
  }

  async function onCancel() {
    if (!view || !view.id) return;
    $("cancel").disabled = true;
    try {
      const response = await fetch("predictions/" + encodeURIComponent(view.id) + "/cancel", { method: "POST", headers: withKey({ Accept: "application/json" }) });
      if (response.ok) showBody(await response.json());
      else runMessage("Cancel failed: the server answered " + response.status, "info");
    } catch (error) {
      runMessage("Cancel failed: " + error.message, "info");
      $("cancel").disabled = false;
    }
  }

  async function showPrediction(id) {
    const current = startView(id);
    $("output-card").scrollIntoView({ block: "nearest", behavior: "smooth" });
    let response;
    try {
      response = await fetch("predictions/" + encodeURIComponent(id), { headers: withKey({ Accept: "application/json" }), signal: current.controller.signal });
    } catch (error) {
      if (view === current) { stopTimer(current); runMessage("Could not reach the server: " + error.message); }
      return;
    }
    if (view !== current) return;
    if (response.status === 404) { expired(current); return; }
    if (response.status === 401 || response.status === 403) {
      stopTimer(current);
      showKeyBox(true);
      runMessage("The server answered " + response.status + ": " + detailText((await readJson(response)).detail));
      return;
    }
    const body = await response.json();
    showBody(body);
    if (!ENDED.has(body.status)) watch(current);
  }

  // -- outputs ---------------------------------------------------------------------------
  function extension(uri) {
    const match = /^data:([^;,]+)/.exec(uri);
    const type = match ? match[1] : "";
    const known = { "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp", "audio/wav": "wav",
      "audio/mpeg": "mp3", "audio/ogg": "ogg", "audio/flac": "flac", "video/mp4": "mp4", "video/webm": "webm", "application/json": "json" };
    return known[type] || (type.split("/")[1] || "bin").replace(/[^a-z0-9]/gi, "");
  }

  function fileOutput(uri, kind, label) {
    const name = label.replace(/[^A-Za-z0-9_.-]+/g, "_") + "." + extension(uri);
    const keyed = !uri.startsWith("data:") && apiKey() !== "";
    const src = keyed ? undefined : uri;
    const download = el("a", { class: "download", href: uri, download: name, text: "Download " + name });
    let media = null;
    if (kind === "image") {
      media = el("img", { src, alt: label });
      media.addEventListener("load", () => { if (media.naturalWidth < 96) media.classList.add("small-image"); });
    } else if (kind === "audio") media = el("audio", { src, controls: true });
    else if (kind === "video") media = el("video", { src, controls: true });
    if (keyed) withKeyedFile(uri, media, download);
    return el("div", { class: "out-file", "data-kind": kind }, media, download);
  }

  // A link to GET /files/... needs the key as well, which <img src> cannot send: the file
  // is fetched with it and shown from memory.
  async function withKeyedFile(uri, media, download) {
    try {
      const response = await fetch(uri, { headers: withKey({}) });
      if (!response.ok) return;
      const local = URL.createObjectURL(await response.blob());
      if (media) media.src = local;
      download.href = local;
    } catch (error) { /* the link stays as it was */ }
  }

  function renderValue(value, raw, label) {
    const { schema } = unwrap(raw || {}, outputDefs);
    const kind = schema["x-tungsten-file"];
    if (kind && typeof value === "string") return el("div", { class: "out-files" }, fileOutput(value, kind, label));
    if (Array.isArray(value)) {
      const items = unwrap(schema.items || {}, outputDefs).schema;
      if (items["x-tungsten-file"]) {
        return value.length ? el("div", { class: "out-files" }, value.map((item, i) => fileOutput(item, items["x-tungsten-file"], label + "-" + i)))
          : el("div", { class: "muted small", text: "(none)" });
      }
      if (value.every((item) => item === null || typeof item !== "object")) return el("div", { class: "out-value", text: JSON.stringify(value) });
      return el("div", { class: "out-group" }, value.map((item, i) => outField(label + " " + (i + 1), item, schema.items)));
    }
    if (value !== null && typeof value === "object") {
      const properties = schema.properties || {};
      const extra = typeof schema.additionalProperties === "object" ? schema.additionalProperties : null;
      if (!Object.keys(properties).length && !extra) return el("pre", { class: "out-json", text: JSON.stringify(value, null, 2) });
      return el("div", { class: "out-group" }, Object.entries(value).map(([key, item]) => outField(key, item, properties[key] || extra)));
    }
    return el("div", { class: "out-value", text: value === null ? "null" : String(value) });
  }

  function outField(name, value, schema) {
    return el("div", { class: "out-field", "data-output": name }, el("div", { class: "label", text: name }), renderValue(value, schema, name));
  }

  function renderOutputs(outputs) {
    const schema = resolve(meta.output_schema, outputDefs);
    const target = $("outputs");
    target.replaceChildren();
    outputs.forEach((output, index) => {
      const container = outputs.length > 1 ? el("div", { class: "out-group" }, el("div", { class: "label", text: "Output " + (index + 1) })) : target;
      if (output && typeof output === "object" && schema.properties) {
        for (const [name, value] of Object.entries(output)) container.append(outField(name, value, schema.properties[name]));
      } else {
        container.append(renderValue(output, schema, "output"));
      }
      if (container !== target) target.append(container);
    });
  }

  // -- history (this browser's predictions, in localStorage) --------------------------------
  function historyKey() { return "tungsten-demo:" + (meta ? meta.name : ""); }

  function loadHistory() {
    try {
      const list = JSON.parse(localStorage.getItem(historyKey()) || "[]");
      return Array.isArray(list) ? list : [];
    } catch (error) { return []; }
  }

  function saveHistory(list) {
    try { localStorage.setItem(historyKey(), JSON.stringify(list.slice(0, HISTORY_LIMIT))); } catch (error) { /* private mode: no history */ }
    renderHistory();
  }

  function addHistory(id, summary) {
    saveHistory([{ id, at: Date.now(), status: "pending", summary }, ...loadHistory().filter((item) => item.id !== id)]);
  }

  function updateHistory(id, status) {
    const list = loadHistory();
    const item = list.find((entry) => entry.id === id);
    if (item && item.status !== status) { item.status = status; saveHistory(list); }
  }

  function ago(at) {
    const seconds = Math.max(0, Math.round((Date.now() - at) / 1000));
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
    return new Date(at).toLocaleString();
  }

  function summarize(input) {
    const parts = [];
    for (const field of fields) {
      if (!(field.name in input)) continue;
      const value = field.describe ? field.describe() : input[field.name];
      let text = typeof value === "string" ? value : JSON.stringify(value);
      if (text.length > 40) text = text.slice(0, 39) + "…";
      parts.push(field.name + ": " + text);
    }
    return parts.join(", ") || "(defaults)";
  }

  function renderHistory() {
    const list = loadHistory();
    const target = $("history");
    target.replaceChildren(...list.map((item) => el("li", {},
      el("button", { type: "button", "data-id": item.id, onclick: () => showPrediction(item.id) },
        el("span", { class: "top" }, el("span", { class: "pill " + item.status, text: LABELS[item.status] || item.status }),
          el("span", { class: "when", text: ago(item.at) })),
        el("span", { class: "summary", text: item.summary })))));
    if (!list.length) target.append(el("li", { class: "muted small", text: "None yet." }));
    $("clear-history").hidden = !list.length;
  }

  // -- start -----------------------------------------------------------------------------
  async function start() {
    $("form").addEventListener("submit", onSubmit);
    $("form").addEventListener("reset", () => { clearErrors(); for (const field of fields) field.reset(); });
    $("cancel").addEventListener("click", onCancel);
    $("clear-history").addEventListener("click", () => saveHistory([]));
    setUpKeyBox();
    try {
      const response = await fetch("./", { headers: { Accept: "application/json" } });
      meta = await response.json();
    } catch (error) {
      $("fields").replaceChildren(el("p", { class: "form-error", text: "Could not load the model's description: " + error.message }));
      return;
    }
    inputDefs = meta.input_schema.$defs || {};
    outputDefs = meta.output_schema.$defs || {};
    document.title = meta.name + " · demo";
    $("model-name").textContent = meta.name;
    $("model-meta").textContent = meta.model_class + " · batch size " + meta.batch_size;
    buildForm();
    renderHistory();
  }

  start();
})();
