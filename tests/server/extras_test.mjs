// tinyllm-server's endpoints beside the OpenAI ones:
//   - POST /tokenize and /detokenize as llama-server has them: the ids of a text equal the prompt
//     tokens a completion of the same text counts (usage) and decode back to the text; with_pieces
//     gives each id with its text; bad bodies and ids out of the vocabulary get 400;
//   - GET /metrics in Prometheus' text format: every family has HELP and TYPE, every sample line
//     parses, histograms are cumulative and end at their count, and the counters move by exactly
//     what the requests in between did (tokens from their usage, requests by status).
// Needs only Node.
import assert from 'node:assert/strict';

import { runChecks, settledHealth, startServer, stories260K } from './harness.mjs';

const data = stories260K();
const args = ['-t', '1', '--kv-mib', '8'];
if (data) args.push('-m', data.model, '-z', data.tok);
const server = await startServer(args);
const MODEL = data ? 'stories260K' : 'default';

async function post(path, body) {
  const r = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
                                                  body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: r.status, json: await r.json() };
}

// Prometheus text format: {family: {type, help, samples: [{name, labels, value}]}}.
async function scrape() {
  const r = await fetch(`${server.url}/metrics`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  const families = {};
  let current = null;
  for (const line of (await r.text()).split('\n')) {
    if (line === '') continue;
    let m;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line))) {
      current = families[m[1]] = { help: m[2], samples: [] };
    } else if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$/.exec(line))) {
      assert.equal(m[1], Object.keys(families).at(-1), `TYPE of ${m[1]} follows its HELP`);
      current.type = m[2];
    } else {
      m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*)\})? (-?[0-9.]+(?:e[-+]?[0-9]+)?|\+Inf)$/.exec(line);
      assert.ok(m, `not a sample line: ${line}`);
      assert.ok(current && m[1].startsWith(Object.keys(families).at(-1)), `sample ${m[1]} outside its family`);
      const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
      current.samples.push({ name: m[1], labels, value: Number(m[3]) });
    }
  }
  for (const [name, f] of Object.entries(families)) assert.ok(f.type, `${name} has no TYPE`);
  return families;
}
const value = (fams, name, labels = {}) => {
  const s = Object.values(fams).flatMap((f) => f.samples)
    .find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s ? s.value : 0;
};

await runChecks(server, [
  ['/tokenize gives the prompt tokens a completion counts, /detokenize gives the text back', async () => {
    for (const text of ['Once upon a time', 'Lily and Ben went to the park. They saw a big dog!', ' spaces  and\nlines ']) {
      const t = await post('/tokenize', { content: text, add_special: true });
      assert.equal(t.status, 200, JSON.stringify(t.json));
      assert.ok(t.json.tokens.length > 0 && t.json.tokens.every(Number.isInteger));
      const c = await post('/v1/completions', { model: MODEL, prompt: text, max_tokens: 1 });
      assert.equal(c.json.usage.prompt_tokens, t.json.tokens.length, text);
      const plain = await post('/tokenize', { content: text });
      assert.deepEqual(plain.json.tokens, t.json.tokens.slice(t.json.tokens.length - plain.json.tokens.length));
      const d = await post('/detokenize', { tokens: plain.json.tokens });
      assert.equal(d.status, 200);
      assert.equal(d.json.content.trimStart(), text.trimStart(), 'round trip');
      // a completion of the ids gives the same prompt tokens as the text
      const byIds = await post('/v1/completions', { model: MODEL, prompt: t.json.tokens, max_tokens: 1 });
      assert.equal(byIds.json.usage.prompt_tokens, t.json.tokens.length);
    }
  }],
  ['/tokenize with_pieces: each id with its text; the pieces make the text', async () => {
    const text = 'The cat sat on the mat.';
    const plain = await post('/tokenize', { content: text });
    const t = await post('/tokenize', { content: text, with_pieces: true, model: MODEL });
    assert.equal(t.status, 200);
    assert.deepEqual(t.json.tokens.map((x) => x.id), plain.json.tokens);
    const joined = t.json.tokens.map((x) => (typeof x.piece === 'string' ? x.piece : Buffer.from(x.piece).toString('latin1'))).join('');
    assert.equal(joined.trimStart(), text);
  }],
  ['bad /tokenize and /detokenize bodies: 400 naming the field', async () => {
    for (const [path, body, param] of [['/tokenize', {}, 'content'], ['/tokenize', { content: 5 }, 'content'],
                                       ['/tokenize', { content: 'x', add_special: 'yes' }, 'add_special'],
                                       ['/detokenize', { tokens: 'abc' }, 'tokens'], ['/detokenize', { tokens: [1, -1] }, 'tokens'],
                                       ['/detokenize', { tokens: [1, 1e9] }, 'tokens'], ['/detokenize', { tokens: [1.5] }, 'tokens'],
                                       ['/tokenize', '{"content": ', undefined], ['/detokenize', '[1, 2]', undefined]]) {
      const r = await post(path, body);
      assert.equal(r.status, 400, `${path} ${JSON.stringify(body)}`);
      assert.equal(typeof r.json.error.message, 'string');
      if (param) assert.equal(r.json.error.param, param);
    }
    const r = await post('/tokenize', { content: 'x', model: 'nope' });
    assert.equal(r.status, 404);
  }],
  ['/metrics: Prometheus text; counters move by what the requests did', async () => {
    await settledHealth(server.url);
    const before = await scrape();
    const m = { model: MODEL };
    let generated = 0, prompt = 0;
    for (let i = 0; i < 5; ++i) {
      const c = await post('/v1/completions', { model: MODEL, prompt: `Once upon a time ${i}`, max_tokens: 3 + i, temperature: 0 });
      assert.equal(c.status, 200);
      generated += c.json.usage.completion_tokens;
      prompt += c.json.usage.prompt_tokens;
    }
    assert.equal((await post('/v1/completions', { model: MODEL, prompt: 'x', max_tokens: -1 })).status, 400);
    assert.equal((await fetch(`${server.url}/no/such/path`)).status, 404);
    // The snapshot is taken after each engine step: wait for the one after the last request.
    let after;
    for (let t = Date.now(); Date.now() - t < 10000; await new Promise((r) => setTimeout(r, 50))) {
      after = await scrape();
      if (value(after, 'tinyllm_kv_blocks_used', m) === 0 && value(after, 'tinyllm_requests_finished_total', m) -
          value(before, 'tinyllm_requests_finished_total', m) >= 5) break;
    }
    const delta = (name, labels) => value(after, name, labels) - value(before, name, labels);
    assert.equal(delta('tinyllm_generation_tokens_total', m), generated);
    assert.equal(delta('tinyllm_prompt_tokens_total', m), prompt);
    assert.equal(delta('tinyllm_requests_finished_total', m), 5);
    // 5 completions and the settling /health polls at least; the scrape itself counts after it
    assert.ok(delta('tinyllm_requests_total', { status: '200' }) >= 6);
    assert.equal(delta('tinyllm_requests_total', { status: '400' }), 1);
    assert.equal(delta('tinyllm_requests_total', { status: '404' }), 1);
    for (const h of ['tinyllm_time_to_first_token_seconds', 'tinyllm_time_per_output_token_seconds']) {
      assert.equal(after[h].type, 'histogram');
      const buckets = after[h].samples.filter((s) => s.name === `${h}_bucket` && s.labels.model === MODEL);
      assert.ok(buckets.length > 2);
      for (let i = 1; i < buckets.length; ++i) assert.ok(buckets[i].value >= buckets[i - 1].value, 'cumulative');
      assert.equal(buckets.at(-1).labels.le, '+Inf');
      assert.equal(buckets.at(-1).value, value(after, `${h}_count`, m));
      assert.equal(delta(`${h}_count`, m), 5);
      assert.ok(value(after, `${h}_sum`, m) > 0);
    }
    const health = (await (await fetch(`${server.url}/health`)).json()).models.find((x) => x.id === MODEL);
    assert.equal(value(after, 'tinyllm_kv_blocks_total', m), health.kv_blocks.total);
    assert.equal(value(after, 'tinyllm_kv_blocks_used', m), 0);
    assert.equal(value(after, 'tinyllm_requests_waiting', m), 0);
  }],
]);
await server.stop();
console.log('extras: all checks passed');
