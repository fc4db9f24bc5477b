// Copies the dashboard's browser libraries from node_modules into static/vendor/.
// Run by `npm --prefix webapi ci` (the "postinstall" script); node only, no shell tools.
"use strict";
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const modules = path.join(root, "node_modules");
const vendor = path.join(root, "static", "vendor");

const files = [
  ["leaflet/dist/leaflet.js", "leaflet/leaflet.js"],
  ["leaflet/dist/leaflet.css", "leaflet/leaflet.css"],
  ["leaflet/dist/images/marker-icon.png", "leaflet/images/marker-icon.png"],
  ["leaflet/dist/images/marker-icon-2x.png", "leaflet/images/marker-icon-2x.png"],
  ["leaflet/dist/images/marker-shadow.png", "leaflet/images/marker-shadow.png"],
  ["leaflet/dist/images/layers.png", "leaflet/images/layers.png"],
  ["leaflet/dist/images/layers-2x.png", "leaflet/images/layers-2x.png"],
  ["leaflet.heat/dist/leaflet-heat.js", "leaflet-heat/leaflet-heat.js"],
  ["chart.js/dist/chart.umd.js", "chartjs/chart.umd.js"],
  ["leaflet/LICENSE", "leaflet/LICENSE"],
  ["chart.js/LICENSE.md", "chartjs/LICENSE.md"],
];

for (const [from, to] of files) {
  const src = path.join(modules, from);
  const dst = path.join(vendor, to);
  if (!fs.existsSync(src)) {
    console.error(`copy-vendor: missing ${src}`);
    process.exit(1);
  }
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  fs.copyFileSync(src, dst);
}
console.log(`copy-vendor: ${files.length} files into ${path.relative(process.cwd(), vendor) || "."}`);
