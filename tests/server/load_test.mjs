// Load test on loopback: 64 concurrent clients send 500 requests to tinyllm-server, a mix of
// well-formed completions and chat completions (streamed and not), malformed requests, and
// streams the client abandons mid-way. A small queue bound makes the server answer 503 under the
// burst; clients retry those, as OpenAI clients do. Checks:
//   - every well-formed request is answered with exactly the text, finish reason and usage that
//     the same request got alone before the load (greedy and seeded sampling are deterministic);
//   - every malformed request gets its status and an OpenAI-style error body;
//   - afterwards the server is healthy, no KV block is held, the engine audits are clean, the
//     abandoned streams were cancelled, and it logged one line per request;
//   - on a second, slowed-down server: a non-streamed request whose client hangs up while it runs
//     is cancelled and its KV blocks are freed.
// Needs only Node (no npm packages): global fetch, node:http and node:net.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';

import { getJson, settledHealth, startServer, stories260K } from './harness.mjs';

const CLIENTS = 64;
const REQUESTS = 500;
const TIME_LIMIT_MS = 120000;
const t0 = Date.now();

const data = stories260K();
const args = ['--synthetic', '-t', '2', '--kv-mib', '1', '--parallel', '4', '--max-queue', '8', '--http-threads', '128'];
if (data) args.unshift('-m', data.model, '-z', data.tok);
else console.log('note: stories260K not found; the load test serves the synthetic model only');
const server = await startServer(args);
const MODELS = data ? ['stories260K', 'default'] : ['default'];

let httpRequests = 0;      // requests other than GETs, whose log lines the server must write
let uncertainRequests = 0; // requests cut off while the client was still sending them
let retries503 = 0;

function fail(message) {
  console.log(`FAIL ${message}`);
  console.log('--- server log (last 40 lines) ---');
  console.log(server.log.slice(-40).join('\n'));
  server.stop().then(() => process.exit(1));
  throw new Error(message);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// POST a JSON body (a string is sent as is); returns status and parsed JSON. Non-streamed.
async function post(path, body) {
  ++httpRequests;
  const r = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* checked by the caller */ }
  return { status: r.status, json, text };
}

// Reads an SSE response into the concatenated text, finish reason and usage.
async function postStream(path, body) {
  ++httpRequests;
  const r = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (r.status !== 200) return { status: r.status, json: await r.json() };
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const raw = await r.text();
  const events = raw.split('\n\n').filter((e) => e.length > 0);
  assert.equal(events.at(-1), 'data: [DONE]', 'the stream ends with [DONE]');
  let text = '';
  let finish = null;
  let usage = null;
  for (const e of events.slice(0, -1)) {
    assert.ok(e.startsWith('data: '), e);
    const chunk = JSON.parse(e.slice(6));
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += path.includes('chat') ? (c.delta.content ?? '') : c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { status: 200, text, finish, usage };
}

function resultOf(path, r) {
  const c = r.json.choices[0];
  return { text: path.includes('chat') ? c.message.content : c.text, finish: c.finish_reason, usage: r.json.usage };
}

// ---- the well-formed requests, and what each gives when it runs alone ----
const PROMPTS = ['Once upon a time', 'The little dog', 'Tom and Sue went to the park. They', 'One day'];
const specs = [];
for (const model of MODELS) {
  PROMPTS.forEach((prompt, i) => {
    specs.push({ path: '/v1/completions', body: { model, prompt, max_tokens: 16 + 16 * i, temperature: 0 } });
    specs.push({ path: '/v1/completions', body: { model, prompt, max_tokens: 40, temperature: 0.8, seed: 100 + i } });
  });
  // Long enough that a few at once outgrow the small KV budget: the engine preempts and recomputes.
  specs.push({ path: '/v1/completions', body: { model, prompt: 'Once upon a time', max_tokens: 200, temperature: 0 } });
  specs.push({ path: '/v1/chat/completions',
               body: { model, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 48, temperature: 0 } });
  specs.push({ path: '/v1/chat/completions',
               body: { model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }],
                       max_tokens: 32, temperature: 0.7, top_k: 20, seed: 5 } });
}
if (data) specs.push({ path: '/v1/completions', body: { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 60, temperature: 0, stop: ['Lily', 'park'] } });

for (const spec of specs) {
  const r = await post(spec.path, spec.body);
  if (r.status !== 200) fail(`reference ${JSON.stringify(spec.body)}: ${r.status} ${r.text}`);
  spec.expected = resultOf(spec.path, r);
}

// ---- the malformed requests: body and the status, param or code they must get ----
const m0 = MODELS[0];
const malformed = [
  { body: '{"model": "default", "prompt": ', status: 400 },
  { body: '[1, 2, 3]', status: 400 },
  { body: { model: m0, prompt: 5 }, status: 400, param: 'prompt' },
  { body: { model: m0 }, status: 400, param: 'prompt' },
  { body: { model: m0, prompt: 'x', max_tokens: 'ten' }, status: 400, param: 'max_tokens' },
  { body: { model: m0, prompt: 'x', n: 200 }, status: 400, param: 'n' },
  { body: { model: m0, prompt: 'x', temperature: -1 }, status: 400, param: 'temperature' },
  { body: { model: m0, prompt: 'x', stop: [1] }, status: 400, param: 'stop' },
  { body: { model: m0, prompt: 'x', stream: 'yes' }, status: 400, param: 'stream' },
  { body: { model: 'no-such-model', prompt: 'x' }, status: 404, code: 'model_not_found' },
  { body: { model: m0, prompt: 'the cat sat on the mat. '.repeat(150) }, status: 400, code: 'context_length_exceeded' },
  { path: '/v1/chat/completions', body: { model: m0, messages: 'hi' }, status: 400, param: 'messages' },
  { path: '/v1/chat/completions', body: { model: m0, messages: [{ role: 'wizard', content: 'x' }] }, status: 400 },
  { path: '/v1/chat/completions', body: { model: m0, prompt: 'x' }, status: 400, param: 'messages' },
  { path: '/v1/nowhere', body: { model: m0, prompt: 'x' }, status: 404 },
];

async function sendMalformed(k) {
  const m = malformed[k % malformed.length];
  const r = await post(m.path ?? '/v1/completions', m.body);
  const what = `${m.path ?? '/v1/completions'} ${typeof m.body === 'string' ? m.body : JSON.stringify(m.body).slice(0, 80)}`;
  if (r.status !== m.status) fail(`${what}: status ${r.status}, expected ${m.status}: ${r.text.slice(0, 200)}`);
  const e = r.json?.error;
  if (!e || typeof e.message !== 'string' || typeof e.type !== 'string' || !('param' in e) || !('code' in e))
    fail(`${what}: not an OpenAI error body: ${r.text.slice(0, 200)}`);
  if (m.param && e.param !== m.param) fail(`${what}: param ${e.param}, expected ${m.param}`);
  if (m.code && e.code !== m.code) fail(`${what}: code ${e.code}, expected ${m.code}`);
}

// A request line that is not HTTP: the server answers 400 and goes on.
function sendGarbage() {
  ++httpRequests;
  return new Promise((resolve) => {
    const s = net.connect(server.port, '127.0.0.1', () => s.write('NOT AN HTTP REQUEST\r\n\r\n'));
    let got = '';
    s.on('data', (d) => { got += d; });
    s.on('close', () => {
      if (!got.startsWith('HTTP/1.1 400')) fail(`garbage request: got ${JSON.stringify(got.slice(0, 60))}`);
      resolve();
    });
    s.on('error', () => {});
  });
}

// A body cut off half-way: the server cannot answer; it must just carry on.
function sendTruncated() {
  ++uncertainRequests;
  return new Promise((resolve) => {
    const s = net.connect(server.port, '127.0.0.1', () => {
      s.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"model":`);
      setTimeout(() => { s.destroy(); resolve(); }, 5);
    });
    s.on('error', () => resolve());
  });
}

// A stream the client abandons after its first chunk (or before any, every third one).
function sendAbandoned(k) {
  const early = k % 3 === 0;   // may be gone before the server has read the whole request
  if (early) ++uncertainRequests;
  else ++httpRequests;
  const model = MODELS[k % MODELS.length];
  const body = JSON.stringify({ model, prompt: PROMPTS[k % PROMPTS.length], max_tokens: 400, temperature: 0.9, seed: k, stream: true });
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: server.port, path: '/v1/completions', method: 'POST',
                               headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } });
    req.on('response', (res) => {
      if (res.statusCode === 503) { ++retries503; res.resume(); res.on('end', resolve); return; }
      if (res.statusCode !== 200) fail(`abandoned stream: status ${res.statusCode}`);
      res.once('data', () => { req.destroy(); resolve(); });
      res.on('error', () => {});
    });
    req.on('error', () => resolve());
    req.end(body);
    if (early) setTimeout(() => { req.destroy(); resolve(); }, 2);
  });
}

async function sendGood(k) {
  const spec = specs[k % specs.length];
  const streamed = (k >> 1) % 2 === 1;
  for (let attempt = 0; ; ++attempt) {
    const r = streamed ? await postStream(spec.path, spec.body) : await post(spec.path, spec.body);
    if (r.status === 503) {
      if (r.json?.error?.code !== 'queue_full') fail(`503 without the queue_full error: ${JSON.stringify(r.json)}`);
      ++retries503;
      if (Date.now() - t0 > TIME_LIMIT_MS) fail('still refused with 503 at the time limit');
      await sleep(Math.min(800, 25 * 2 ** attempt) * (0.5 + Math.random()));   // backoff, as OpenAI clients do
      continue;
    }
    if (r.status !== 200) fail(`${JSON.stringify(spec.body)}: status ${r.status} ${JSON.stringify(r.json)}`);
    const got = streamed ? r : resultOf(spec.path, r);
    const what = `${streamed ? 'streamed' : 'non-streamed'} ${spec.path} ${JSON.stringify(spec.body)}`;
    if (got.text !== spec.expected.text)
      fail(`${what}: text differs from the same request alone:\n  got      ${JSON.stringify(got.text)}\n  expected ${JSON.stringify(spec.expected.text)}`);
    if (got.finish !== spec.expected.finish) fail(`${what}: finish_reason ${got.finish}, expected ${spec.expected.finish}`);
    assert.deepEqual(got.usage, spec.expected.usage, `${what}: usage`);
    return;
  }
}

// ---- the load: REQUESTS jobs, shuffled with a fixed seed, over CLIENTS concurrent clients ----
let seed = 12345;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const jobs = [];
for (let k = 0; k < REQUESTS; ++k) {
  const u = random();
  if (u < 0.68) jobs.push(() => sendGood(k));
  else if (u < 0.82) jobs.push(() => sendMalformed(k));
  else if (u < 0.84) jobs.push(() => (k % 2 ? sendGarbage() : sendTruncated()));
  else jobs.push(() => sendAbandoned(k));
}
let next = 0;
await Promise.all(Array.from({ length: CLIENTS }, async () => {
  while (next < jobs.length) await jobs[next++]();
}));
const loadMs = Date.now() - t0;

// ---- afterwards ----
const health = await settledHealth(server.url);
if (health.status !== 'ok') fail(`health ${JSON.stringify(health)}`);
let cancelled = 0;
for (const m of health.models) {
  if (m.kv_blocks.used !== 0) fail(`model ${m.id} still holds ${m.kv_blocks.used} KV blocks: ${JSON.stringify(m)}`);
  if (m.kv_blocks.free !== m.kv_blocks.total) fail(`model ${m.id}: free != total: ${JSON.stringify(m)}`);
  if (m.kv_audit !== 'ok') fail(`model ${m.id}: audit ${m.kv_audit}`);
  if (m.running || m.waiting || m.in_flight) fail(`model ${m.id} is not idle: ${JSON.stringify(m)}`);
  cancelled += m.requests.cancelled;
}
if (cancelled === 0) fail('no abandoned stream was cancelled');
if (retries503 === 0) fail('the queue bound never answered 503');
await sendGood(0);   // still serving
const models = await getJson(`${server.url}/v1/models`);
assert.equal(models.status, 200);
if (!server.alive()) fail('the server died');
const exit = await server.stop();
if (exit.code !== 0) fail(`server exit ${JSON.stringify(exit)}`);
// Counted after the server stopped: every log line has been written.
const logged = server.log.filter((l) => /^\S+ \S+ \d{3} model=/.test(l) && !l.startsWith('GET ')).length;
const health0 = health.models.map((m) => `${m.id}: ${m.requests.submitted} submitted, ${m.requests.cancelled} cancelled, ` +
                                            `${m.preemptions} preemptions, ${m.steps} steps`).join('; ');
console.log(`${REQUESTS} requests by ${CLIENTS} clients in ${loadMs} ms; ${retries503} answered 503 and retried; ${health0}`);
console.log(`log lines: ${logged} for ${httpRequests} non-GET requests (+ up to ${uncertainRequests} cut off early)`);
if (logged < httpRequests || logged > httpRequests + uncertainRequests)
  fail(`the server logged ${logged} requests, expected ${httpRequests} to ${httpRequests + uncertainRequests}`);
if (Date.now() - t0 > TIME_LIMIT_MS) fail(`took ${Date.now() - t0} ms, over the ${TIME_LIMIT_MS} ms bound`);

// ---- a non-streamed request whose client goes away is cancelled and frees its blocks ----
// A second server whose engine pauses 20 ms after each step: a 400-token request would run at
// least 8 s, so one that ends within 5 s of the client's disconnect was cancelled, not finished.
const slow = await startServer(['--synthetic', '-t', '1', '--step-delay-ms', '20', '--parallel', '2']);
const slowFail = (message) => {
  console.log(`FAIL ${message}`);
  console.log('--- slow server log (last 20 lines) ---');
  console.log(slow.log.slice(-20).join('\n'));
  slow.stop().then(() => process.exit(1));
  throw new Error(message);
};
const slowModel = async () => (await getJson(`${slow.url}/health`)).body.models[0];
const before = await slowModel();
{
  // A request that outlasts the half-second keep-alive writes still parses as one JSON object.
  const r = await fetch(`${slow.url}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 60, temperature: 0 }),
  });
  const text = await r.text();
  if (r.status !== 200 || !/^ +\{/.test(text)) slowFail(`slow non-streamed reply: ${r.status} ${JSON.stringify(text.slice(0, 80))}`);
  const j = JSON.parse(text);
  if (j.usage.completion_tokens < 1 || typeof j.choices[0].text !== 'string') slowFail(`slow reply ${text}`);
}
const abortedAt = await new Promise((resolve) => {
  const body = JSON.stringify({ prompt: 'Once upon a time', max_tokens: 400, temperature: 0 });
  const req = http.request({ host: '127.0.0.1', port: slow.port, path: '/v1/completions', method: 'POST',
                             headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } });
  req.on('response', async (res) => {
    if (res.statusCode !== 200) slowFail(`abandoned non-streamed request: status ${res.statusCode}`);
    res.on('error', () => {});
    // Wait until it runs and holds KV blocks, then hang up.
    for (const deadline = Date.now() + 5000; ;) {
      const m = await slowModel();
      if (m.running === 1 && m.kv_blocks.used > 0) break;
      if (Date.now() > deadline) slowFail(`the request never ran: ${JSON.stringify(m)}`);
      await sleep(20);
    }
    req.destroy();
    resolve(Date.now());
  });
  req.on('error', () => {});
  req.end(body);
});
const after = (await settledHealth(slow.url, 5000)).models[0];
const settleMs = Date.now() - abortedAt;
if (after.in_flight || after.running) slowFail(`still running ${settleMs} ms after the client left: ${JSON.stringify(after)}`);
if (after.kv_blocks.used !== 0 || after.kv_blocks.free !== after.kv_blocks.total || after.kv_audit !== 'ok')
  slowFail(`blocks not freed: ${JSON.stringify(after)}`);
if (after.requests.cancelled !== before.requests.cancelled + 1) slowFail(`not cancelled: ${JSON.stringify(after)}`);
const slowExit = await slow.stop();
if (!slow.log.some((l) => l.startsWith('POST /v1/completions 200') && l.includes('client disconnected: cancelled')) ||
    slowExit.code !== 0)
  slowFail(`no "client disconnected: cancelled" log line, or exit ${JSON.stringify(slowExit)}`);
console.log(`abandoned non-streamed request cancelled and its blocks freed ${settleMs} ms after the client left`);
console.log('load test passed');
