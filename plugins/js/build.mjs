// Builds the JavaScript plugins with componentize-js: the four examples and
// the hostile test components, one component each.
//
//   npm run build                 into ../../target/plugins-lang/js/
//   npm run build -- --out DIR    into DIR
//
// componentize-js snapshots the module (wizer) in a WASI sandbox that sees
// the working directory by relative paths only, so this runs from plugins/
// (the examples here and the hostile component in ../testing/js share the
// SDK in lib/) and names every source relative to it.

import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..'); // plugins/
const wit = resolve(root, '../wit/switchyard.wit');

const outFlag = process.argv.indexOf('--out');
const out = resolve(outFlag > 0 ? process.argv[outFlag + 1] : join(root, '../target/plugins-lang/js'));

export const COMPONENTS = [
  { name: 'bid_validator', world: 'bid-validator', source: 'js/examples/bid-validator.js' },
  { name: 'notification_shaper', world: 'notification-shaper', source: 'js/examples/notification-shaper.js' },
  { name: 'event_filter', world: 'event-filter', source: 'js/examples/event-filter.js' },
  { name: 'stream_authorizer', world: 'stream-authorizer', source: 'js/examples/stream-authorizer.js' },
  { name: 'hostile_filter', world: 'event-filter', source: 'testing/js/hostile-filter.js' },
  { name: 'hostile_authorizer', world: 'stream-authorizer', source: 'testing/js/hostile-authorizer.js' },
];

// A plugin has no network: the host refuses HTTP, so leave it out of the
// engine (fewer imports, a smaller component). Clocks, random and stdio stay:
// the host answers them deterministically (the call's time, a seed from the
// call's input, stdout and stderr to the plugin's log).
const DISABLED = ['http', 'fetch-event'];

process.chdir(root);
await mkdir(out, { recursive: true });
for (const c of COMPONENTS) {
  const started = Date.now();
  const { component } = await componentize({
    sourcePath: c.source,
    witPath: relative(root, wit),
    worldName: c.world,
    disableFeatures: DISABLED,
  });
  const file = join(out, `${c.name}.wasm`);
  await writeFile(file, component);
  console.log(`${c.name}.wasm (${c.world}): ${component.length} bytes in ${Date.now() - started} ms`);
}
