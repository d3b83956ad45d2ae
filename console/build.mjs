// Builds the console into host/static/console/, which the server compiles in
// (`include_bytes!`): the page's own files as written (no bundler: one
// dependency, uPlot, shipped as its own minified build), and uPlot's.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, '../host/static/console');
fs.mkdirSync(out, { recursive: true });
const files = [
  ['src/index.html', 'index.html'],
  ['src/console.js', 'console.js'],
  ['src/console.css', 'console.css'],
  ['node_modules/uplot/dist/uPlot.iife.min.js', 'uPlot.iife.min.js'],
  ['node_modules/uplot/dist/uPlot.min.css', 'uPlot.min.css'],
];
for (const [from, to] of files) {
  fs.copyFileSync(path.join(here, from), path.join(out, to));
}
console.log(`console built into ${path.relative(process.cwd(), out)}`);
