// The loradb catalogue: three views over the HTTP API (records, a record, a space's map).
// Everything a user or a contributor wrote (names, metadata, owners) is put on the page with
// textContent, never as markup. The token stays in this tab's sessionStorage.
"use strict";

const API = "/v1";
const TOKEN_KEY = "loradb-token";
const PAGE_SIZE = 50;
const COLOURS = ["#2458d6", "#d92d20", "#079455", "#dc6803", "#7a5af8", "#0e9384", "#c11574", "#667085",
                 "#4e5ba6", "#b54708", "#039855", "#6941c6", "#98a2b3"];

// ---- small helpers ---------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "style") node.style.cssText = v;  // CSSOM: the page's policy refuses style attributes
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function status(message, ok) {
  const s = document.getElementById("status");
  s.textContent = message || "";
  s.className = ok ? "ok" : "";
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = Object.assign({}, opts.headers || {});
  if (token()) opts.headers["Authorization"] = "Bearer " + token();
  const response = await fetch(API + path, opts);
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    if (response.status === 401) message += " (enter a token above)";
    throw new Error(message);
  }
  return response;
}

async function getJSON(path) { return (await api(path)).json(); }

function postJSON(body) { return {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)}; }

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

function short(id) { return String(id || "").slice(0, 12); }

function baseText(base) {  // a hub id or packaged name as it is; a path (a server's --base folder) by its last two parts
  const parts = String(base || "").split("/").filter(Boolean);
  return parts.length > 2 ? "…/" + parts.slice(-2).join("/") : String(base || "");
}

function baseLabel(base) { return el("span", {title: base}, baseText(base)); }

function spaceText(s) { return short(s.id) + " · " + baseText(s.base_name) + " · " + s.records + " records"; }

function when(created) { return el("span", {title: created}, String(created || "").replace("T", " ").slice(0, 16)); }

function licenceText(meta) {  // the record's licence, and what a composed one was made of
  const licence = (meta || {}).licence || (meta || {}).license || "unknown";
  let parts = [];
  try { parts = JSON.parse((meta || {}).lineage || "[]"); } catch (e) { parts = []; }
  // metadata is anyone's to set: only well-formed parts are shown
  parts = Array.isArray(parts) ? parts.filter(p => p && typeof p === "object" && typeof p.name === "string") : [];
  return parts.length ? licence + "; composed from " + parts.map(p => p.name + " " + Number(p.weight).toFixed(2) + " (" + (p.licence || "unknown") + ")").join(", ")
                      : licence;
}

function metaTags(meta) {
  return Object.entries(meta || {}).map(([k, v]) => el("span", {class: "tag"}, k + "=" + v));
}

function privacyText(record) {
  const p = record.privacy;
  if (record.data_summary === false) return "no data summary (imported)";
  if (!p) return record.private ? "private" : "exact mean";
  return "DP ε=" + p.epsilon + ", δ=" + p.delta;
}

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = el("a", {href: url, download: filename});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function download(path, options, filename) {
  const response = await api(path, options);
  saveBlob(await response.blob(), filename);
  status("downloaded " + filename, true);
}

function guarded(fn) {  // an action's failure is shown, never thrown into the console only
  return async (...args) => {
    try { await fn(...args); } catch (e) { status(e.message); }
  };
}

// ---- the records table -----------------------------------------------------------------

async function viewRecords(params, current) {
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const filters = {base: params.get("base") || "", space: params.get("space") || "", meta: params.get("meta") || "",
                   q: params.get("q") || ""};
  const main = document.getElementById("main");
  const [page, spaces] = await Promise.all([
    getJSON("/catalogue/records" + query(Object.assign({offset: offset, limit: PAGE_SIZE}, filters))),
    getJSON("/spaces")]);
  const bases = [...new Set(spaces.map(s => s.base_name))].sort();  // filtered by the full name, shown short
  const field = (name, label, input) => el("label", {}, label, input);
  const select = (name, options, chosen) => el("select", {name: name, id: "filter-" + name},
    el("option", {value: ""}, "any"), options.map(([value, text]) => el("option", {value: value, selected: value === chosen}, text)));
  const form = el("form", {class: "filters", id: "filters", onsubmit: (e) => {
      e.preventDefault();
      const data = new FormData(e.target);
      location.hash = "#/records" + query(Object.fromEntries(data.entries()));
    }},
    field("base", "base model", select("base", bases.map(b => [b, baseText(b)]), filters.base)),
    field("space", "space", select("space", spaces.map(s => [s.id, spaceText(s)]), filters.space)),
    field("meta", "metadata", el("input", {name: "meta", id: "filter-meta", placeholder: "key=value", value: filters.meta})),
    field("q", "text", el("input", {name: "q", id: "filter-q", placeholder: "name, owner, metadata, id", value: filters.q})),
    el("button", {type: "submit", id: "filter-apply"}, "Filter"),
    el("button", {type: "button", class: "plain", onclick: () => { location.hash = "#/records"; }}, "Clear"));
  const rows = page.records.map(r => el("tr", {},
    el("td", {}, el("a", {href: "#/record/" + encodeURIComponent(r.id), class: "record-link"}, r.name)),
    el("td", {}, baseLabel(r.base)), el("td", {}, el("code", {title: r.space}, short(r.space))),
    el("td", {class: "num"}, r.rank), el("td", {}, (r.modules || []).join(", ")),
    el("td", {class: "num"}, r.n_samples === null ? "—" : r.n_samples), el("td", {}, r.owner || "local"),
    el("td", {}, when(r.created)), el("td", {}, privacyText(r)), el("td", {}, metaTags(r.meta))));
  const last = Math.min(page.total, offset + page.records.length);
  const go = (to) => () => { location.hash = "#/records" + query(Object.assign({}, filters, {offset: to || ""})); };
  const pager = el("div", {class: "pager"},
    el("button", {class: "plain", id: "prev", disabled: offset === 0, onclick: go(Math.max(0, offset - PAGE_SIZE))}, "‹ Previous"),
    el("span", {id: "range"}, page.total ? (offset + 1).toLocaleString() + "–" + last.toLocaleString() + " of " + page.total.toLocaleString() : "no records match"),
    el("button", {class: "plain", id: "next", disabled: last >= page.total, onclick: go(offset + PAGE_SIZE)}, "Next ›"));
  if (!current()) return;
  main.replaceChildren(
    el("h1", {}, "Records"), form, pager,
    el("div", {class: "table-scroll"}, el("table", {id: "records"},
      el("thead", {}, el("tr", {}, ["name", "base model", "space", "rank", "modules", "n", "owner", "created", "privacy", "metadata"].map(h => el("th", {}, h)))),
      el("tbody", {}, rows))));
  status(page.total.toLocaleString() + " record" + (page.total === 1 ? "" : "s"), true);
}

// ---- one record ------------------------------------------------------------------------

async function viewRecord(ref, current) {
  const main = document.getElementById("main");
  const [r, near] = await Promise.all([getJSON("/records/" + encodeURIComponent(ref)),
                                       getJSON("/records/" + encodeURIComponent(ref) + "/neighbours?k=10")]);
  const fact = (label, value) => [el("dt", {}, label), el("dd", {}, value)];
  if (!current()) return;
  main.replaceChildren(
    el("h1", {id: "record-name"}, r.name),
    el("p", {}, el("button", {id: "download", onclick: guarded(() => download("/records/" + encodeURIComponent(r.id) + "/adapter", {}, r.name + ".tar"))},
                   "Download adapter (.tar)"), " ",
       r.data_summary === false ? el("span", {class: "muted"}, "no data summary: on no map, found by name or the data-free key arrow")
                                : el("a", {href: "#/map" + query({space: r.space})}, "show on its space's map")),
    el("h2", {}, "Provenance"),
    el("dl", {class: "facts", id: "provenance"},
      fact("id", el("code", {}, r.id)), fact("base model", r.base), fact("base fingerprint", el("code", {}, r.base_fingerprint)),
      fact("space", el("code", {}, r.space)), fact("rank", r.rank), fact("modules", (r.target_modules || []).join(", ")),
      fact("training examples", r.n_samples === null ? "—" : r.n_samples), fact("adapter sha256", el("code", {}, r.blob_sha256)),
      fact("added by", r.owner || "local (loradb add)"), fact("added", r.created), fact("privacy of z", privacyText(r)),
      fact("retrieval keys", (r.keys || []).join(", ")), fact("licence", licenceText(r.meta)), fact("metadata", metaTags(r.meta))),
    el("h2", {}, "Space recipe"), el("pre", {}, JSON.stringify(r.space_recipe, null, 2)),
    el("h2", {}, "Adapter config"), el("pre", {}, JSON.stringify(r.adapter_config, null, 2)),
    el("h2", {}, "Nearest in its space"),
    near.length ? el("div", {class: "table-scroll"}, el("table", {id: "neighbours"},
      el("thead", {}, el("tr", {}, ["name", "distance (squared L2)", "owner", "metadata"].map(h => el("th", {}, h)))),
      el("tbody", {}, near.map(n => el("tr", {},
        el("td", {}, el("a", {href: "#/record/" + encodeURIComponent(n.id)}, n.name)),
        el("td", {class: "num"}, Number(n.distance).toPrecision(6)), el("td", {}, n.owner || "local"),
        el("td", {}, metaTags(n.meta)))))))
      : el("p", {class: "muted"}, r.data_summary === false ? "none: this record has no summary of its data to compare"
                                                          : "no other record in this space"));
  status("", true);
}

// ---- the map ---------------------------------------------------------------------------

function parseNpy(buffer) {
  // a .npy holding one float32/float64 vector, as `loradb represent` writes it
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.slice(1, 6));
  if (bytes[0] !== 0x93 || magic !== "NUMPY") throw new Error("not a .npy file");
  const view = new DataView(buffer);
  const major = bytes[6];
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.slice(start, start + headerLength));
  const descr = (header.match(/'descr':\s*'([^']+)'/) || [])[1];
  const shape = (header.match(/'shape':\s*\(([^)]*)\)/) || [])[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error("a Fortran-ordered .npy is not a representation");
  const dims = (shape || "").split(",").map(s => s.trim()).filter(Boolean).map(Number);
  if (dims.length !== 1) throw new Error("a representation .npy holds one vector; this one has shape (" + shape + ")");
  const offset = start + headerLength;
  if (descr === "<f4") return Array.from(new Float32Array(buffer.slice(offset, offset + 4 * dims[0])));
  if (descr === "<f8") return Array.from(new Float64Array(buffer.slice(offset, offset + 8 * dims[0])));
  throw new Error("a representation .npy holds little-endian floats; this one holds " + descr);
}

async function readRepresentation(fileList) {
  const files = Array.from(fileList);
  const vectors = files.filter(f => f.name.endsWith(".npy"));
  if (vectors.length !== 1) throw new Error("drop one representation: its .npy and its .npy.json, as `loradb represent` wrote them");
  const npy = vectors[0];
  const sidecar = files.find(f => f.name === npy.name + ".json");
  if (!sidecar) throw new Error("drop " + npy.name + ".json beside " + npy.name + ": it says which space z is in");
  const z = parseNpy(await npy.arrayBuffer());
  let doc;
  try { doc = JSON.parse(await sidecar.text()); } catch (e) { throw new Error(sidecar.name + " is not valid JSON"); }
  if (!doc || typeof doc !== "object" || !doc.space) throw new Error(sidecar.name + " is not a representation sidecar");
  return Object.assign({}, doc, {z: z, name: npy.name});
}

const MAP_NAMED = 40;  // up to this many points, each is drawn with its name

function drawMap(canvas, data, target, circled) {  // circled: indices of the points to ring
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 18;
  let x0 = target ? target.x : data.x[0], x1 = x0, y0 = target ? target.y : data.y[0], y1 = y0;
  for (let i = 0; i < data.x.length; i++) {
    x0 = Math.min(x0, data.x[i]); x1 = Math.max(x1, data.x[i]); y0 = Math.min(y0, data.y[i]); y1 = Math.max(y1, data.y[i]);
  }
  const sx = (w - 2 * pad) / ((x1 - x0) || 1), sy = (h - 2 * pad) / ((y1 - y0) || 1);
  const px = (x) => pad + (x - x0) * sx, py = (y) => h - pad - (y - y0) * sy;
  ctx.clearRect(0, 0, w, h);
  const size = data.x.length > 20000 ? 1.5 : data.x.length > 2000 ? 2.5 : data.x.length > 200 ? 4 : 8;
  for (let i = 0; i < data.x.length; i++) {
    const c = data.category[i];
    ctx.fillStyle = c === null ? "#c0c6d0" : COLOURS[c % COLOURS.length];
    ctx.fillRect(px(data.x[i]) - size / 2, py(data.y[i]) - size / 2, size, size);
  }
  if (data.x.length <= MAP_NAMED) {  // few enough to read: each point with its record's name
    ctx.fillStyle = "#344054";
    ctx.font = "11px system-ui, sans-serif";
    for (let i = 0; i < data.x.length; i++) ctx.fillText(data.names[i], px(data.x[i]) + size / 2 + 3, py(data.y[i]) + 4);
  }
  ctx.lineWidth = 2;
  for (const i of circled) {
    ctx.strokeStyle = "#101828";
    ctx.beginPath(); ctx.arc(px(data.x[i]), py(data.y[i]), 7, 0, 2 * Math.PI); ctx.stroke();
  }
  if (target) {
    ctx.fillStyle = "#101828";
    ctx.beginPath();
    const cx = px(target.x), cy = py(target.y);
    for (let k = 0; k < 10; k++) {
      const r = k % 2 ? 4 : 10, a = Math.PI / 2 + k * Math.PI / 5;
      ctx.lineTo(cx + r * Math.cos(a), cy - r * Math.sin(a));
    }
    ctx.closePath(); ctx.fill();
  }
  canvas.pick = (ex, ey) => {  // the prototype under a click, within 6 px
    let best = -1, bestD = 36;
    for (let i = 0; i < data.x.length; i++) {
      const d = (px(data.x[i]) - ex) ** 2 + (py(data.y[i]) - ey) ** 2;
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  };
}

async function viewMap(params, current) {
  const main = document.getElementById("main");
  const [spaces, methods] = await Promise.all([getJSON("/spaces"), getJSON("/methods")]);
  if (!current()) return;
  if (!spaces.length) { main.replaceChildren(el("h1", {}, "Map"), el("p", {class: "muted"}, "the database is empty")); return; }
  const space = params.get("space") || spaces.slice().sort((a, b) => b.records - a.records)[0].id;
  const colour = params.get("colour") || "";
  const sample = params.get("sample") || "";  // how many prototypes to draw (the server's default when empty)
  const data = await getJSON("/spaces/" + encodeURIComponent(space) + "/map" + query({colour: colour, sample: sample}));
  const state = {target: null, hits: [], asked: 0};
  const point = new Map(data.ids.map((id, i) => [id, i]));  // a record's point on the map (if drawn)
  const canvas = el("canvas", {id: "map", width: 760, height: 540});
  const redraw = () => drawMap(canvas, data, state.target, state.hits.map(h => point.get(h.id)).filter(i => i !== undefined));
  const under = (e) => canvas.pick(e.offsetX * canvas.width / canvas.clientWidth, e.offsetY * canvas.height / canvas.clientHeight);
  canvas.addEventListener("click", (e) => {
    const i = under(e);
    if (i >= 0) location.hash = "#/record/" + encodeURIComponent(data.ids[i]);
  });
  canvas.addEventListener("mousemove", (e) => {  // the point under the pointer, named (the browser's own tooltip)
    const i = under(e);
    const category = i >= 0 && data.category[i] !== null ? " (" + data.colour + "=" + data.categories[data.category[i]] + ")" : "";
    canvas.title = i >= 0 ? data.names[i] + category : "";
  });
  const spaceSelect = el("select", {id: "map-space", onchange: (e) => { location.hash = "#/map" + query({space: e.target.value, colour: colour, sample: sample}); }},
    spaces.map(s => el("option", {value: s.id, selected: s.id === space}, spaceText(s))));
  const colourSelect = el("select", {id: "map-colour", onchange: (e) => { location.hash = "#/map" + query({space: space, colour: e.target.value, sample: sample}); }},
    el("option", {value: ""}, "(none)"), data.keys.map(k => el("option", {value: k, selected: k === colour}, k)));
  const legend = el("div", {class: "legend", id: "legend"},
    data.categories.map((c, i) => el("span", {}, el("i", {style: "background:" + COLOURS[i % COLOURS.length]}), c)));
  const methodSelect = el("select", {id: "method"},
    methods.methods.map(m => el("option", {value: m.name, title: m.help, selected: m.name === methods.default}, m.name)));
  const keySelect = el("select", {id: "key"}, el("option", {value: ""}, "the space's"),
    methods.keys.map(k => el("option", {value: k.name, title: k.help}, k.name)));
  const kInput = el("input", {id: "k", type: "number", min: 1, max: 100, value: 5, style: "width:4.5rem"});
  // the composed update's size, theta0 + s * sum w_i delta_i (weights shown and composed at s)
  const scaleInput = el("input", {id: "scale", type: "number", min: 0.01, max: 100, step: "any", value: 1, style: "width:4.5rem",
    title: "every weight times this: the size of the composed update (1: as the method gives them)"});
  const results = el("div", {id: "results"});
  const fileInput = el("input", {type: "file", id: "repr-files", multiple: true, accept: ".npy,.json"});
  const drop = el("div", {id: "drop"},
    el("strong", {}, "Where does my data land?"),
    el("p", {class: "muted"}, "Drop the two files `loradb represent DATA --base … -o target.npy` wrote (target.npy and target.npy.json) here, or choose them. " +
      "The server receives z and its sidecar (the space, the number of examples, and any task or variance it holds), never the data."),
    fileInput,
    el("p", {}, el("label", {}, "method ", methodSelect), " ", el("label", {}, "k ", kInput), " ",
       el("label", {}, "key ", keySelect), " ", el("label", {}, "scale ", scaleInput)),
    results);

  const retrieve = guarded(async () => {
    if (!state.rep) return;
    // the map's space: the server refuses a representation of another one
    const body = {representation: state.doc, k: parseInt(kInput.value, 10) || 5, method: methodSelect.value, space: space};
    if (keySelect.value) body.key = keySelect.value;
    const scale = Number(scaleInput.value);
    if (scaleInput.value !== "" && scale !== 1) body.scale = scale;  // the server refuses a size outside (0, 100]
    const asked = ++state.asked;
    const result = await (await api("/search", postJSON(body))).json();
    if (asked !== state.asked) return;  // a newer choice of method, k, key or scale is on its way
    state.hits = result.results.map(r => ({id: r.record.id, name: r.record.name, weight: r.weight, distance: r.distance}));
    redraw();
    results.replaceChildren(
      el("p", {}, "Retrieved for ", el("code", {}, state.rep.name), " by ", el("strong", {}, result.method),
        Object.keys(result.params || {}).length ? " (" + Object.entries(result.params).map(([k, v]) =>
          k + " " + (typeof v === "number" ? Number(v).toPrecision(4) : v)).join(", ") + ")" : "", ":"),
      el("table", {id: "weights"}, el("thead", {}, el("tr", {}, ["adapter", "distance", "weight"].map(h => el("th", {}, h)))),
        el("tbody", {}, state.hits.map(hh => el("tr", {},
          el("td", {}, el("a", {href: "#/record/" + encodeURIComponent(hh.id)}, hh.name)),
          el("td", {class: "num"}, Number(hh.distance).toPrecision(5)),
          el("td", {class: "num weight"}, Number(hh.weight).toFixed(4)))))),
      fitParagraph(result.fit),
      result.lineage ? el("p", {id: "licence"}, "Licence of the composition: ", el("strong", {}, result.lineage.licence),
        " (every weighted part's terms apply; unknown if any part's is)") : "",
      el("p", {}, el("button", {id: "compose", onclick: guarded(() => download("/compose", postJSON(composeBody(body, result.fit)), "composed.tar"))},
                     result.fit && result.fit.decision === "abstain" ? "Compose anyway (.tar)" : "Download composed adapter (.tar)")));
    status("retrieved " + state.hits.length + " adapters", true);
  });
  const take = guarded(async (fileList) => {
    const rep = await readRepresentation(fileList);
    if (rep.space.id && rep.space.id !== space) {
      throw new Error("this representation is of space " + short(rep.space.id) + "; the map shows " + short(space) + " (choose its space above)");
    }
    if (rep.z.length !== data.mean.length) throw new Error("z has " + rep.z.length + " values; this space has " + data.mean.length);
    const centred = rep.z.map((v, i) => v - data.mean[i]);
    const dot = (row) => row.reduce((s, v, i) => s + v * centred[i], 0);
    state.rep = rep;
    state.doc = Object.assign({}, rep);
    delete state.doc.name;
    state.target = {x: dot(data.components[0]), y: dot(data.components[1])};
    canvas.dataset.targetX = state.target.x;  // where the star is, in the map's coordinates
    canvas.dataset.targetY = state.target.y;
    redraw();
    await retrieve();
  });
  fileInput.addEventListener("change", (e) => take(e.target.files));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); take(e.dataTransfer.files); });
  methodSelect.addEventListener("change", retrieve);
  keySelect.addEventListener("change", retrieve);
  kInput.addEventListener("change", retrieve);
  scaleInput.addEventListener("change", retrieve);

  if (!current()) return;
  main.replaceChildren(
    el("h1", {}, "Map of a space"),
    el("form", {class: "filters", onsubmit: (e) => e.preventDefault()},
      el("label", {}, "space", spaceSelect), el("label", {}, "colour by metadata", colourSelect)),
    el("p", {class: "muted", id: "map-note"},
      (data.sampled ? "A seeded random sample of " + data.shown.toLocaleString() + " of the " + data.total.toLocaleString() + " prototypes"
                    : "All " + data.total.toLocaleString() + " prototypes") +
      " (each record's z), projected on the space's two principal axes (" +
      data.explained.map(e => (100 * e).toFixed(1) + "%").join(" and ") + " of the variance). Click a point to open its record."),
    el("div", {class: "map-layout"}, el("div", {}, canvas, legend), el("div", {class: "side"}, drop)));
  redraw();
  status("", true);
}

// ---- routing ---------------------------------------------------------------------------

let routing = 0;  // how many views were asked for: only the latest may render

async function route() {
  const hash = location.hash.replace(/^#/, "") || "/records";
  const [path, search] = hash.split("?");
  const params = new URLSearchParams(search || "");
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", path.startsWith("/" + a.id.slice(4)));
  status("");
  const mine = ++routing;
  const current = () => mine === routing;  // a view whose reads finish after the user moved on is dropped
  try {
    if (path.startsWith("/record/")) await viewRecord(decodeURIComponent(path.slice("/record/".length)), current);
    else if (path === "/map") await viewMap(params, current);
    else await viewRecords(params, current);
    if (!current()) return;
    document.body.dataset.ready = hash;  // what the browser tests wait for
    // two frames later the view has been painted: benchmarks/catalogue.py reads this mark
    requestAnimationFrame(() => requestAnimationFrame(() => performance.mark("loradb-view-painted")));
  } catch (e) {
    if (!current()) return;
    document.getElementById("main").replaceChildren(el("p", {class: "muted"}, "Nothing to show."));
    status(e.message);
    document.body.dataset.ready = "error";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = token();
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    route();
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    input.value = "";
    route();
  });
  window.addEventListener("hashchange", route);
  route();
});

// does anything in the library fit the target: the search's fit block, said in one line
function fitParagraph(fit) {
  if (!fit) return el("p", {id: "fit"});
  if (fit.score === null || fit.score === undefined) return el("p", {id: "fit"}, "fit: not checked (" + fit.reason + ")");
  const abstain = fit.decision === "abstain";
  return el("p", {id: "fit", class: abstain ? "abstain" : "compose"},
    "fit " + Number(fit.score).toFixed(2) + " (composes at 0.50 or more): ",
    el("strong", {}, abstain ? "abstain" : "compose"), abstain ? ": " + fit.reason : "");
}

// a compose the fit advises against is sent only as an explicit "anyway"
function composeBody(body, fit) {
  return fit && fit.decision === "abstain" ? Object.assign({}, body, {force: true}) : body;
}
