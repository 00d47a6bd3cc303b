// The real `openai` npm client (pinned in package.json) against tinyllm-server serving stories260K
// and the embedded synthetic model at once: completions and chat completions, streamed and not;
// the streamed text equals the non-streamed text for the same request and seed.
import assert from 'node:assert/strict';

import { getJson, loadOpenAI, runChecks, settledHealth, startServer, stories260K, skip } from './harness.mjs';

const { OpenAI, version } = await loadOpenAI();
const data = stories260K();
if (!data) skip('stories260K.bin / tok512.bin not found under ../shared/testdata/llama2c');

const server = await startServer(['-m', data.model, '-z', data.tok, '--synthetic', '-t', '2', '--kv-mib', '16']);
const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120000 });
console.log(`openai ${version} against ${server.url}`);

const MODELS = ['stories260K', 'default'];
const PROMPT = 'Once upon a time';
const CHAT = [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Tell me about a cat.' }];

async function completion(params) {
  const r = await client.completions.create(params);
  assert.equal(r.object, 'text_completion');
  assert.equal(r.model, params.model);
  assert.equal(r.choices.length, 1);
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason), r.choices[0].finish_reason);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
  assert.ok(r.usage.completion_tokens <= params.max_tokens);
  return r;
}

async function streamedCompletion(params) {
  const stream = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'text_completion');
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices.length === 0) continue;
    ++chunks;
    assert.equal(finish, null, 'no chunk after the one with finish_reason');
    text += chunk.choices[0].text;
    finish = chunk.choices[0].finish_reason ?? null;
  }
  assert.ok(chunks >= 2, `${chunks} chunks`);
  return { text, finish, usage };
}

async function chat(params) {
  const r = await client.chat.completions.create(params);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  return r;
}

async function streamedChat(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let role = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices.length === 0) continue;
    const d = chunk.choices[0].delta;
    if (d.role) role = d.role;
    text += d.content ?? '';
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  assert.equal(role, 'assistant');
  return { text, finish, usage };
}

const checks = [
  ['GET /v1/models lists both models', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.deepEqual(ids.sort(), [...MODELS].sort());
    const one = await client.models.retrieve('stories260K');
    assert.equal(one.id, 'stories260K');
  }],
  ['stories260K greedy completion is the known story', async () => {
    const r = await completion({ model: 'stories260K', prompt: PROMPT, max_tokens: 30, temperature: 0 });
    // llama2.c's run.c gives this continuation for stories260K at temperature 0.
    assert.match(r.choices[0].text, /^, there was a little girl named Lily\. She loved to play outside/);
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 30);
  }],
];

for (const model of MODELS) {
  checks.push([`${model}: completion, streamed = not streamed (greedy)`, async () => {
    const params = { model, prompt: PROMPT, max_tokens: 48, temperature: 0 };
    const full = await completion(params);
    const s = await streamedCompletion(params);
    assert.equal(s.text, full.choices[0].text);
    assert.equal(s.finish, full.choices[0].finish_reason);
    assert.deepEqual(s.usage, full.usage);
  }]);
  checks.push([`${model}: completion, streamed = not streamed (sampled, same seed)`, async () => {
    const params = { model, prompt: PROMPT, max_tokens: 48, temperature: 0.9, top_p: 0.95, top_k: 40, seed: 1234 };
    const a = await completion(params);
    const b = await completion(params);
    assert.equal(b.choices[0].text, a.choices[0].text, 'same seed, same text');
    const s = await streamedCompletion(params);
    assert.equal(s.text, a.choices[0].text);
    const other = await completion({ ...params, seed: 99 });
    assert.ok(other.choices[0].text.length > 0);
  }]);
  checks.push([`${model}: chat completion, streamed = not streamed`, async () => {
    for (const params of [{ model, messages: CHAT, max_tokens: 40, temperature: 0 },
                          { model, messages: CHAT, max_tokens: 40, temperature: 0.8, min_p: 0.1, seed: 7 }]) {
      const full = await chat(params);
      const s = await streamedChat(params);
      assert.equal(s.text, full.choices[0].message.content);
      assert.equal(s.finish, full.choices[0].finish_reason);
      assert.deepEqual(s.usage, full.usage);
    }
  }]);
}

checks.push(
  ['presence and frequency penalties are applied, streamed = not streamed', async () => {
    const params = { model: 'stories260K', prompt: PROMPT, max_tokens: 60, temperature: 0 };
    const plain = await completion(params);
    const penalised = { ...params, presence_penalty: 0.5, frequency_penalty: 2 };
    const full = await completion(penalised);
    // Greedy stories260K repeats "Lily" and "play"; penalising the generated tokens changes the text.
    assert.notEqual(full.choices[0].text, plain.choices[0].text);
    const s = await streamedCompletion(penalised);
    assert.equal(s.text, full.choices[0].text);
    await assert.rejects(client.completions.create({ ...params, frequency_penalty: 2.5 }),
                         (e) => e.status === 400 && e.param === 'frequency_penalty');
  }],
  ['stop strings end the text before them, streamed and not', async () => {
    const params = { model: 'stories260K', prompt: PROMPT, max_tokens: 60, temperature: 0, stop: ['Lily'] };
    const full = await completion(params);
    assert.equal(full.choices[0].text, ', there was a little girl named ');
    assert.equal(full.choices[0].finish_reason, 'stop');
    const s = await streamedCompletion(params);
    assert.equal(s.text, full.choices[0].text);
    assert.equal(s.finish, 'stop');
    const one = await completion({ ...params, stop: 'girl' });
    assert.equal(one.choices[0].text, ', there was a little ');
  }],
  ['errors come back as OpenAI errors', async () => {
    await assert.rejects(client.completions.create({ model: 'no-such-model', prompt: 'x' }),
      (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found');
    await assert.rejects(client.completions.create({ model: 'default', prompt: 'x', n: 0 }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'n');
    await assert.rejects(client.chat.completions.create({ model: 'default', messages: [{ role: 'user', content: 5 }] }),
      (e) => e.status === 400 && e.param === 'messages[0].content');
    await assert.rejects(client.completions.create({ model: 'stories260K', prompt: 'the cat sat on the mat. '.repeat(200) }),
      (e) => e.status === 400 && e.code === 'context_length_exceeded');
    await assert.rejects(client.completions.create({ model: 'default', prompt: 'x', stream: true, max_tokens: 0 }),
      (e) => e.status === 400 && e.param === 'max_tokens');
  }],
  ['a stream the client aborts is cancelled and frees its blocks', async () => {
    const before = (await getJson(`${server.url}/health`)).body.models.find((m) => m.id === 'default').requests.cancelled;
    const controller = new AbortController();
    const stream = await client.completions.create(
      { model: 'default', prompt: PROMPT, max_tokens: 500, temperature: 0, stream: true },
      { signal: controller.signal });
    let n = 0;
    try {
      for await (const _ of stream) {
        if (++n === 2) {   // chunks already buffered would still be yielded: stop reading too
          controller.abort();
          break;
        }
      }
    } catch (e) {
      assert.equal(e.name, 'AbortError', String(e));
    }
    assert.equal(n, 2);
    const health = await settledHealth(server.url);
    const m = health.models.find((x) => x.id === 'default');
    assert.equal(m.requests.cancelled, before + 1, JSON.stringify(m));
  }],
  ['/health: nothing running, no KV block held, audits clean', async () => {
    const health = await settledHealth(server.url);
    assert.equal(health.status, 'ok');
    for (const m of health.models) {
      assert.equal(m.kv_blocks.used, 0, JSON.stringify(m));
      assert.equal(m.kv_blocks.free, m.kv_blocks.total);
      assert.equal(m.kv_audit, 'ok');
      assert.equal(m.running + m.waiting + m.in_flight, 0);
    }
  }],
);

const n = await runChecks(server, checks);
const exit = await server.stop();
assert.equal(exit.code, 0, `server exit ${JSON.stringify(exit)}`);
const logged = server.log.filter((l) => /^(GET|POST) \/\S* \d{3} /.test(l)).length;
console.log(`${n} checks passed; the server logged ${logged} requests`);
