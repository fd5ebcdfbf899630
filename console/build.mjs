// Bundles the console (src/app.js, its CSS and the asciinema player) with esbuild into
// KGATE_CONSOLE_DIST (default ../target/console/dist), which kgate's build.rs embeds.
// No CDN: everything the page loads is in the bundle.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.env.KGATE_CONSOLE_DIST ?? join(here, '../target/console/dist'));
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

await build({
  entryPoints: { app: join(here, 'src/app.js') },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022'],
  outdir: out,
  logLevel: 'info',
  legalComments: 'linked',
});
copyFileSync(join(here, 'src/index.html'), join(out, 'index.html'));
console.log(`console assets in ${out}`);
