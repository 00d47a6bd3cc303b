// Shared by the server tests: start tinyllm-server on a free loopback port, talk to it, stop it.
// Environment (set by CTest, tests/CMakeLists.txt): TINYLLM_SERVER_BIN, TINYLLM_TESTDATA_DIR,
// TINYLLM_NPM_DIR (where tests/server/npm_setup.sh installed the pinned npm packages).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// CTest counts a test that prints this line as skipped (SKIP_REGULAR_EXPRESSION).
export function skip(reason) {
  console.log(`TINYLLM_SKIP: ${reason}`);
  process.exit(0);
}

export function serverBin() {
  const bin = process.env.TINYLLM_SERVER_BIN;
  if (!bin || !existsSync(bin)) skip(`tinyllm-server is not built (${bin || 'TINYLLM_SERVER_BIN unset'})`);
  return bin;
}

// stories260K and its tokenizer, or null when the shared test data is absent.
export function stories260K() {
  const dir = path.join(process.env.TINYLLM_TESTDATA_DIR || '', 'llama2c');
  const model = path.join(dir, 'stories260K.bin');
  const tok = path.join(dir, 'tok512.bin');
  return existsSync(model) && existsSync(tok) ? { model, tok } : null;
}

// The pinned `openai` client from TINYLLM_NPM_DIR/node_modules (never from the repository).
export async function loadOpenAI() {
  const dir = process.env.TINYLLM_NPM_DIR || '';
  if (!existsSync(path.join(dir, 'node_modules', 'openai', 'package.json')))
    skip(`the openai npm package is not installed in ${dir || '(TINYLLM_NPM_DIR unset)'}/node_modules; ` +
         `run tests/server/npm_setup.sh ${dir}`);
  const require = createRequire(path.join(dir, 'package.json'));
  const mod = await import(pathToFileURL(require.resolve('openai')).href);
  const OpenAI = mod.OpenAI ?? mod.default?.OpenAI ?? mod.default;
  const pkg = JSON.parse(readFileSync(path.join(dir, 'node_modules', 'openai', 'package.json'), 'utf8'));
  const version = pkg.version;
  return { OpenAI, version };
}

// Starts the server with `args` on 127.0.0.1 and a port the kernel picks (printed on stdout).
export async function startServer(args) {
  const proc = spawn(serverBin(), [...args, '--host', '127.0.0.1', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  let partial = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {
    const lines = (partial + d).split('\n');
    partial = lines.pop();
    log.push(...lines);
  });
  let exited = null;
  const exit = new Promise((resolve) => proc.on('exit', (code, signal) => { exited = { code, signal }; resolve(exited); }));
  process.on('exit', () => { if (!exited) proc.kill('SIGKILL'); });   // never leave a server behind
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the server did not start in 60 s; stderr:\n${log.join('\n')}`)), 60000);
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on http:\/\/[^:]+:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    exit.then((e) => { clearTimeout(timer); reject(new Error(`the server exited (${JSON.stringify(e)}); stderr:\n${log.join('\n')}`)); });
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    port,
    log,
    alive: () => exited === null,
    async stop() {
      if (exited) return exited;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15000);
      const e = await exit;
      clearTimeout(timer);
      return e;
    },
  };
}

export async function getJson(url) {
  const r = await fetch(url);
  return { status: r.status, body: await r.json() };
}

// Polls GET /health until no model has requests in flight, then returns it.
export async function settledHealth(url, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { body } = await getJson(`${url}/health`);
    const busy = body.models.some((m) => m.running || m.waiting || m.in_flight);
    if (!busy || Date.now() > deadline) return body;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Runs the named checks in order; on the first failure prints the server's log tail and exits 1.
export async function runChecks(server, checks) {
  let n = 0;
  for (const [name, fn] of checks) {
    const t0 = Date.now();
    try {
      await fn();
    } catch (e) {
      console.log(`FAIL ${name}: ${e.stack || e}`);
      console.log('--- server log (last 40 lines) ---');
      console.log(server.log.slice(-40).join('\n'));
      await server.stop();
      process.exit(1);
    }
    ++n;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  }
  return n;
}
