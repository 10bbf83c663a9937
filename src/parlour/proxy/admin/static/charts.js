// Small hand-written canvas line charts (no dependencies). Exposes window.ParlourCharts.
"use strict";
(function () {
  const GRID = "#2a3441";
  const AXIS = "#8592a3";

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (m * p >= v) return m * p;
    }
    return 10 * p;
  }

  function fmtTick(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k";
    if (v >= 10 || v === 0) return String(Math.round(v));
    return v.toFixed(1);
  }

  class LineChart {
    constructor(canvas, series, capacity) {
      this.canvas = canvas;
      this.series = series; // [{color, label}]
      this.capacity = capacity || 120;
      this.data = series.map(() => []);
    }

    push(values) {
      values.forEach((v, i) => {
        const d = this.data[i];
        d.push(typeof v === "number" && isFinite(v) ? v : null);
        if (d.length > this.capacity) d.shift();
      });
    }

    draw() {
      const c = this.canvas;
      const dpr = window.devicePixelRatio || 1;
      const w = c.clientWidth || 300;
      const h = c.clientHeight || 180;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
      const g = c.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, h);
      const left = 44, right = 8, top = 8, bottom = 18;
      const pw = w - left - right, ph = h - top - bottom;
      let max = 0;
      for (const d of this.data) for (const v of d) if (v !== null && v > max) max = v;
      max = niceMax(max);
      g.font = "11px system-ui, sans-serif";
      g.fillStyle = AXIS;
      g.strokeStyle = GRID;
      g.lineWidth = 1;
      g.textAlign = "right";
      g.textBaseline = "middle";
      for (let i = 0; i <= 4; i++) {
        const y = top + ph - (ph * i) / 4;
        g.beginPath();
        g.moveTo(left, Math.round(y) + 0.5);
        g.lineTo(left + pw, Math.round(y) + 0.5);
        g.stroke();
        g.fillText(fmtTick((max * i) / 4), left - 6, y);
      }
      g.textAlign = "left";
      g.textBaseline = "alphabetic";
      g.fillText("last " + this.capacity + " s", left, h - 3);
      const step = pw / Math.max(1, this.capacity - 1);
      this.data.forEach((d, si) => {
        const color = this.series[si].color;
        const x0 = left + pw - (d.length - 1) * step;
        // area under the first series
        if (si === 0 && d.length > 1) {
          g.beginPath();
          let started = false;
          d.forEach((v, i) => {
            if (v === null) return;
            const x = x0 + i * step, y = top + ph - (v / max) * ph;
            if (!started) { g.moveTo(x, top + ph); g.lineTo(x, y); started = true; } else g.lineTo(x, y);
          });
          if (started) {
            g.lineTo(x0 + (d.length - 1) * step, top + ph);
            g.closePath();
            g.fillStyle = color + "22";
            g.fill();
          }
        }
        g.beginPath();
        g.strokeStyle = color;
        g.lineWidth = 2;
        let pen = false;
        d.forEach((v, i) => {
          if (v === null) { pen = false; return; }
          const x = x0 + i * step, y = top + ph - (v / max) * ph;
          if (pen) g.lineTo(x, y); else { g.moveTo(x, y); pen = true; }
        });
        g.stroke();
      });
    }
  }

  window.ParlourCharts = { LineChart };
})();
