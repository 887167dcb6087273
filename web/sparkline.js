/*
 * sparkline.js: a small inline SVG line of a chat's posts per minute over the last minutes.
 *
 * Built with createElementNS (no library, no markup strings): `samples` are {t, v} with t
 * in ms; x is time across the window ending at `now` (or since the oldest sample, while the
 * window is not yet full), y the value scaled to the largest
 * one shown (at least `floor`, so a quiet chat does not look busy). Not here: collecting the
 * samples (wall-legend.js) or colours (CSS, with the chat colour as --chat).
 */

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 120;
const HEIGHT = 30;
const PAD = 2; // keeps the stroke inside the box at the top and bottom

function svgElement(tag, attributes) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, String(value));
  return el;
}

/** The x,y pairs of the samples inside the window, oldest first, in the sparkline's viewBox. */
export function sparklinePoints(samples, now, windowMs, floor = 1) {
  const shown = samples.filter((s) => Number.isFinite(s.v) && s.t >= now - windowMs && s.t <= now);
  const top = Math.max(floor, ...shown.map((s) => s.v));
  // Until the window is full the line spans what there is, so a wall opened a minute ago still reads.
  const span = shown.length > 1 ? Math.max(1, now - shown[0].t) : windowMs;
  return shown.map((s) => {
    const x = WIDTH - ((now - s.t) / span) * WIDTH;
    const y = HEIGHT - PAD - (s.v / top) * (HEIGHT - 2 * PAD);
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  });
}

/** An <svg class="sparkline"> with a filled area and a line through the points (a dot when only one). */
export function buildSparkline(samples, now, windowMs, label) {
  const svg = svgElement("svg", {
    class: "sparkline", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img",
  });
  svg.setAttribute("aria-label", label);
  const points = sparklinePoints(samples, now, windowMs);
  if (!points.length) return svg;
  const line = points.map(([x, y]) => `${x},${y}`).join(" ");
  const first = points[0][0];
  const last = points[points.length - 1][0];
  if (points.length > 1) {
    svg.append(svgElement("polygon", {
      class: "sparkline-area", points: `${first},${HEIGHT} ${line} ${last},${HEIGHT}`,
    }));
  }
  svg.append(svgElement("polyline", { class: "sparkline-line", points: line }));
  const [x, y] = points[points.length - 1];
  svg.append(svgElement("circle", { class: "sparkline-dot", cx: x, cy: y, r: 2.2 }));
  return svg;
}
