// logprobs with the openai npm client, on stories260K (F32 KV cache):
//   - a greedy completion's token_logprobs and top_logprobs equal the log-softmax of the logits
//     tinyllm-logits computes for the same prompt and greedy steps (within 1e-4), and its tokens
//     are the texts /detokenize gives for those ids;
//   - chat's logprobs.content (token, logprob, bytes, top_logprobs) agree with the same check, and
//     their tokens make the reply;
//   - streamed logprobs, chunk by chunk, equal the non-streamed ones for the same seed; sampled
//     tokens' logprobs are at most the top one's; bad values are 400.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { loadOpenAI, runChecks, skip, startServer, stories260K } from './harness.mjs';

const { OpenAI } = await loadOpenAI();
const data = stories260K();
if (!data) skip('stories260K.bin / tok512.bin not found under ../shared/testdata/llama2c');
const logitsBin = process.env.TINYLLM_LOGITS_BIN;
if (!logitsBin || !existsSync(logitsBin)) skip(`tinyllm-logits is not built (${logitsBin || 'TINYLLM_LOGITS_BIN unset'})`);

const server = await startServer(['-m', data.model, '-z', data.tok, '-t', '2', '--kv-mib', '16', '--kv-type', 'f32']);
const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120000 });
const MODEL = 'stories260K';
const VOCAB = 512;

async function post(p, body) {
  const r = await fetch(`${server.url}${p}`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
  return r.json();
}

// Rows of log-softmax (double precision) of tinyllm-logits' output for `ids` and `steps` greedy steps.
function referenceLogprobs(ids, steps) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tinyllm-logprobs-'));
  try {
    const out = path.join(dir, 'out.f32');
    execFileSync(logitsBin, ['-m', data.model, '-z', data.tok, '--ids', ids.join(' '), '--greedy', String(steps), '-o', out, '-t', '1']);
    const buf = readFileSync(out);
    const f = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
    const rows = [];
    for (let r = 0; r < f.length / VOCAB; ++r) {
      const row = Array.from(f.subarray(r * VOCAB, (r + 1) * VOCAB));
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
      rows.push(row.map((x) => x - lse));
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const argmax = (row) => row.reduce((best, x, i) => (x > row[best] ? i : best), 0);
const sortedDesc = (row) => [...row].sort((a, b) => b - a);
const close = (a, b, what) => assert.ok(Math.abs(a - b) < 1e-4, `${what}: ${a} vs ${b}`);

// The reference for a greedy reply to `promptIds` of n tokens: per step the chosen id and the row.
async function greedyReference(promptIds, n) {
  const rows = referenceLogprobs(promptIds, n);
  const steps = [];
  for (let t = 0; t < n; ++t) {
    const row = rows[promptIds.length - 1 + t];
    const id = argmax(row);
    steps.push({ id, row, text: (await post('/detokenize', { tokens: [id] })).content });
  }
  return steps;
}

await runChecks(server, [
  ['completions: greedy token_logprobs and top_logprobs equal log-softmax of tinyllm-logits\' logits', async () => {
    const prompt = 'Once upon a time, there was a little';
    const ids = (await post('/tokenize', { content: prompt, add_special: true })).tokens;
    const n = 16;
    const r = await client.completions.create({ model: MODEL, prompt, max_tokens: n, temperature: 0, logprobs: 5 });
    const lp = r.choices[0].logprobs;
    assert.equal(lp.tokens.length, r.usage.completion_tokens);
    assert.equal(lp.tokens.join(''), r.choices[0].text);
    const ref = await greedyReference(ids, lp.tokens.length);
    let offset = 0;
    for (let t = 0; t < lp.tokens.length; ++t) {
      assert.equal(lp.tokens[t], ref[t].text, `token ${t}`);
      close(lp.token_logprobs[t], ref[t].row[ref[t].id], `token_logprobs[${t}]`);
      const top = Object.values(lp.top_logprobs[t]).sort((a, b) => b - a);
      assert.ok(top.length >= 1 && top.length <= 6, JSON.stringify(lp.top_logprobs[t]));   // 5, and the sampled one
      const want = sortedDesc(ref[t].row);
      for (let k = 0; k < Math.min(top.length, 5); ++k) close(top[k], want[k], `top_logprobs[${t}][${k}]`);
      assert.equal(lp.text_offset[t], offset);
      offset += Buffer.byteLength(lp.tokens[t]);
    }
  }],
  ['chat: logprobs.content agrees with tinyllm-logits and makes the reply', async () => {
    const messages = [{ role: 'user', content: 'Tell me a story about a dog.' }];
    const r = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 10, temperature: 0, logprobs: true,
                                                     top_logprobs: 3 });
    const content = r.choices[0].logprobs.content;
    assert.equal(content.map((c) => c.token).join(''), r.choices[0].message.content);
    // the chat prompt as the server renders it (no template: "user: ...\nassistant:")
    const ids = (await post('/tokenize', { content: 'user: Tell me a story about a dog.\nassistant:', add_special: true })).tokens;
    assert.equal(ids.length, r.usage.prompt_tokens);
    const ref = await greedyReference(ids, content.length);
    for (let t = 0; t < content.length; ++t) {
      const c = content[t];
      assert.equal(c.token, ref[t].text);
      assert.deepEqual(c.bytes, [...Buffer.from(c.token)]);
      close(c.logprob, ref[t].row[ref[t].id], `logprob[${t}]`);
      assert.equal(c.top_logprobs.length, 3);
      const want = sortedDesc(ref[t].row);
      c.top_logprobs.forEach((x, k) => close(x.logprob, want[k], `top_logprobs[${t}][${k}]`));
      assert.equal(c.top_logprobs[0].token, c.token);   // greedy: the top one is the one taken
    }
  }],
  ['streamed logprobs equal the non-streamed ones for the same seed; sampled ones are at most the top one', async () => {
    const params = { model: MODEL, prompt: 'The little dog', max_tokens: 24, temperature: 1.0, seed: 42, logprobs: 3 };
    const whole = await client.completions.create(params);
    const stream = await client.completions.create({ ...params, stream: true });
    const tokens = [], lps = [], offsets = [];
    let text = '';
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      text += c.text;
      if (c.logprobs) {
        tokens.push(...c.logprobs.tokens);
        lps.push(...c.logprobs.token_logprobs);
        offsets.push(...c.logprobs.text_offset);
      }
    }
    assert.equal(text, whole.choices[0].text);
    assert.deepEqual(tokens, whole.choices[0].logprobs.tokens);
    assert.deepEqual(lps, whole.choices[0].logprobs.token_logprobs);
    assert.deepEqual(offsets, whole.choices[0].logprobs.text_offset);
    const wl = whole.choices[0].logprobs;
    for (let t = 0; t < wl.tokens.length; ++t) {
      const top = Math.max(...Object.values(wl.top_logprobs[t]));
      assert.ok(wl.token_logprobs[t] <= top + 1e-6);
      assert.ok(wl.token_logprobs[t] <= 0);
    }
    // chat, streamed: the content entries of the chunks make the streamed reply
    const chatStream = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }],
                                                              max_tokens: 12, seed: 7, logprobs: true, stream: true });
    let reply = '';
    const entries = [];
    for await (const chunk of chatStream) {
      const c = chunk.choices[0];
      if (!c) continue;
      reply += c.delta?.content ?? '';
      if (c.logprobs) entries.push(...c.logprobs.content);
    }
    assert.equal(entries.map((e) => e.token).join(''), reply);
    assert.ok(entries.every((e) => e.top_logprobs.length === 0));
  }],
  ['no logprobs unless asked; bad values are 400', async () => {
    const r = await client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 3 });
    assert.equal(r.choices[0].logprobs, null);
    for (const bad of [{ logprobs: 21 }, { logprobs: -1 }, { logprobs: 'yes' }])
      await assert.rejects(client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 3, ...bad }),
        (e) => e.status === 400 && e.param === 'logprobs');
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], top_logprobs: 2 }),
      (e) => e.status === 400 && e.param === 'top_logprobs');
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], logprobs: true,
                                                         top_logprobs: 50 }),
      (e) => e.status === 400 && e.param === 'top_logprobs');
  }],
]);
await server.stop();
console.log('logprobs: all checks passed');
