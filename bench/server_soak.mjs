// Soak benchmark for tinyllm-server (a benchmark, not a test): N concurrent clients for a while,
// with streamed, non-streamed and chat requests, streams cancelled mid-way, malformed bodies,
// over-long prompts and over-large max_tokens mixed. Reports requests served, errors by kind,
// p50/p99 latency and time to first token, the server's resident memory at the start and the end
// (and its peak) after a warm-up under the same load, and the KV audit once the load stops. Exits 1 when a request got an unexpected
// answer, a KV block is still held at the end, the audit fails, or memory grew more than --rss-bound-mib.
//
//   node bench/server_soak.mjs --server build/examples/tinyllm-server [--minutes 10] [--clients 64]
//        [--rss-bound-mib 64] [-- SERVER ARGS...]
// Without server arguments it serves the built-in stories260K and the synthetic model.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';

const argv = process.argv.slice(2);
const opt = { server: 'build/examples/tinyllm-server', minutes: 10, clients: 64, rssBoundMib: 64 };
const serverArgs = [];
for (let i = 0; i < argv.length; ++i) {
  const a = argv[i];
  if (a === '--') { serverArgs.push(...argv.slice(i + 1)); break; }
  const v = argv[++i];
  if (a === '--server') opt.server = v;
  else if (a === '--minutes') opt.minutes = Number(v);
  else if (a === '--clients') opt.clients = Number(v);
  else if (a === '--rss-bound-mib') opt.rssBoundMib = Number(v);
  else { console.error(`unknown option ${a}`); process.exit(2); }
}
if (serverArgs.length === 0) serverArgs.push('--synthetic', '--kv-mib', '16', '--parallel', '8', '--max-queue', '32');

const proc = spawn(opt.server, [...serverArgs, '--host', '127.0.0.1', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
let stderrTail = [];
proc.stderr.setEncoding('utf8');
proc.stderr.on('data', (d) => { stderrTail = stderrTail.concat(d.split('\n')).slice(-20); });
process.on('exit', () => proc.kill('SIGKILL'));
const port = await new Promise((resolve, reject) => {
  let out = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (d) => {
    out += d;
    const m = out.match(/listening on http:\/\/[^:]+:(\d+)/);
    if (m) resolve(Number(m[1]));
  });
  proc.on('exit', (code) => reject(new Error(`the server exited (${code}):\n${stderrTail.join('\n')}`)));
});
const base = `http://127.0.0.1:${port}`;
const health = async () => (await fetch(`${base}/health`)).json();
const models = (await health()).models.map((m) => m.id);
const rssMib = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'))[1]) / 1024;

const PROMPTS = ['Once upon a time', 'The little dog', 'Lily and Ben went to the park.', 'One day, a big bird',
                 'Tom had a red ball. He'];
const counts = {};          // outcome -> count
const latency = [];         // ms, requests answered 200
const firstToken = [];      // ms, streams: time to the first text chunk
const count = (k) => { counts[k] = (counts[k] ?? 0) + 1; };
const rand = (n) => Math.floor(Math.random() * n);

// One request over node:http; resolves with {status, body, ms, ttft}. `abortAfter` chunks: cancel.
function request(path, payload, { stream = false, abortAfter = 0 } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const body = typeof payload === 'string' ? payload : JSON.stringify(payload);
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent: false,
                               headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } });
    req.setTimeout(120000, () => { req.destroy(); resolve({ status: 'timeout', ms: Date.now() - t0 }); });
    req.on('response', (res) => {
      let raw = '', chunks = 0, ttft = null;
      res.setEncoding('utf8');
      res.on('data', (d) => {
        raw += d;
        if (stream && ttft === null && /"(text|content)":"[^"]/.test(d)) ttft = Date.now() - t0;
        if (abortAfter && ++chunks >= abortAfter) { req.destroy(); resolve({ status: 'cancelled', ms: Date.now() - t0 }); }
      });
      res.on('end', () => resolve({ status: res.statusCode, body: raw, ms: Date.now() - t0, ttft }));
      res.on('error', () => {});
    });
    req.on('error', (e) => resolve({ status: abortAfter ? 'cancelled' : `network error ${e.code}`, ms: Date.now() - t0 }));
    req.end(body);
  });
}

async function one() {
  const model = models[rand(models.length)];
  const prompt = PROMPTS[rand(PROMPTS.length)];
  const k = Math.random();
  let r, expect, kind;
  if (k < 0.35) {
    kind = 'stream';
    r = await request('/v1/completions', { model, prompt, max_tokens: 20 + rand(100), stream: true, seed: rand(1e6) }, { stream: true });
    expect = 200;
  } else if (k < 0.6) {
    kind = 'json';
    r = await request('/v1/completions', { model, prompt, max_tokens: 20 + rand(100), seed: rand(1e6) });
    expect = 200;
  } else if (k < 0.75) {
    kind = 'chat';
    const stream = Math.random() < 0.5;
    r = await request('/v1/chat/completions', { model, messages: [{ role: 'user', content: prompt }], max_tokens: 40, stream },
                      { stream });
    expect = 200;
  } else if (k < 0.85) {
    kind = 'cancelled stream';
    r = await request('/v1/completions', { model, prompt, max_tokens: 300, stream: true }, { stream: true, abortAfter: 1 + rand(3) });
    expect = 'cancelled';
  } else if (k < 0.9) {
    kind = 'malformed';
    r = await request('/v1/completions', ['{"model": ', '{"prompt": 5}', '[]', '{"model": "nope", "prompt": "x"}'][rand(4)]);
    expect = [400, 404];
  } else if (k < 0.95) {
    kind = 'over-long prompt';
    r = await request('/v1/completions', { model, prompt: 'once upon a time '.repeat(3000), max_tokens: 4 });
    expect = 400;
  } else {
    kind = 'max_tokens too large';
    r = await request('/v1/completions', { model, prompt, max_tokens: 1 << 24 });
    expect = 400;
  }
  if (r.status === 503) return count(`${kind}: 503 (queue full, retried)`);
  const ok = Array.isArray(expect) ? expect.includes(r.status) : r.status === expect;
  count(`${kind}: ${r.status}${ok ? '' : ' UNEXPECTED'}`);
  if (r.status === 200) {
    latency.push(r.ms);
    if (r.ttft !== null && r.ttft !== undefined) firstToken.push(r.ttft);
  }
}

const pct = (xs, p) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

// Warm up under the full load (a thread and a malloc arena per connection, the prefix cache)
// for a tenth of the time (at least 15 s), then measure.
const warmEnd = Date.now() + Math.max(15000, opt.minutes * 6000);
await Promise.all(Array.from({ length: opt.clients }, async () => { while (Date.now() < warmEnd) await one(); }));
for (const k of Object.keys(counts)) delete counts[k];
latency.length = firstToken.length = 0;
const rssStart = rssMib();
let rssPeak = rssStart;
const t0 = Date.now(), end = t0 + opt.minutes * 60000;
const sampler = setInterval(() => {
  rssPeak = Math.max(rssPeak, rssMib());
  const served = Object.entries(counts).filter(([k]) => k.endsWith(': 200')).reduce((a, [, v]) => a + v, 0);
  console.error(`  ${((Date.now() - t0) / 1000).toFixed(0)} s: ${served} served, RSS ${rssMib().toFixed(1)} MiB`);
}, 30000);
await Promise.all(Array.from({ length: opt.clients }, async () => { while (Date.now() < end) await one(); }));
clearInterval(sampler);
const seconds = (Date.now() - t0) / 1000;

// Let cancellations settle, then read the audit.
let h;
for (let i = 0; i < 100; ++i) {
  h = await health();
  if (h.models.every((m) => !m.running && !m.waiting && !m.in_flight)) break;
  await new Promise((r) => setTimeout(r, 100));
}
const rssEnd = rssMib();
rssPeak = Math.max(rssPeak, rssEnd);
proc.kill('SIGTERM');
const code = await new Promise((r) => proc.on('exit', r));

const total = Object.values(counts).reduce((a, b) => a + b, 0);
const unexpected = Object.entries(counts).filter(([k]) => k.includes('UNEXPECTED'));
const leaks = h.models.filter((m) => m.kv_blocks.used !== 0 || m.kv_audit !== 'ok');
console.log(`tinyllm-server soak: ${opt.clients} clients for ${seconds.toFixed(0)} s, models ${models.join(', ')}`);
console.log(`requests: ${total} (${(total / seconds).toFixed(1)}/s)`);
for (const [k, v] of Object.entries(counts).sort()) console.log(`  ${k}: ${v}`);
console.log(`latency of 200s: p50 ${pct(latency, 50)} ms, p99 ${pct(latency, 99)} ms; ` +
            `time to first token (streams): p50 ${pct(firstToken, 50)} ms, p99 ${pct(firstToken, 99)} ms`);
console.log(`server RSS: ${rssStart.toFixed(1)} MiB at the start, ${rssEnd.toFixed(1)} MiB at the end, ` +
            `peak ${rssPeak.toFixed(1)} MiB (bound: growth under ${opt.rssBoundMib} MiB)`);
for (const m of h.models)
  console.log(`KV at the end, ${m.id}: ${m.kv_blocks.used} used / ${m.kv_blocks.total}; audit: ${m.kv_audit}; ` +
              `requests ${JSON.stringify(m.requests)}`);
console.log(`server exit code after SIGTERM: ${code}; ${stderrTail.filter((l) => l.includes('at exit')).join('; ')}`);
const failed = unexpected.length > 0 || leaks.length > 0 || rssEnd - rssStart > opt.rssBoundMib || code !== 0;
console.log(failed ? 'SOAK FAILED' : 'soak passed');
process.exit(failed ? 1 : 0);
