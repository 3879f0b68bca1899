/**
 * A fuzz worker process: runs inputs the parent (fuzz/run.ts) sends over IPC, one at a time, and
 * answers each with its outcome. The parent owns the time and memory limits: it kills this process
 * when an input hangs or grows too big, and reads a crash from the exit signal.
 */
import { execute, warm, classify, type Outcome } from './exec.js';

interface Job {
  id: number;
  target: string;
  dir: string;
}

const send = (m: unknown) => process.send!(m);

process.on('message', (m: Job | { warm: string }) => {
  if ('warm' in m) {
    try {
      warm(m.warm);
      send({ ready: true });
    } catch (err) {
      send({ ready: false, message: (err as Error).stack ?? String(err) });
    }
    return;
  }
  const t0 = performance.now();
  let o: Outcome;
  try {
    o = execute(m.target, m.dir);
  } catch (err) {
    o = classify(err);
  }
  send({ id: m.id, ...o, ms: performance.now() - t0 });
});
process.on('disconnect', () => process.exit(0));
send({ started: true });
