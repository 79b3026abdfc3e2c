// stamp.mjs writes ../dashboard/dist/stamp.txt: the sha256 of the
// dashboard's sources (every file under web/ but node_modules and dot
// files), so that dashboard's Go test can tell, without Node, whether the
// committed build was made from the committed sources. dashboard/stamp.go
// computes the same hash; keep the two in step.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('.', import.meta.url).pathname;

function walk(dir, rel, out) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.') || e.name === 'node_modules') continue;
    const p = rel ? rel + '/' + e.name : e.name;
    if (e.isDirectory()) walk(join(dir, e.name), p, out);
    else if (e.isFile()) out.push(p);
  }
  return out;
}

export function stamp() {
  const files = walk(root, '', []).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const h = createHash('sha256');
  for (const f of files) {
    const sum = createHash('sha256').update(readFileSync(join(root, f))).digest('hex');
    h.update(f + '\n' + sum + '\n');
  }
  return h.digest('hex');
}

writeFileSync(join(root, '..', 'dashboard', 'dist', 'stamp.txt'), stamp() + '\n');
