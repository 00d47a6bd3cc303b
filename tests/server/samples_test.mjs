// n > 1 with the openai npm client, on stories260K:
//   - n = 4 gives 4 choices (index 0..3); choice i equals a request with n = 1 and seed + i, as
//     completions and chat, streamed (chunks carry their choice's index) and not; usage counts
//     the prompt once and every choice's tokens;
//   - the samples share the prompt's KV blocks: on a slowed server, /health shows the prompt's
//     full blocks held 4 times (kv_blocks.shared, references) and far fewer blocks used than four
//     separate requests hold, and /metrics the same gauges; nothing is held afterwards;
//   - draft_tokens (speculative decoding) leaves the text as it is and shows in /health and /metrics.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { getJson, loadOpenAI, runChecks, settledHealth, skip, startServer, stories260K } from './harness.mjs';

const { OpenAI } = await loadOpenAI();
const data = stories260K();
if (!data) skip('stories260K.bin / tok512.bin not found under ../shared/testdata/llama2c');

const MODEL = 'stories260K';
const PROMPT = 'Once upon a time, there was a little girl named Lily.';
const server = await startServer(['-m', data.model, '-z', data.tok, '-t', '2', '--kv-mib', '16']);
const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120000 });

async function streamedChoices(create, params, n) {
  const stream = await create({ ...params, stream: true, stream_options: { include_usage: true } });
  const texts = Array(n).fill(''), finish = Array(n).fill(null);
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      assert.ok(c.index >= 0 && c.index < n, `index ${c.index}`);
      assert.equal(finish[c.index], null, 'no chunk of a choice after its finish_reason');
      texts[c.index] += c.text ?? c.delta?.content ?? '';
      finish[c.index] = c.finish_reason ?? null;
    }
  }
  assert.ok(finish.every((f) => f === 'stop' || f === 'length'), JSON.stringify(finish));
  return { texts, usage };
}

let n = await runChecks(server, [
  ['completions n = 4: choice i equals n = 1 with seed + i, streamed and not', async () => {
    const params = { model: MODEL, prompt: PROMPT, max_tokens: 40, temperature: 1.0, seed: 500 };
    const r = await client.completions.create({ ...params, n: 4 });
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2, 3]);
    let generated = 0;
    for (let i = 0; i < 4; ++i) {
      const solo = await client.completions.create({ ...params, seed: 500 + i });
      assert.equal(r.choices[i].text, solo.choices[0].text, `choice ${i}`);
      assert.equal(r.choices[i].finish_reason, solo.choices[0].finish_reason);
      assert.equal(r.usage.prompt_tokens, solo.usage.prompt_tokens);
      generated += solo.usage.completion_tokens;
    }
    assert.equal(r.usage.completion_tokens, generated);
    assert.ok(new Set(r.choices.map((c) => c.text)).size > 1, 'the samples differ');
    const s = await streamedChoices((p) => client.completions.create(p), { ...params, n: 4 }, 4);
    assert.deepEqual(s.texts, r.choices.map((c) => c.text));
    assert.deepEqual(s.usage, r.usage);
  }],
  ['chat n = 3 with logprobs: each choice as its solo request', async () => {
    const params = { model: MODEL, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 20,
                     temperature: 0.9, seed: 77, logprobs: true, top_logprobs: 2 };
    const r = await client.chat.completions.create({ ...params, n: 3 });
    assert.equal(r.choices.length, 3);
    for (let i = 0; i < 3; ++i) {
      const solo = await client.chat.completions.create({ ...params, seed: 77 + i });
      assert.equal(r.choices[i].message.content, solo.choices[0].message.content);
      assert.deepEqual(r.choices[i].logprobs.content.map((c) => c.logprob), solo.choices[0].logprobs.content.map((c) => c.logprob));
    }
    const s = await streamedChoices((p) => client.chat.completions.create(p), { ...params, n: 3 }, 3);
    assert.deepEqual(s.texts, r.choices.map((c) => c.message.content));
  }],
  ['draft_tokens: speculative decoding gives the same text, greedy and seeded; /health and /metrics count drafts', async () => {
    const base = { model: MODEL, prompt: 'Lily and Ben were friends. Lily and Ben', max_tokens: 120 };
    for (const extra of [{ temperature: 0 }, { temperature: 0.8, seed: 9 }]) {
      const plain = await client.completions.create({ ...base, ...extra, draft_tokens: 0 });
      const spec = await client.completions.create({ ...base, ...extra, draft_tokens: 6 });
      assert.equal(spec.choices[0].text, plain.choices[0].text, JSON.stringify(extra));
      assert.equal(spec.usage.completion_tokens, plain.usage.completion_tokens);
    }
    const drafts = (await settledHealth(server.url)).models[0].draft_tokens;
    console.log(`     drafts: ${JSON.stringify(drafts)}`);
    assert.ok(drafts.drafted > 0 && drafts.accepted > 0 && drafts.accepted <= drafts.drafted);
    const text = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(text, new RegExp(`tinyllm_draft_tokens_total\\{model="${MODEL}"\\} ${drafts.drafted}\\n`));
    assert.match(text, new RegExp(`tinyllm_draft_tokens_accepted_total\\{model="${MODEL}"\\} ${drafts.accepted}\\n`));
    for (const bad of [-1, 33, 'many'])
      await assert.rejects(client.completions.create({ ...base, max_tokens: 2, draft_tokens: bad }),
        (e) => e.status === 400 && e.param === 'draft_tokens');
  }],
  ['bad n: 400', async () => {
    for (const bad of [0, 129, 1.5, 'two'])
      await assert.rejects(client.completions.create({ model: MODEL, prompt: 'x', max_tokens: 2, n: bad }),
        (e) => e.status === 400 && e.param === 'n');
  }],
]);
await server.stop();

// Sharing, seen from /health and /metrics while a slowed request runs.
const slow = await startServer(['-m', data.model, '-z', data.tok, '-t', '1', '--kv-mib', '16', '--step-delay-ms', '40']);
n += await runChecks(slow, [
  ['n = 4 holds the prompt\'s blocks once: /health and /metrics show them shared', async () => {
    const longPrompt = Array(12).fill('Lily and Ben went to the park to play with a big red ball.').join(' ');
    const slowClient = new OpenAI({ baseURL: `${slow.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120000 });
    const running = slowClient.completions.create({ model: MODEL, prompt: longPrompt, max_tokens: 40, temperature: 1, seed: 3, n: 4 });
    let seen = null, metricsShared = 0;
    for (let t = Date.now(); Date.now() - t < 20000;) {
      const m = (await getJson(`${slow.url}/health`)).body.models[0];
      if (m.running === 4) {
        seen = m.kv_blocks;
        const text = await (await fetch(`${slow.url}/metrics`)).text();
        metricsShared = Number(/tinyllm_kv_blocks_shared\{model="stories260K"\} (\d+)/.exec(text)[1]);
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const r = await running;
    assert.ok(seen, 'never saw the 4 samples running');
    const promptBlocks = Math.floor(r.usage.prompt_tokens / 16);
    console.log(`     prompt ${r.usage.prompt_tokens} tokens; while 4 samples ran: ${JSON.stringify(seen)}`);
    assert.ok(promptBlocks >= 8);
    assert.ok(seen.shared >= promptBlocks, `shared ${seen.shared} < ${promptBlocks}`);
    assert.ok(seen.references >= seen.used + 3 * promptBlocks);
    // four separate requests would hold 4 x (prompt + 1) blocks at least
    assert.ok(seen.used < 2 * (promptBlocks + 1), `used ${seen.used}`);
    assert.ok(metricsShared >= promptBlocks);
    const after = (await settledHealth(slow.url)).models[0].kv_blocks;
    assert.equal(after.used, 0);
    assert.equal(after.shared, 0);
  }],
]);
await slow.stop();

// --draft-model: the model drafting for itself (the same file) keeps every greedy draft and gives
// the text of plain decoding; a draft model with another vocabulary stops the server at start.
const drafted = await startServer(['-m', data.model, '-z', data.tok, '-t', '2', '--kv-mib', '16', '--draft-model', data.model]);
n += await runChecks(drafted, [
  ['--draft-model: the same text, every greedy draft kept', async () => {
    const dc = new OpenAI({ baseURL: `${drafted.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120000 });
    const base = { model: MODEL, prompt: 'Lily and Ben were friends.', max_tokens: 100, temperature: 0 };
    const plain = await dc.completions.create({ ...base, draft_tokens: 0 });
    const spec = await dc.completions.create({ ...base, draft_tokens: 5 });
    assert.equal(spec.choices[0].text, plain.choices[0].text);
    const drafts = (await settledHealth(drafted.url)).models[0].draft_tokens;
    console.log(`     self-drafting: ${JSON.stringify(drafts)}`);
    assert.ok(drafts.drafted > 50, `drafted ${drafts.drafted}`);
    assert.equal(drafts.accepted, drafts.drafted);
  }],
]);
await drafted.stop();
const otherVocab = path.join(process.env.TINYLLM_TESTDATA_DIR || '', 'arch', 'gemma.gguf');
if (existsSync(otherVocab))
  await assert.rejects(startServer(['-m', data.model, '-z', data.tok, '--draft-model', otherVocab]),
    (e) => /the server exited/.test(e.message) && /draft model/.test(e.message));
console.log(`samples: all ${n} checks passed`);
