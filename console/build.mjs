// Vendors the console's one dependency, uPlot (its own minified build), into
// host/static/console/, which the server compiles in (`include_bytes!`). The
// page's own files need no build: the server compiles them in from src/.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, '../host/static/console');
fs.mkdirSync(out, { recursive: true });
const files = [
  ['node_modules/uplot/dist/uPlot.iife.min.js', 'uPlot.iife.min.js'],
  ['node_modules/uplot/dist/uPlot.min.css', 'uPlot.min.css'],
];
for (const [from, to] of files) {
  fs.copyFileSync(path.join(here, from), path.join(out, to));
}
console.log(`uPlot vendored into ${path.relative(process.cwd(), out)}`);
