#!/usr/bin/env bash
# Copies the part of ../shared/testdata that the CUDA model tests read into device-testdata/
# (ignored by git), small enough to travel with the working tree to a GPU machine (the device
# runner carries at most 64 MiB). device_check.sh points the tests at it (TINYLLM_TESTDATA).
# Left out for size: gemma (GeGLU is in gemma2), gemma3 and llama3rope; their cases report
# them absent.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${1:-../shared/testdata}
dst=device-testdata
rm -rf "$dst"
mkdir -p "$dst/arch" "$dst/llama2c" "$dst/reference"
for m in llama qwen2 qwen3 gemma2; do
  cp "$src/arch/$m.gguf" "$src/arch/$m.header.txt" "$src/arch/$m.logits.f32" "$src/arch/$m.decode.f32" "$dst/arch/"
done
for t in Q8_0 Q4_0 Q4_K_M Q5_K_M Q6_K; do
  cp "$src/arch/llama-$t.gguf" "$src/arch/llama-$t.norepack."{header.txt,logits.f32,decode.f32} "$dst/arch/"
done
cp "$src/llama2c/stories260K.bin" "$src/llama2c/tok512.bin" "$dst/llama2c/"
cp "$src/reference/Once_upon_a_time_n200.txt" "$dst/reference/"
du -sh "$dst"
