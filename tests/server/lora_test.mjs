// LoRA adapters in tinyllm-server: adapters given at start (--lora NAME=PATH[:SCALE]) and loaded
// and unloaded over HTTP (--lora-dir), picked by "model" as BASE:NAME or NAME, listed by
// /v1/models; unknown names and bad files are clear 4xx errors. (The adapter's numbers against
// llama.cpp are tests/model/lora_test.cpp's; here: routing, scales, lifetime.)
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { getJson, runChecks, settledHealth, startServer, skip } from './harness.mjs';

const dir = process.env.TINYLLM_TESTDATA_DIR || '';
const model = path.join(dir, 'arch', 'llama.gguf');
const loraDir = path.join(dir, 'lora');
const adapter = path.join(loraDir, 'lora_llama.gguf');
if (!existsSync(model) || !existsSync(adapter)) skip('arch/llama.gguf or lora/lora_llama.gguf not found under ../shared/testdata');

// A model file is not an adapter: the server refuses to start.
await assert.rejects(startServer(['-m', model, '--lora', `bad=${model}`]), /not an adapter file/);

const server = await startServer(['-m', model, '--lora', `lora1=${adapter}`, '--lora', `zero=${adapter}:0`,
                                  '--lora-dir', loraDir, '-t', '2', '--kv-mib', '16']);

async function post(url, body, method = 'POST') {
  const r = await fetch(url, { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}
async function complete(name) {
  const r = await post(`${server.url}/v1/completions`, { model: name, prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.model, name);
  return r.body.choices[0].text;
}
const texts = {};

await runChecks(server, [
  ['/v1/models lists the base model and its adapters', async () => {
    const { status, body } = await getJson(`${server.url}/v1/models`);
    assert.equal(status, 200);
    const ids = body.data.map((m) => m.id);
    assert.deepEqual(ids.sort(), ['llama', 'llama:lora1', 'llama:zero']);
    const a = body.data.find((m) => m.id === 'llama:lora1');
    assert.equal(a.parent, 'llama');
    assert.equal(a.adapter.rank, 8);
    assert.equal(a.adapter.alpha, 16);
    assert.equal((await getJson(`${server.url}/v1/models/llama:zero`)).body.adapter.scale, 0);
  }],
  ['BASE:NAME and NAME pick the adapter; scale 0 is the base model', async () => {
    for (const name of ['llama', 'llama:lora1', 'lora1', 'llama:zero']) texts[name] = await complete(name);
    assert.equal(texts['lora1'], texts['llama:lora1']);
    assert.equal(texts['llama:zero'], texts['llama']);
    assert.notEqual(texts['llama:lora1'], texts['llama']);
  }],
  ['unknown models and adapters are 404', async () => {
    for (const name of ['llama:nope', 'nope', 'other:lora1']) {
      const r = await post(`${server.url}/v1/completions`, { model: name, prompt: 'x', max_tokens: 2 });
      assert.equal(r.status, 404, name);
      assert.equal(r.body.error.code, 'model_not_found');
    }
  }],
  ['an adapter loaded over HTTP serves, then unloads', async () => {
    const r = await post(`${server.url}/v1/adapters`, { name: 'late', path: 'lora_llama.gguf', scale: 1 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.data[0].id, 'llama:late');
    assert.equal(await complete('late'), texts['lora1']);
    const again = await post(`${server.url}/v1/adapters`, { name: 'late', path: 'lora_llama.gguf' });
    assert.equal(again.status, 400);
    assert.match(again.body.error.message, /already loaded/);
    const d = await post(`${server.url}/v1/adapters/llama:late`, {}, 'DELETE');
    assert.equal(d.status, 200);
    assert.equal(d.body.deleted, true);
    const gone = await post(`${server.url}/v1/completions`, { model: 'late', prompt: 'x', max_tokens: 2 });
    assert.equal(gone.status, 404);
    assert.equal((await post(`${server.url}/v1/adapters/late`, {}, 'DELETE')).status, 404);
    assert.deepEqual((await getJson(`${server.url}/v1/adapters`)).body.data.map((m) => m.id).sort(), ['llama:lora1', 'llama:zero']);
  }],
  ['bad adapter loads are 4xx with the reason', async () => {
    const cases = [
      [{ name: 'x', path: '../arch/llama.gguf' }, 400, /file name inside/],
      [{ name: 'x', path: 'llama+lora.header.txt' }, 400, /not loaded/],
      [{ name: 'x', path: 'missing.gguf' }, 400, /not loaded/],
      [{ name: 'a:b', path: 'lora_llama.gguf' }, 400, /adapter names/],
      [{ path: 'lora_llama.gguf' }, 400, /'name' is required/],
      [{ name: 'x', path: 'lora_llama.gguf', scale: 'big' }, 400, /scale/],
      [{ name: 'x', path: 'lora_llama.gguf', model: 'nope' }, 404, /does not exist/],
    ];
    for (const [body, status, message] of cases) {
      const r = await post(`${server.url}/v1/adapters`, body);
      assert.equal(r.status, status, JSON.stringify(body));
      assert.match(r.body.error.message, message);
    }
  }],
  ['nothing left running', async () => {
    const h = await settledHealth(server.url);
    assert.equal(h.status, 'ok');
    assert.equal(h.models[0].kv_audit, 'ok');
  }],
]);
await server.stop();
console.log('lora: all checks passed');
