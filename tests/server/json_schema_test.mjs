// response_format with the openai npm client, on stories260K (a model that knows no JSON): with
// json_schema, for 50 seeds, every reply parses and validates against its schema (nested objects,
// arrays, enums, numbers, booleans, strings with lengths), checked by a validator written here;
// json_object replies parse as objects; an unsupported keyword is a 400 naming it.
import assert from 'node:assert/strict';

import { loadOpenAI, runChecks, skip, startServer, stories260K } from './harness.mjs';

const { OpenAI } = await loadOpenAI();
const data = stories260K();
if (!data) skip('stories260K.bin / tok512.bin not found under ../shared/testdata/llama2c');

const server = await startServer(['-m', data.model, '-z', data.tok, '-t', '2', '--kv-mib', '16']);
const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120000 });
const MODEL = 'stories260K';

const SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 10 },
    age: { type: 'integer' },
    height: { type: 'number' },
    pet: { enum: ['cat', 'dog', 'bird'] },
    happy: { type: 'boolean' },
    friends: { type: 'array', items: { type: 'string', maxLength: 6 }, maxItems: 3 },
    home: {
      type: 'object',
      properties: { town: { type: 'string', maxLength: 8 }, rooms: { type: 'integer' }, garden: { type: ['boolean', 'null'] } },
      required: ['town', 'rooms'],
      additionalProperties: false,
    },
  },
  required: ['name', 'age', 'pet', 'friends', 'home'],
  additionalProperties: false,
};

// The subset of JSON Schema the server supports, validated independently of it.
function validate(schema, v, where = '$') {
  const fail = (why) => { throw new Error(`${where}: ${why} (${JSON.stringify(v)})`); };
  if ('enum' in schema) {
    if (!schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) fail('not in enum');
    return;
  }
  const types = schema.type === undefined ? null : [schema.type].flat();
  const typeOf = (x) => (x === null ? 'null' : Array.isArray(x) ? 'array' : Number.isInteger(x) ? 'integer' : typeof x);
  if (types && !types.some((t) => t === typeOf(v) || (t === 'number' && typeof v === 'number'))) fail(`not ${types}`);
  if (typeOf(v) === 'string') {
    const n = [...v].length;
    if (schema.minLength !== undefined && n < schema.minLength) fail('too short');
    if (schema.maxLength !== undefined && n > schema.maxLength) fail('too long');
  }
  if (typeOf(v) === 'array') {
    if (schema.minItems !== undefined && v.length < schema.minItems) fail('too few items');
    if (schema.maxItems !== undefined && v.length > schema.maxItems) fail('too many items');
    if (schema.items) v.forEach((x, i) => validate(schema.items, x, `${where}[${i}]`));
  }
  if (typeOf(v) === 'object' && schema.properties) {
    for (const r of schema.required ?? []) if (!(r in v)) fail(`missing ${r}`);
    for (const [k, x] of Object.entries(v)) {
      if (!(k in schema.properties)) fail(`unexpected property ${k}`);
      validate(schema.properties[k], x, `${where}.${k}`);
    }
  }
}

await runChecks(server, [
  ['json_schema: 50 seeds, every reply parses and validates (completions and chat)', async () => {
    const response_format = { type: 'json_schema', json_schema: { name: 'person', schema: SCHEMA, strict: true } };
    const seen = new Set();
    for (let seed = 0; seed < 50; ++seed) {
      const chat = seed % 2 === 1;
      const params = { model: MODEL, max_tokens: 400, temperature: 1.0, seed, response_format };
      const r = chat
        ? await client.chat.completions.create({ ...params, messages: [{ role: 'user', content: 'Describe a person.' }] })
        : await client.completions.create({ ...params, prompt: 'Once upon a time' });
      const text = chat ? r.choices[0].message.content : r.choices[0].text;
      assert.equal(r.choices[0].finish_reason, 'stop', `seed ${seed}: ${text}`);
      let doc;
      try { doc = JSON.parse(text); } catch (e) { throw new Error(`seed ${seed}: not JSON: ${e.message}\n${text}`); }
      validate(SCHEMA, doc);
      seen.add(JSON.stringify(doc));
      if (seed === 0) console.log(`     seed 0: ${text.replace(/\s+/g, ' ')}`);
    }
    assert.ok(seen.size > 40, `${seen.size} distinct documents`);
  }],
  ['json_object: a reply that ends is a JSON object, streamed and not', async () => {
    // Any object: its strings have no bound, so a reply may run to max_tokens ("length").
    let complete = 0;
    for (let seed = 0; seed < 8; ++seed) {
      const params = { model: MODEL, prompt: 'The little dog', max_tokens: 300, temperature: 0.8, seed,
                       response_format: { type: 'json_object' } };
      const r = await client.completions.create(params);
      assert.match(r.choices[0].text, /^\s*\{/);
      if (r.choices[0].finish_reason === 'stop') {
        const doc = JSON.parse(r.choices[0].text);
        assert.ok(doc !== null && typeof doc === 'object' && !Array.isArray(doc));
        ++complete;
      }
      const stream = await client.completions.create({ ...params, stream: true });
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
      assert.equal(text, r.choices[0].text);
    }
    assert.ok(complete >= 1, `${complete} of 8 replies ended`);
  }],
  ['unsupported schemas and bad response_format: 400 naming what is wrong', async () => {
    const cases = [
      [{ type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', pattern: '^a' } } }, /'pattern'/],
      [{ type: 'json_schema', json_schema: { name: 'x', schema: { type: 'integer', minimum: 1 } } }, /'minimum'/],
      [{ type: 'json_schema', json_schema: { name: 'x' } }, /schema/],
      [{ type: 'yaml' }, /yaml/],
      ['json', /response_format/],
    ];
    for (const [rf, message] of cases)
      await assert.rejects(client.completions.create({ model: MODEL, prompt: 'x', max_tokens: 5, response_format: rf }),
        (e) => e.status === 400 && e.param === 'response_format' && message.test(e.message));
    const text = await client.completions.create({ model: MODEL, prompt: 'x', max_tokens: 3, response_format: { type: 'text' } });
    assert.equal(text.choices.length, 1);
  }],
]);
await server.stop();
console.log('json_schema: all checks passed');
