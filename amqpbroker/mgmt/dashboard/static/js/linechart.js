// A line chart drawn by hand on a <canvas>: a few series over the last minutes, a y axis
// from 0 to a rounded maximum, a time axis in seconds ago. No library.
import { el } from "./dom.js";

const COLORS = ["#e8710a", "#1a73e8", "#188038", "#a142f4", "#d93025", "#12b5cb"];
const KEEP_MS = 10 * 60 * 1000;

/** Samples of named values over time, kept for ten minutes. */
export class History {
  constructor() { this.samples = []; }
  add(values, t = Date.now()) {
    this.samples.push({ t, values });
    while (this.samples.length && this.samples[0].t < t - KEEP_MS) this.samples.shift();
  }
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/** A chart of `series` ([{key, label}]) read from a History; call draw() after each sample. */
export class LineChart {
  constructor(title, series, { width = 440, height = 180, unit = "" } = {}) {
    this.series = series;
    this.unit = unit;
    this.width = width;
    this.height = height;
    this.canvas = el("canvas", { role: "img", "aria-label": title });
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = width * ratio;
    this.canvas.height = height * ratio;
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    this.ratio = ratio;
    this.legend = el("div", { class: "legend" });
    this.node = el("div", { class: "chart" }, el("strong", {}, title), this.canvas, this.legend);
  }

  draw(history) {
    const ctx = this.canvas.getContext("2d");
    const { width: w, height: h } = this;
    ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const left = 50, right = w - 8, top = 8, bottom = h - 20;
    const samples = history.samples;
    const now = samples.length ? samples[samples.length - 1].t : Date.now();
    const span = Math.max(60_000, now - (samples.length ? samples[0].t : now));
    let max = 0;
    for (const s of samples) for (const { key } of this.series) {
      const v = s.values[key];
      if (typeof v === "number" && v > max) max = v;
    }
    max = niceMax(max);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#666";
    ctx.strokeStyle = "#ddd";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {                         // grid and y labels
      const y = bottom - ((bottom - top) * i) / 4;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
      const label = (max * i) / 4;
      ctx.textAlign = "right";
      ctx.fillText(`${+label.toFixed(3)}${this.unit}`, left - 4, y + 4);
    }
    ctx.textAlign = "left";
    ctx.fillText(`${Math.round(span / 1000)} s ago`, left, h - 5);
    ctx.textAlign = "right";
    ctx.fillText("now", right, h - 5);
    const x = (t) => right - ((now - t) / span) * (right - left);
    const y = (v) => bottom - (v / max) * (bottom - top);
    this.series.forEach(({ key }, i) => {
      ctx.strokeStyle = COLORS[i % COLORS.length];
      ctx.lineWidth = 2;
      ctx.beginPath();
      let pen = false;
      for (const s of samples) {
        const v = s.values[key];
        if (typeof v !== "number") { pen = false; continue; }  // a gap, not a zero
        if (pen) ctx.lineTo(x(s.t), y(v)); else ctx.moveTo(x(s.t), y(v));
        pen = true;
      }
      ctx.stroke();
    });
    const last = samples.length ? samples[samples.length - 1].values : {};
    this.legend.replaceChildren(...this.series.map(({ key, label }, i) => {
      const swatch = el("i");
      swatch.style.background = COLORS[i % COLORS.length];
      const v = last[key];
      return el("span", { dataset: { series: key } }, swatch,
        `${label}: ${typeof v === "number" ? +v.toFixed(2) + this.unit : "–"}`);
    }));
  }
}
