// The last lines of bench/gpu/run.sh: tessera vs PyTorch, side by side, from the two JSON files.
import { readFileSync } from 'node:fs';
const t = JSON.parse(readFileSync(process.argv[2], 'utf8'));
let p = {};
try {
  p = JSON.parse(readFileSync(process.argv[3], 'utf8'));
} catch {}
console.log(`\n| ${t.device?.name ?? 'GPU'} ${t.date?.slice(0, 10) ?? ''} | tessera | PyTorch ${p.torch ?? '(not run)'} | ratio |`);
console.log('| --- | --- | --- | --- |');
if (t.flash) {
  const sd = p.sdpa_flash;
  console.log(`| flashAttention bf16 T=S=4096 H=32 D=128 causal | ${t.flash.tflops.toFixed(1)} TFLOP/s | ${sd ? sd.tflops.toFixed(1) + ' TFLOP/s (SDPA flash)' : '-'} | ${sd ? (t.flash.tflops / sd.tflops).toFixed(2) + 'x' : '-'} |`);
}
for (const g of t.gptq ?? []) {
  const m = (p.matmul_bf16 ?? []).find((x) => x.M === g.M);
  console.log(`| int4 g128 M=${g.M} N=K=8192 | ${(g.seconds * 1e6).toFixed(1)} us | ${m ? (m.ms * 1e3).toFixed(1) + ' us (bf16 matmul)' : '-'} | ${m ? ((m.ms / 1e3) / g.seconds).toFixed(2) + 'x faster' : '-'} |`);
}
if (t.decode) console.log(`| llama 1.1B-shaped decode (GPTQ int4) | ${t.decode.tokPerS.toFixed(1)} tok/s | - | - |`);
