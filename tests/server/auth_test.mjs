// tinyllm-server --api-key: every /v1 route wants "Authorization: Bearer KEY" and answers 401 in
// OpenAI's error shape without it (a wrong key, another scheme, a key that is a prefix of the
// right one); /health stays open; with the key everything works as before. Checked with fetch,
// with curl (where installed) and with the openai npm client (where installed).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { loadOpenAI, runChecks, startServer } from './harness.mjs';

let curl = null;
try { execFileSync('curl', ['--version']); curl = 'curl'; } catch { console.log('note: no curl; its checks are left out'); }
let openai = null;
if (existsSync(path.join(process.env.TINYLLM_NPM_DIR || '', 'node_modules', 'openai', 'package.json'))) openai = await loadOpenAI();
else console.log('note: the openai npm package is not installed; its checks are left out');

const key = 'sk-tinyllm-test-0123456789';
const server = await startServer(['--api-key', key, '-t', '1', '--kv-mib', '8']);

async function call(path, auth, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (auth !== undefined) headers.Authorization = auth;
  const r = await fetch(`${server.url}${path}`, { method: body ? 'POST' : 'GET', headers, body: body && JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: (r.headers.get('content-type') ?? '').startsWith('application/json') ? JSON.parse(text) : text };
}

await runChecks(server, [
  ['no key, a wrong key, a prefix of the key or another scheme: 401 invalid_api_key', async () => {
    for (const auth of [undefined, 'Bearer nope', `Bearer ${key.slice(0, -1)}`, `Bearer ${key}x`, `Basic ${key}`, key]) {
      const r = await call('/v1/models', auth);
      assert.equal(r.status, 401, `Authorization: ${auth}`);
      assert.equal(r.body.error.code, 'invalid_api_key');
      assert.equal(r.body.error.type, 'invalid_request_error');
      assert.match(r.body.error.message, /API key/);
    }
    const r = await call('/v1/completions', undefined, { model: 'default', prompt: 'hi', max_tokens: 2 });
    assert.equal(r.status, 401);
    // the paths outside /v1 too, but /health
    assert.equal((await call('/tokenize', undefined, { content: 'hi' })).status, 401);
    assert.equal((await call('/detokenize', 'Bearer nope', { tokens: [1] })).status, 401);
    assert.equal((await call('/metrics', undefined)).status, 401);
    assert.equal((await call('/metrics', `Bearer ${key}`)).status, 200);
  }],
  ['/health needs no key', async () => {
    assert.equal((await call('/health')).status, 200);
  }],
  ['with the key: models and a completion', async () => {
    const m = await call('/v1/models', `Bearer ${key}`);
    assert.equal(m.status, 200);
    assert.deepEqual(m.body.data.map((x) => x.id), ['default']);
    const c = await call('/v1/completions', `Bearer ${key}`, { model: 'default', prompt: 'Once', max_tokens: 3 });
    assert.equal(c.status, 200, JSON.stringify(c.body));
    assert.equal(c.body.usage.completion_tokens, 3);
  }],
  ['curl: 401 without the key, 200 with it', async () => {
    if (!curl) return;
    const run = (...extra) => {
      const out = execFileSync(curl, ['-s', '-w', '\n%{http_code}', ...extra, '-H', 'Content-Type: application/json',
                                      '-d', '{"model": "default", "prompt": "Once", "max_tokens": 2}', `${server.url}/v1/completions`],
                               { encoding: 'utf8' });
      const lines = out.trimEnd().split('\n');
      return { status: Number(lines.pop()), body: JSON.parse(lines.join('\n')) };
    };
    const denied = run();
    assert.equal(denied.status, 401);
    assert.equal(denied.body.error.code, 'invalid_api_key');
    const ok = run('-H', `Authorization: Bearer ${key}`);
    assert.equal(ok.status, 200);
    assert.equal(ok.body.usage.completion_tokens, 2);
  }],
  ['the openai npm client: AuthenticationError without the key, a completion with it', async () => {
    if (!openai) return console.log('     (the openai npm package is not installed: left out)');
    const wrong = new openai.OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    await assert.rejects(wrong.completions.create({ model: 'default', prompt: 'Once', max_tokens: 2 }),
      (e) => e.status === 401 && e.code === 'invalid_api_key');
    await assert.rejects(wrong.models.list(), (e) => e.status === 401);
    const right = new openai.OpenAI({ baseURL: `${server.url}/v1`, apiKey: key, maxRetries: 0 });
    const c = await right.chat.completions.create({ model: 'default', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 });
    assert.equal(c.usage.completion_tokens, 3);
    const models = [];
    for await (const m of right.models.list()) models.push(m.id);
    assert.deepEqual(models, ['default']);
  }],
]);
await server.stop();
console.log('auth: all checks passed');
