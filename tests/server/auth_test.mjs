// tinyllm-server --api-key: every /v1 route wants "Authorization: Bearer KEY" and answers 401 in
// OpenAI's error shape without it (a wrong key, another scheme, a key that is a prefix of the
// right one); /health stays open; with the key everything works as before.
import assert from 'node:assert/strict';

import { runChecks, startServer } from './harness.mjs';

const key = 'sk-tinyllm-test-0123456789';
const server = await startServer(['--api-key', key, '-t', '1', '--kv-mib', '8']);

async function call(path, auth, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (auth !== undefined) headers.Authorization = auth;
  const r = await fetch(`${server.url}${path}`, { method: body ? 'POST' : 'GET', headers, body: body && JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
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
]);
await server.stop();
console.log('auth: all checks passed');
