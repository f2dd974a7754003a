// The portal's plots, drawn without a library: a Mollweide sky map (canvas) of a HEALPix density map with
// result positions over it, and a light curve (SVG) with error bars per band.
"use strict";
const DMSPlots = (() => {
  const SQRT2 = Math.SQRT2;
  const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];

  // Longitude on the map: RA 180 at the centre, RA increasing to the left (RA 0 at the right edge).
  const longitude = (ra) => 180 - (((ra % 360) + 360) % 360);

  // Mollweide projection of (ra, dec) in degrees.
  function mollweide(ra, dec) {
    return project(longitude(ra), dec);
  }

  function project(lon, dec) {
    const phi = (dec * Math.PI) / 180;
    let theta = phi;
    if (Math.abs(phi) < Math.PI / 2 - 1e-9) {
      for (let i = 0; i < 30; i++) {
        const f = 2 * theta + Math.sin(2 * theta) - Math.PI * Math.sin(phi);
        const step = f / (2 + 2 * Math.cos(2 * theta));
        theta -= step;
        if (Math.abs(step) < 1e-10) break;
      }
    }
    return [((2 * SQRT2) / Math.PI) * ((lon * Math.PI) / 180) * Math.cos(theta), SQRT2 * Math.sin(theta)];
  }

  function frame(canvas) {
    const w = canvas.width, h = canvas.height, margin = 10;
    const scale = Math.min((w - 2 * margin) / (4 * SQRT2), (h - 2 * margin) / (2 * SQRT2));
    return { toPixel: ([x, y]) => [w / 2 + x * scale, h / 2 - y * scale], w, h };
  }

  function outline(ctx, f) {
    ctx.beginPath();
    for (let dec = -90; dec <= 90; dec += 2) ctx.lineTo(...f.toPixel(project(-180, dec)));
    for (let dec = 90; dec >= -90; dec -= 2) ctx.lineTo(...f.toPixel(project(180, dec)));
    ctx.closePath();
  }

  function grid(ctx, f) {
    ctx.strokeStyle = "rgba(120,120,120,0.6)";
    ctx.lineWidth = 0.5;
    for (let ra = 0; ra < 360; ra += 60) {
      ctx.beginPath();
      for (let dec = -90; dec <= 90; dec += 3) ctx.lineTo(...f.toPixel(mollweide(ra + 1e-6, dec)));
      ctx.stroke();
    }
    for (let dec = -60; dec <= 60; dec += 30) {
      ctx.beginPath();
      for (let lon = -180; lon <= 180; lon += 3) ctx.lineTo(...f.toPixel(project(lon, dec)));
      ctx.stroke();
    }
    ctx.fillStyle = "#333";
    ctx.font = "11px sans-serif";
    for (const ra of [0, 90, 180, 270]) {
      const [x, y] = f.toPixel(mollweide(ra === 0 ? 0.1 : ra, 0));
      ctx.fillText(`${ra}°`, x + 2, y - 2);
    }
  }

  function colour(count, max) {
    const t = max > 1 ? Math.log(count) / Math.log(max) : 1;
    return VIRIDIS[Math.min(VIRIDIS.length - 1, Math.max(0, Math.floor(t * (VIRIDIS.length - 1) + 1e-9)))];
  }

  // Draw `density` ({pixels: [{count, corners: [[ra, dec] x 4]}]}, or null) and `points` ([[ra, dec]]).
  function sky(canvas, density, points) {
    const ctx = canvas.getContext("2d");
    const f = frame(canvas);
    ctx.clearRect(0, 0, f.w, f.h);
    ctx.save();
    outline(ctx, f);
    ctx.fillStyle = "#f4f4f4";
    ctx.fill();
    ctx.clip();
    if (density && density.pixels.length) {
      const max = Math.max(...density.pixels.map((p) => p.count));
      for (const p of density.pixels) {
        let lons = p.corners.map(([ra]) => longitude(ra));
        if (Math.max(...lons) - Math.min(...lons) > 180) {
          const centre = lons.reduce((a, b) => a + Math.sign(b), 0) >= 0 ? 1 : -1;
          lons = lons.map((l) => (Math.sign(l) === centre ? l : l + 360 * centre));
        }
        ctx.beginPath();
        p.corners.forEach(([, dec], i) => ctx.lineTo(...f.toPixel(project(Math.max(-180, Math.min(180, lons[i])), dec))));
        ctx.closePath();
        ctx.fillStyle = colour(p.count, max);
        ctx.fill();
      }
    }
    ctx.fillStyle = "#e8112d";
    for (const [ra, dec] of points || []) {
      const [x, y] = f.toPixel(mollweide(ra, dec));
      ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    }
    ctx.restore();
    grid(ctx, f);
    outline(ctx, f);
    ctx.strokeStyle = "#333";
    ctx.lineWidth = 1;
    ctx.stroke();
  }

  const BAND_COLOURS = { u: "#56b4e9", g: "#009e73", r: "#e69f00", i: "#d55e00", z: "#cc79a7", y: "#000000" };
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // An SVG light curve of {diaObjectId, sources, forced}: flux (nJy) against MJD, one colour per band.
  function lightCurve(data) {
    const width = 820, height = 360, left = 70, right = 110, top = 20, bottom = 45;
    const points = [
      ...data.sources.map((p) => ({ ...p, forced: false })),
      ...data.forced.map((p) => ({ ...p, forced: true })),
    ].filter((p) => p.flux !== null);
    const label = `Light curve of DiaObject ${data.diaObjectId}: ${data.sources.length} DiaSources and ` +
      `${data.forced.length} forced sources`;
    const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
    svg.appendChild(el("title", {}, label));
    if (!points.length) {
      svg.appendChild(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no measurements"));
      return svg;
    }
    const mjd = points.map((p) => p.mjd), lo = points.map((p) => p.flux - (p.flux_err || 0)), hi = points.map((p) => p.flux + (p.flux_err || 0));
    let [x0, x1] = [Math.min(...mjd), Math.max(...mjd)], [y0, y1] = [Math.min(...lo), Math.max(...hi)];
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    const sx = (v) => left + ((v - x0) / (x1 - x0)) * (width - left - right);
    const sy = (v) => height - bottom - ((v - y0) / (y1 - y0)) * (height - top - bottom);
    svg.appendChild(el("rect", { x: left, y: top, width: width - left - right, height: height - top - bottom, fill: "none", stroke: "#333" }));
    for (let i = 0; i <= 4; i++) {
      const xv = x0 + ((x1 - x0) * i) / 4, yv = y0 + ((y1 - y0) * i) / 4;
      svg.appendChild(el("text", { x: sx(xv), y: height - bottom + 15, "text-anchor": "middle", "font-size": 11 }, xv.toFixed(2)));
      svg.appendChild(el("text", { x: left - 5, y: sy(yv) + 4, "text-anchor": "end", "font-size": 11 }, yv.toFixed(0)));
    }
    svg.appendChild(el("text", { x: (left + width - right) / 2, y: height - 8, "text-anchor": "middle", "font-size": 12 }, "MJD (TAI)"));
    svg.appendChild(el("text", { x: 14, y: height / 2, transform: `rotate(-90 14 ${height / 2})`, "text-anchor": "middle", "font-size": 12 }, "PSF flux (nJy)"));
    for (const p of points) {
      const colour = BAND_COLOURS[p.band] || "#666";
      const g = el("g", { class: p.forced ? "forced" : "source", "data-band": p.band });
      if (p.flux_err) g.appendChild(el("line", { x1: sx(p.mjd), x2: sx(p.mjd), y1: sy(p.flux - p.flux_err), y2: sy(p.flux + p.flux_err), stroke: colour }));
      g.appendChild(p.forced
        ? el("rect", { x: sx(p.mjd) - 3, y: sy(p.flux) - 3, width: 6, height: 6, fill: "none", stroke: colour })
        : el("circle", { cx: sx(p.mjd), cy: sy(p.flux), r: 3.5, fill: colour }));
      g.appendChild(el("title", {}, `${p.forced ? "forced" : "DiaSource"} ${p.band} MJD ${p.mjd.toFixed(5)}: ${p.flux.toFixed(1)} ± ${(p.flux_err || 0).toFixed(1)} nJy`));
      svg.appendChild(g);
    }
    const bands = [...new Set(points.map((p) => p.band))];
    bands.forEach((b, i) => {
      svg.appendChild(el("circle", { cx: width - right + 15, cy: top + 10 + i * 16, r: 4, fill: BAND_COLOURS[b] || "#666" }));
      svg.appendChild(el("text", { x: width - right + 25, y: top + 14 + i * 16, "font-size": 12 }, b));
    });
    svg.appendChild(el("text", { x: width - right + 10, y: top + 24 + bands.length * 16, "font-size": 11 }, "● DiaSource"));
    svg.appendChild(el("text", { x: width - right + 10, y: top + 40 + bands.length * 16, "font-size": 11 }, "▢ forced"));
    return svg;
  }

  return { mollweide, sky, lightCurve };
})();
window.DMSPlots = DMSPlots;
