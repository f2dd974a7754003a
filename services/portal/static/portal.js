// The DMS portal: a thin client of TAP, SIA and the portal's JSON endpoints. The token lives in this tab's
// sessionStorage and goes out only as "Authorization: Bearer" to this same origin.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = "dms.portal.token", ANON = "dms.portal.anonymous", JOBS = "dms.portal.jobs";
  const state = { columns: [], rows: [], order: null, page: 0, query: "", editor: null, density: null, points: [] };

  // ---- HTTP -----------------------------------------------------------------------------------------------
  function headers() {
    const token = sessionStorage.getItem(KEY);
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  async function errorText(response) {
    const text = await response.text();
    try { return JSON.parse(text).error || text; } catch (e) { /* not JSON */ }
    const doc = new DOMParser().parseFromString(text, "application/xml");
    const info = [...doc.getElementsByTagName("INFO")].find((i) => i.getAttribute("name") === "QUERY_STATUS");
    const message = info ? (info.textContent || info.getAttribute("value")) : [...doc.getElementsByTagName("uws:errorSummary")].map((e) => e.textContent).join(" ");
    return (message || text || response.statusText).trim();
  }

  async function call(url, options = {}) {
    const response = await fetch(url, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
    if (!response.ok) {
      const message = await errorText(response);
      if (response.status === 401 && sessionStorage.getItem(KEY)) showLogin(`Your token was refused: ${message}`);
      throw new Error(`${response.status}: ${message}`);
    }
    return response;
  }

  function form(values) {
    const body = new URLSearchParams();
    for (const [k, v] of Object.entries(values)) if (v !== undefined && v !== null && v !== "") body.append(k, String(v));
    return body;
  }

  // JSON results keep 64-bit integers exact (Gaia source_id > 2**53) as BigInt, from the number's source text.
  function exactJson(text) {
    return JSON.parse(text, (key, value, context) =>
      typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source) ? BigInt(context.source) : value);
  }

  async function adql(query, extra = {}) {
    const response = await call("/tap/sync", { method: "POST", body: form({ LANG: "ADQL", QUERY: query, RESPONSEFORMAT: "json", ...extra }) });
    return exactJson(await response.text());
  }

  const literal = (text) => `'${String(text).replaceAll("'", "''")}'`;

  // ---- login ----------------------------------------------------------------------------------------------
  function showLogin(message) {
    delete document.body.dataset.ready;
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ANON);
    $("app").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("who").textContent = "Not logged in";
    $("token").focus();
  }

  async function whoami() {
    const response = await fetch("/portal/api/whoami", { headers: headers() });
    if (!response.ok) throw new Error(await errorText(response));
    return response.json();
  }

  async function start() {
    let me;
    try {
      me = await whoami();
    } catch (e) {
      showLogin(sessionStorage.getItem(KEY) ? `Your token was refused: ${e.message}` : "");
      return;
    }
    if (!me.user && !sessionStorage.getItem(ANON)) {
      showLogin("");
      $("anonymous-button").hidden = !me.anonymous_access;
      return;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    $("who").textContent = me.user ? `Logged in as ${me.user} (scopes: ${me.scopes.join(", ")})` : "Anonymous (public data only)";
    if (!state.editor) setUpEditor();
    await Promise.allSettled([loadSchema(), loadExamples(), loadJobs(), loadDensityTables()]);
    document.body.dataset.ready = "true"; // every panel has loaded (or shown its error)
  }

  async function logIn(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(KEY, token);
    $("token").value = "";
    try {
      await whoami();
    } catch (e) {
      showLogin(`Log in failed: ${e.message}`);
      return;
    }
    await start();
  }

  // ---- editor, examples, schema -------------------------------------------------------------------------
  function setUpEditor() {
    const initial = "SELECT TOP 10 * FROM TAP_SCHEMA.tables";
    state.editor = window.DMSEditor.create($("editor"), initial, { label: "ADQL query", onRun: () => runSync() });
    const content = $("editor").querySelector(".cm-content");
    if (content) { content.setAttribute("aria-labelledby", "query-label"); content.id = "adql"; }
  }

  async function loadExamples() {
    const response = await call("/tap/examples");
    const doc = new DOMParser().parseFromString(await response.text(), "application/xml");
    const select = $("examples");
    select.length = 1; // keep the "Choose" option: a second log-in must not list the examples twice
    for (const example of doc.querySelectorAll('[typeof="example"]')) {
      const option = document.createElement("option");
      option.textContent = example.querySelector('[property="name"]').textContent;
      option.value = example.querySelector('[property="query"]').textContent;
      select.appendChild(option);
    }
  }

  async function loadSchema() {
    const result = await adql("SELECT schema_name, table_name, description FROM TAP_SCHEMA.tables ORDER BY schema_name, table_name", { MAXREC: 10000 });
    const tree = $("schema-tree");
    tree.textContent = "";
    const bySchema = new Map();
    for (const [schema, table, description] of result.data) {
      if (!bySchema.has(schema)) bySchema.set(schema, []);
      bySchema.get(schema).push([table, description]);
    }
    for (const [schema, tables] of bySchema) {
      const details = document.createElement("details");
      details.className = "tree-schema";
      details.innerHTML = "<summary></summary>";
      details.firstChild.textContent = `${schema} (${tables.length})`;
      for (const [table, description] of tables) details.appendChild(tableNode(table, description));
      tree.appendChild(details);
    }
  }

  function tableNode(table, description) {
    const details = document.createElement("details");
    details.className = "tree-table";
    details.dataset.table = table;
    const summary = document.createElement("summary");
    summary.textContent = table;
    if (description) summary.title = description;
    details.appendChild(summary);
    const use = document.createElement("button");
    use.type = "button";
    use.textContent = `Query ${table}`;
    use.addEventListener("click", () => state.editor.setValue(`SELECT TOP 100 * FROM ${table}`));
    details.appendChild(use);
    details.addEventListener("toggle", async () => {
      if (!details.open || details.querySelector("ul")) return;
      const list = document.createElement("ul");
      list.setAttribute("aria-label", `Columns of ${table}`);
      details.appendChild(list);
      try {
        const cols = await adql(`SELECT column_name, datatype, unit, ucd, description FROM TAP_SCHEMA.columns WHERE table_name = ${literal(table)} ORDER BY column_index, column_name`, { MAXREC: 5000 });
        for (const [name, datatype, unit, ucd, text] of cols.data) {
          const item = document.createElement("li");
          item.textContent = `${name} ${datatype}${unit ? ` [${unit}]` : ""}${ucd ? ` ${ucd}` : ""}`;
          if (text) item.title = text;
          list.appendChild(item);
        }
      } catch (e) {
        list.textContent = e.message;
      }
    });
    return details;
  }

  function filterSchema() {
    const needle = $("schema-filter").value.toLowerCase();
    for (const node of document.querySelectorAll(".tree-table")) node.hidden = needle && !node.dataset.table.toLowerCase().includes(needle);
    if (needle) for (const node of document.querySelectorAll(".tree-schema")) node.open = true;
  }

  // ---- running queries ------------------------------------------------------------------------------------
  function status(text, error = "") {
    $("query-status").textContent = text;
    $("query-error").textContent = error;
  }

  async function runSync() {
    const query = state.editor.getValue();
    status("Running…");
    const started = performance.now();
    try {
      const result = await adql(query, { MAXREC: $("maxrec").value });
      showResult(result, query);
      status(`Done in ${((performance.now() - started) / 1000).toFixed(2)} s: ${result.data.length} rows${result.overflow ? " (cut at the row limit)" : ""}`);
    } catch (e) {
      status("", `The query failed: ${e.message}`);
    }
  }

  function rememberJob(url) {
    const jobs = JSON.parse(sessionStorage.getItem(JOBS) || "[]");
    if (!jobs.includes(url)) jobs.push(url);
    sessionStorage.setItem(JOBS, JSON.stringify(jobs));
  }

  async function runAsync() {
    const query = state.editor.getValue();
    status("Submitting…");
    try {
      const response = await call("/tap/async", { method: "POST", body: form({ LANG: "ADQL", QUERY: query, RESPONSEFORMAT: "json", MAXREC: $("maxrec").value, PHASE: "RUN" }) });
      const job = new DOMParser().parseFromString(await response.text(), "application/xml");
      const id = job.getElementsByTagName("uws:jobId")[0].textContent;
      rememberJob(`/tap/async/${encodeURIComponent(id)}`);
      status(`Submitted async job ${id}`);
      await pollJob(id);
    } catch (e) {
      status("", `The job could not be submitted: ${e.message}`);
    }
  }

  async function pollJob(id) {
    for (let i = 0; i < 600; i++) {
      const phase = (await (await call(`/tap/async/${encodeURIComponent(id)}/phase`)).text()).trim();
      await loadJobs();
      if (["COMPLETED", "ERROR", "ABORTED"].includes(phase)) {
        status(`Job ${id}: ${phase}`);
        if (phase === "COMPLETED") await showJobResult(id);
        return;
      }
      await new Promise((r) => setTimeout(r, Math.min(2000, 100 * (i + 1))));
    }
  }

  async function showJobResult(id) {
    const job = await call(`/tap/async/${encodeURIComponent(id)}/parameters`);
    const doc = new DOMParser().parseFromString(await job.text(), "application/xml");
    const query = [...doc.getElementsByTagName("uws:parameter")].find((p) => p.getAttribute("id").toUpperCase() === "QUERY");
    const result = exactJson(await (await call(`/tap/async/${encodeURIComponent(id)}/results/result`)).text());
    showResult(result, query ? query.textContent : "");
    status(`Job ${id}: ${result.data.length} rows`);
  }

  async function loadJobs() {
    const response = await call("/tap/async");
    const doc = new DOMParser().parseFromString(await response.text(), "application/xml");
    const jobs = [...doc.getElementsByTagName("uws:jobref")].map((ref) => ({
      id: ref.getAttribute("id"),
      phase: ref.getElementsByTagName("uws:phase")[0]?.textContent || "",
      created: ref.getElementsByTagName("uws:creationTime")[0]?.textContent || "",
    }));
    const listed = new Set(jobs.map((j) => j.id));
    for (const url of JSON.parse(sessionStorage.getItem(JOBS) || "[]")) {
      const id = decodeURIComponent(url.split("/").pop());
      if (listed.has(id)) continue;
      try {
        const job = new DOMParser().parseFromString(await (await call(url)).text(), "application/xml");
        jobs.push({ id, phase: job.getElementsByTagName("uws:phase")[0].textContent, created: job.getElementsByTagName("uws:creationTime")[0]?.textContent || "" });
      } catch (e) { /* deleted or expired */ }
    }
    const body = $("jobs").tBodies[0];
    body.textContent = "";
    for (const job of jobs) {
      const row = body.insertRow();
      row.dataset.job = job.id;
      for (const value of [job.id, job.phase, job.created]) row.insertCell().textContent = value;
      const actions = row.insertCell();
      if (job.phase === "COMPLETED") actions.appendChild(button(`Show results of ${job.id}`, "Show results", () => showJobResult(job.id)));
      actions.appendChild(button(`Delete job ${job.id}`, "Delete", async () => {
        await call(`/tap/async/${encodeURIComponent(job.id)}`, { method: "DELETE" });
        await loadJobs();
      }));
    }
  }

  function button(label, text, action) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.setAttribute("aria-label", label);
    b.addEventListener("click", () => action().catch((e) => status("", e.message)));
    return b;
  }

  // ---- results table --------------------------------------------------------------------------------------
  function showResult(result, query) {
    state.columns = result.metadata;
    state.rows = result.data;
    state.order = null;
    state.page = 0;
    state.query = query;
    state.overflow = result.overflow;
    renderTable();
    state.points = positions();
    drawSky();
  }

  function positions() {
    const names = state.columns.map((c) => c.name.toLowerCase());
    const ucd = (u) => state.columns.findIndex((c) => (c.ucd || "").toLowerCase().split(";").includes(u));
    let ra = ucd("pos.eq.ra"), dec = ucd("pos.eq.dec");
    if (ra < 0 || dec < 0) {
      for (const [r, d] of [["ra", "dec"], ["s_ra", "s_dec"], ["coord_ra", "coord_dec"], ["ra_icrs", "de_icrs"]]) {
        if (names.includes(r) && names.includes(d)) { ra = names.indexOf(r); dec = names.indexOf(d); break; }
      }
    }
    if (ra < 0 || dec < 0) return [];
    return state.rows.map((row) => [Number(row[ra]), Number(row[dec])]).filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
  }

  function compare(a, b) {
    if (a === null) return b === null ? 0 : 1;
    if (b === null) return -1;
    const numeric = (v) => typeof v === "number" || typeof v === "bigint";
    if (numeric(a) && numeric(b)) return a < b ? -1 : a > b ? 1 : 0;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  function sortBy(index) {
    const ascending = !(state.order && state.order.index === index && state.order.ascending);
    state.order = { index, ascending };
    state.rows.sort((x, y) => (ascending ? 1 : -1) * compare(x[index], y[index]));
    state.page = 0;
    renderTable();
    document.querySelector(`#results th[data-index="${index}"] button`).focus();
  }

  function renderTable() {
    const table = $("results");
    const head = table.tHead;
    head.textContent = "";
    const tr = head.insertRow();
    state.columns.forEach((column, index) => {
      const th = document.createElement("th");
      th.scope = "col";
      th.dataset.index = index;
      const sorted = state.order && state.order.index === index;
      th.setAttribute("aria-sort", sorted ? (state.order.ascending ? "ascending" : "descending") : "none");
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = column.name + (sorted ? (state.order.ascending ? " ▲" : " ▼") : "");
      b.title = [column.datatype, column.unit, column.ucd].filter(Boolean).join(" · ");
      b.setAttribute("aria-label", `Sort by ${column.name}`);
      b.addEventListener("click", () => sortBy(index));
      th.appendChild(b);
      tr.appendChild(th);
    });
    const size = Number($("page-size").value);
    const pages = Math.max(1, Math.ceil(state.rows.length / size));
    state.page = Math.min(state.page, pages - 1);
    const body = table.tBodies[0];
    body.textContent = "";
    for (const row of state.rows.slice(state.page * size, (state.page + 1) * size)) {
      const r = body.insertRow();
      for (const value of row) r.insertCell().textContent = value === null ? "" : Array.isArray(value) ? value.join(" ") : String(value);
    }
    $("page-info").textContent = `Page ${state.page + 1} of ${pages}`;
    $("page-prev").disabled = state.page === 0;
    $("page-next").disabled = state.page >= pages - 1;
    $("results-info").textContent = `${state.rows.length} rows, ${state.columns.length} columns${state.overflow ? " (cut at the row limit)" : ""}`;
  }

  async function download() {
    if (!state.query) { $("results-info").textContent = "Run a query first"; return; }
    const format = $("download-format").value;
    try {
      const response = await call("/tap/sync", { method: "POST", body: form({ LANG: "ADQL", QUERY: state.query, RESPONSEFORMAT: format, MAXREC: $("maxrec").value }) });
      const ext = { votable: "xml", "votable/b2": "xml", csv: "csv", tsv: "tsv", fits: "fits", parquet: "parquet", json: "json" }[format];
      saveBlob(await response.blob(), `result.${ext}`);
    } catch (e) {
      $("results-info").textContent = `Download failed: ${e.message}`;
    }
  }

  // ---- sky plot -------------------------------------------------------------------------------------------
  async function loadDensityTables() {
    const tables = (await (await call("/portal/api/density-tables")).json()).tables;
    const select = $("density-table");
    select.textContent = "";
    for (const t of tables) select.appendChild(new Option(t, t));
    if (tables.length) await drawDensity();
    else { $("sky-status").textContent = "No partitioned catalog table: the plot shows result positions only"; drawSky(); }
  }

  async function drawDensity() {
    const table = $("density-table").value;
    if (!table) return;
    $("sky-status").textContent = `Counting ${table} per HEALPix pixel…`;
    try {
      const url = `/portal/api/density?table=${encodeURIComponent(table)}&order=${encodeURIComponent($("density-order").value)}`;
      state.density = await (await call(url)).json();
      $("sky-status").textContent = `${table}: ${state.density.total} rows in ${state.density.pixels.length} HEALPix pixels of order ${state.density.order}`;
      drawSky();
    } catch (e) {
      $("sky-status").textContent = `The density map failed: ${e.message}`;
    }
  }

  function drawSky() {
    const canvas = $("sky");
    window.DMSPlots.sky(canvas, state.density, state.points);
    const map = state.density ? `density map of ${state.density.table} (${state.density.pixels.length} pixels at order ${state.density.order})` : "no density map";
    canvas.setAttribute("aria-label", `Mollweide sky plot: ${map}, ${state.points.length} result positions in red`);
    canvas.dataset.points = String(state.points.length);
    canvas.dataset.pixels = String(state.density ? state.density.pixels.length : 0);
  }

  // ---- images and light curves ---------------------------------------------------------------------------
  async function findImages(event) {
    event.preventDefault();
    const pos = `CIRCLE ${$("sia-ra").value} ${$("sia-dec").value} ${$("sia-radius").value}`;
    $("sia-status").textContent = "Searching…";
    try {
      const result = await (await call(`/sia/query?POS=${encodeURIComponent(pos)}&RESPONSEFORMAT=json`)).json();
      const col = (name) => result.metadata.findIndex((c) => c.name === name);
      const [did, obs, ra, dec, fmt] = ["obs_publisher_did", "obs_id", "s_ra", "s_dec", "access_format"].map(col);
      const body = $("images").tBodies[0];
      body.textContent = "";
      for (const row of result.data) {
        const r = body.insertRow();
        for (const value of [row[obs], row[ra], row[dec], row[fmt]]) r.insertCell().textContent = value === null ? "" : String(value);
        const actions = r.insertCell();
        actions.appendChild(button(`Preview ${row[obs]}`, "Preview", () => preview(row[did], row[obs], row[ra], row[dec])));
        actions.appendChild(button(`Download ${row[obs]}`, "Download file", () => downloadImage(row[did], row[obs])));
      }
      $("sia-status").textContent = `${result.data.length} images`;
    } catch (e) {
      $("sia-status").textContent = `The image search failed: ${e.message}`;
    }
  }

  function saveBlob(blob, name) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  }

  // The image file by its DataLink #this link; the token goes only to this server, never to another host.
  async function downloadImage(did, obsId) {
    const doc = new DOMParser().parseFromString(await (await call(`/datalink?ID=${encodeURIComponent(did)}`)).text(), "application/xml");
    const fields = [...doc.getElementsByTagName("FIELD")].map((f) => f.getAttribute("name"));
    const links = [...doc.getElementsByTagName("TR")].map((tr) => Object.fromEntries([...tr.getElementsByTagName("TD")].map((td, i) => [fields[i], td.textContent])));
    const link = links.find((l) => l.semantics === "#this");
    if (!link || !link.access_url) throw new Error((link && link.error_message) || `no file link for ${obsId}`);
    const url = new URL(link.access_url, window.location.href);
    if (url.origin !== window.location.origin) { window.open(url.href, "_blank", "noopener"); return; }
    const blob = await (await call(url.pathname + url.search)).blob();
    saveBlob(blob, url.pathname.split("/").pop().includes(".") ? decodeURIComponent(url.pathname.split("/").pop()) : `${obsId}.fits`);
    $("sia-status").textContent = `Downloaded ${obsId}`;
  }

  async function preview(did, obsId, ra, dec) {
    const size = $("cutout-size").value;
    const params = new URLSearchParams({ id: did });
    if (size) { params.set("ra", $("sia-ra").value); params.set("dec", $("sia-dec").value); params.set("size", size); }
    $("sia-status").textContent = `Rendering ${obsId}…`;
    try {
      const blob = await (await call(`/portal/api/preview?${params}`)).blob();
      const img = $("preview");
      if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
      await new Promise((resolve, reject) => { img.onload = resolve; img.onerror = reject; img.src = URL.createObjectURL(blob); });
      const what = size ? `a ${size}° cutout around ${$("sia-ra").value}, ${$("sia-dec").value}` : "the whole image";
      img.alt = `Preview of image ${obsId} (centre ${ra}, ${dec}): ${what}, zscale grey levels`;
      $("preview-caption").textContent = `${obsId}: ${what} (zscale)`;
      $("preview-figure").hidden = false;
      $("sia-status").textContent = `Showing ${obsId}`;
    } catch (e) {
      $("sia-status").textContent = `The preview failed: ${e.message || e}`;
    }
  }

  async function showLightCurve(event) {
    event.preventDefault();
    const id = $("dia-object-id").value.trim();
    $("lightcurve-status").textContent = "Reading the APDB…";
    try {
      const data = await (await call(`/portal/api/lightcurve?diaObjectId=${encodeURIComponent(id)}`)).json();
      const holder = $("lightcurve");
      holder.textContent = "";
      holder.appendChild(window.DMSPlots.lightCurve(data));
      $("lightcurve-status").textContent = `DiaObject ${data.diaObjectId}: ${data.sources.length} DiaSources, ${data.forced.length} forced sources`;
    } catch (e) {
      $("lightcurve-status").textContent = `No light curve: ${e.message}`;
    }
  }

  // ---- wiring ---------------------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", logIn);
    $("anonymous-button").addEventListener("click", () => { sessionStorage.setItem(ANON, "1"); start(); });
    $("logout").addEventListener("click", () => showLogin("Logged out"));
    $("examples").addEventListener("change", () => { if ($("examples").value) state.editor.setValue($("examples").value); });
    $("schema-filter").addEventListener("input", filterSchema);
    $("run-sync").addEventListener("click", runSync);
    $("run-async").addEventListener("click", runAsync);
    $("jobs-refresh").addEventListener("click", () => loadJobs().catch((e) => status("", e.message)));
    $("page-size").addEventListener("change", renderTable);
    $("page-prev").addEventListener("click", () => { state.page -= 1; renderTable(); });
    $("page-next").addEventListener("click", () => { state.page += 1; renderTable(); });
    $("download").addEventListener("click", download);
    $("density-draw").addEventListener("click", drawDensity);
    $("sia-form").addEventListener("submit", findImages);
    $("lightcurve-form").addEventListener("submit", showLightCurve);
    start();
  });
})();
