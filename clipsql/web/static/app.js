// clipsql web UI: a little vanilla JS over the JSON API (/openapi.json describes it).
// Untrusted text (file names, paths, errors) only ever goes in via textContent.
"use strict";

const PAGE = 40;
const $ = (id) => document.getElementById(id);
const FILTERS = ["date_from", "date_to", "camera", "gps", "label", "where", "order_by", "within", "adaptive"];
// The query being shown: text, a stored image (id), or an uploaded file; plus the next offset.
// Query algebra: more images to add (plusIds), images and texts to move away from.
let state = { q: "", imageId: null, imageName: "", file: null, offset: 0, rank: 0, plusIds: [], minusIds: [] };
// A SQL filter that came in the page's URL (a link from anywhere) is shown in its box but not
// sent until the user acts on the page: Search, Enter in the box, or an edit of it.
let linkedWhere = false;

function wordsMode() {
  // "words in the image": the text box searches the text OCR read in the images, alone.
  return $("words").checked && !!state.q && !state.file && state.imageId === null;
}

function params(extra, forAddressBar) {
  const p = new URLSearchParams();
  if (wordsMode()) {
    p.set("words", state.q);
  } else {
    if (state.q) p.set("q", state.q);
    if (state.imageId !== null) p.set("image_id", state.imageId);
    if ($("hybrid").checked && state.q && !state.file) p.set("hybrid", "true"); // fused with captions
    if (!state.file) for (const id of state.plusIds) p.append("image_id", id);
    for (const id of state.minusIds) p.append("minus_image_id", id);
    for (const text of minusTexts()) p.append("minus", text);
  }
  for (const name of FILTERS) {
    const value = $(name).value.trim();
    if (name === "where" && linkedWhere && !forAddressBar) continue;
    if (value) p.set(name, value);
  }
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p;
}

function acceptWhere() {
  // The user acted on the page: the SQL box's filter runs from now on.
  linkedWhere = false;
  $("where-pending").hidden = true;
}

function minusTexts() {
  return $("minus").value.split(",").map((s) => s.trim()).filter(Boolean).slice(0, 10);
}

function remember() {
  // The page URL mirrors the query, so a reload or a shared link shows the same results.
  const p = state.file ? new URLSearchParams() : params(null, true);
  history.replaceState(null, "", p.toString() ? "?" + p : location.pathname);
}

async function fetchPage(offset) {
  const p = params({ offset, limit: PAGE });
  let response;
  if (state.file) {
    const body = new FormData();
    body.append("file", state.file);
    response = await fetch("/api/search/image?" + p, { method: "POST", body });
  } else {
    response = await fetch("/api/search?" + p);
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : data.detail;
    throw new Error(detail || `${response.status} ${response.statusText}`);
  }
  return data;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!isError);
}

async function run(append) {
  if (!state.q && state.imageId === null && !state.file && !state.plusIds.length) {
    $("grid").replaceChildren();
    $("more").hidden = true;
    return intro();
  }
  if (!append) {
    state.offset = 0;
    state.rank = 0;
  }
  remember();
  showQuery();
  $("intro").hidden = true;
  setStatus("Searching…");
  document.body.classList.add("busy");
  try {
    const data = await fetchPage(state.offset);
    if (!append) $("grid").replaceChildren();
    for (const hit of data.results) $("grid").append(card(hit, ++state.rank));
    state.offset += data.results.length;
    $("more").hidden = !data.more;
    const n = state.rank;
    setStatus(n ? `${n} result${n === 1 ? "" : "s"}${data.more ? " so far" : ""}, best first · ` +
                  `${Math.round(data.elapsed_ms)} ms` : "No images match these filters.");
  } catch (err) {
    if (!append) $("grid").replaceChildren();
    $("more").hidden = true;
    setStatus(err.message, true);
  } finally {
    document.body.classList.remove("busy");
  }
}

function el(tag, props, ...children) {
  const node = Object.assign(document.createElement(tag), props || {});
  node.append(...children);
  return node;
}

function clock(seconds) {
  // A moment's time in the video: 1:23, or 1:02:03 past an hour.
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function isMoment(hit) {
  return hit.start_s !== null && hit.start_s !== undefined && !!hit.video_url;
}

function card(hit, rank) {
  const img = el("img", { src: hit.thumbnail_url, alt: hit.name, loading: "lazy", decoding: "async" });
  const open = el("a", { href: isMoment(hit) ? hit.video_url + "#t=" + hit.start_s : hit.image_url,
                         className: "thumb", title: describe(hit) }, img);
  if (isMoment(hit)) {
    open.append(el("span", { className: "time", textContent: "▶ " + clock(hit.start_s),
                             title: `video, ${clock(hit.start_s)}–${clock(hit.end_s ?? hit.start_s)}` }));
  }
  open.addEventListener("click", (event) => {
    if (event.ctrlKey || event.metaKey || event.shiftKey) return; // a new tab, as usual
    event.preventDefault();
    view(hit);
  });
  const like = el("button", { type: "button", className: "like", textContent: "More like this" });
  like.addEventListener("click", () => moreLike(hit));
  const plus = el("button", { type: "button", className: "add-part", textContent: "+", title: "Add to the query" });
  plus.addEventListener("click", () => addPart("plusIds", hit));
  const minus = el("button", { type: "button", className: "minus-part", textContent: "−", title: "Less like this" });
  minus.addEventListener("click", () => addPart("minusIds", hit));
  const score = el("span", { className: "score", title: hit.ocr_score != null ? "text rank of the words in the image" : "cosine similarity" },
                   el("b", { textContent: "#" + rank }), " " + hit.score.toFixed(3));
  return el("figure", { className: "card" }, open, score,
            el("figcaption", {}, el("span", { className: "name", textContent: hit.name, title: hit.path }),
               el("span", { className: "meta when" }, ...summary(hit)),
               hit.caption ? el("span", { className: "meta caption", textContent: hit.caption }) : "",
               hit.ocr_text ? el("span", { className: "meta words", textContent: "“" + hit.ocr_text + "”" }) : "",
               el("span", { className: "actions" }, like, plus, minus)));
}

function summary(hit) {
  // Under the name: when (the date is never cut: the line wraps after it) and with what,
  // else the size (imported rows have none).
  const parts = [];
  if (hit.taken_at) {
    const day = hit.taken_at.slice(0, 10);
    parts.push(el("time", { className: "date", dateTime: day, textContent: day }));
  }
  if (hit.camera_make) parts.push(el("span", { className: "camera", textContent: hit.camera_make }));
  if (!parts.length) return hit.width ? [`${hit.width}×${hit.height}`] : [];
  return parts.flatMap((part, i) => (i ? [" · ", part] : [part]));
}

function describe(hit) {
  const lines = [hit.path, `${hit.width}×${hit.height} ${hit.format}`];
  if (isMoment(hit)) lines.push(`video moment ${clock(hit.start_s)}–${clock(hit.end_s ?? hit.start_s)}`);
  if (hit.taken_at) lines.push("taken " + hit.taken_at.replace("T", " ").slice(0, 16));
  const camera = [hit.camera_make, hit.camera_model].filter(Boolean).join(" ");
  if (camera) lines.push(camera);
  if (hit.latitude !== null && hit.longitude !== null) lines.push(`GPS ${hit.latitude.toFixed(4)}, ${hit.longitude.toFixed(4)}`);
  return lines.join("\n");
}

function moreLike(hit) {
  $("viewer").open && $("viewer").close();
  Object.assign(state, { q: "", imageId: hit.id, imageName: hit.name, thumb: hit.thumbnail_url, file: null });
  $("q").value = "";
  run(false);
  window.scrollTo({ top: 0 });
}

function addPart(list, hit) {
  if (!state[list].includes(hit.id)) state[list] = [...state[list], hit.id].slice(-10);
  run(false);
}

function showParts() {
  // The query's extra parts as chips; × removes one.
  const chips = [];
  for (const [list, sign] of [["plusIds", "+"], ["minusIds", "−"]]) {
    for (const id of state[list]) {
      const remove = el("button", { type: "button", textContent: "×", title: "Remove from the query" });
      remove.addEventListener("click", () => { state[list] = state[list].filter((x) => x !== id); run(false); });
      chips.push(el("span", { className: "part" }, el("img", { src: "/thumbs/" + id, alt: "" }), `${sign} #${id}`, remove));
    }
  }
  $("parts").replaceChildren(...chips);
  $("parts").hidden = !chips.length;
}

let viewing = 0; // which view() the words that arrive belong to

function stopVideo() {
  const video = $("viewer-video");
  video.pause();
  video.removeAttribute("src");
  video.load();
  video.hidden = true;
}

function view(hit) {
  const shown = ++viewing;
  const video = $("viewer-video"), img = $("viewer-img");
  $("viewer-boxes").replaceChildren();
  $("viewer-text").hidden = true;
  if (isMoment(hit)) {
    // The video from the moment's start: the #t fragment, and currentTime once it is known.
    img.hidden = true;
    img.removeAttribute("src");
    video.hidden = false;
    video.poster = hit.image_url;
    video.onloadedmetadata = () => {
      if (shown === viewing && Math.abs(video.currentTime - hit.start_s) > 0.25) video.currentTime = hit.start_s;
    };
    video.src = hit.video_url + "#t=" + hit.start_s;
  } else {
    stopVideo();
    img.hidden = false;
    img.src = hit.image_url;
    img.alt = hit.name;
  }
  $("viewer-caption").textContent = describe(hit).split("\n").slice(1).join(" · ") + " · " + hit.name;
  $("viewer-open").href = isMoment(hit) ? hit.video_url + "#t=" + hit.start_s : hit.image_url;
  $("viewer-like").onclick = () => moreLike(hit);
  $("viewer").showModal();
  showWords(hit, shown);
}

async function showWords(hit, shown) {
  // The text OCR read in the image, and boxes over the words the query matched.
  const query = wordsMode() ? "?" + new URLSearchParams({ q: state.q }) : "";
  let data;
  try {
    const response = await fetch(`/api/images/${hit.id}/words${query}`);
    if (!response.ok) return;
    data = await response.json();
  } catch (err) {
    return;
  }
  if (shown !== viewing || !data.read) return;
  if (data.text) {
    $("viewer-text").textContent = data.text.replace(/\n\s*\n/g, "\n").trim();
    $("viewer-text").hidden = false;
  }
  if (!query || isMoment(hit) || !data.width || !data.height) return;
  const boxes = [];
  for (const word of data.matches) {
    const [x, y, w, h] = word.box;
    const box = el("span", { className: "word-box", title: word.text });
    Object.assign(box.style, { left: `${(100 * x) / data.width}%`, top: `${(100 * y) / data.height}%`,
                               width: `${(100 * w) / data.width}%`, height: `${(100 * h) / data.height}%` });
    boxes.push(box);
  }
  $("viewer-boxes").replaceChildren(...boxes);
}

function showQuery() {
  showParts();
  const byImage = state.imageId !== null || state.file;
  $("query").hidden = !byImage;
  if (!byImage) return;
  $("query-thumb").hidden = !state.thumb;
  if (state.thumb) $("query-thumb").src = state.thumb;
  $("query-text").textContent = "Images like " + (state.imageName || "#" + state.imageId);
}

async function intro() {
  $("query").hidden = true;
  try {
    const facets = await (await fetch("/api/facets")).json();
    $("intro").hidden = !facets.images;
    setStatus(facets.images ? `${facets.images} images in the collection. Describe what you are looking for.`
                            : "The collection is empty: run `clipsql load FOLDER`, then reload this page.");
  } catch (err) {
    setStatus(err.message, true);
  }
}

async function loadFacets() {
  const facets = await (await fetch("/api/facets")).json();
  for (const c of facets.cameras || []) {
    $("camera").append(el("option", { value: c.camera_make, textContent: `${c.camera_make} (${c.images})` }));
  }
  if (facets.labels && facets.labels.length) {
    for (const l of facets.labels) $("label").append(el("option", { value: l.label, textContent: `${l.label} (${l.images})` }));
    $("label-filter").hidden = false;
  }
  if (facets.taken_at && facets.taken_at.min) {
    for (const id of ["date_from", "date_to"]) Object.assign($(id), { min: facets.taken_at.min, max: facets.taken_at.max });
  }
}

function restore() {
  const p = new URLSearchParams(location.search);
  state.q = p.get("q") || "";
  $("hybrid").checked = p.get("hybrid") === "true";
  $("words").checked = !!p.get("words");
  if (p.get("words")) state.q = p.get("words");
  $("q").value = state.q;
  const ids = p.getAll("image_id").map(Number);
  if (ids.length) Object.assign(state, { imageId: ids[0], imageName: "", thumb: "/thumbs/" + ids[0], plusIds: ids.slice(1) });
  state.minusIds = p.getAll("minus_image_id").map(Number);
  $("minus").value = p.getAll("minus").join(", ");
  for (const name of FILTERS) {
    if (!p.get(name)) continue;
    const input = $(name);
    if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === p.get(name))) {
      input.append(el("option", { value: p.get(name), textContent: p.get(name) }));
    }
    input.value = p.get(name);
    if (name === "where") {
      $("sql").open = true;
      linkedWhere = true; // shown, not run: the link may come from any site
      $("where-pending").hidden = false;
    }
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  // A search started while the facets still load must not be overwritten by restore() below.
  let userActed = false;
  for (const type of ["submit", "change"]) document.addEventListener(type, () => { userActed = true; }, true);
  document.addEventListener("keydown", (event) => { if (event.key === "Enter") userActed = true; }, true);
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    acceptWhere();
    Object.assign(state, { q: $("q").value.trim(), imageId: null, file: null, thumb: null, plusIds: [], minusIds: [] });
    run(false);
  });
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (!file) return;
    Object.assign(state, { q: "", imageId: null, file, imageName: file.name, thumb: URL.createObjectURL(file) });
    $("q").value = "";
    $("upload").value = "";
    run(false);
  });
  $("filters").addEventListener("change", () => run(false));
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); acceptWhere(); run(false); });
  $("where").addEventListener("input", acceptWhere);
  $("where").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); acceptWhere(); run(false); }
  });
  $("more").addEventListener("click", () => run(true));
  $("clear-query").addEventListener("click", () => {
    Object.assign(state, { imageId: null, file: null, thumb: null });
    run(false);
    $("q").focus();
  });
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer").addEventListener("close", () => { viewing++; stopVideo(); });
  $("viewer").addEventListener("click", (event) => { if (event.target === $("viewer")) $("viewer").close(); });
  try {
    await loadFacets();
  } catch (err) {
    setStatus(err.message, true);
  }
  if (!userActed) {
    restore();
    await run(false);
  }
  document.body.dataset.ready = "1";
});
