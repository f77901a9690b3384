/**
 * When an XNNPACK operator cannot be created in the wasm backend — above all when the 4 GiB heap is full (status 6,
 * out of memory) — tfjs prints "XNN status for xnn_… is not successful" and carries on: the kernel's output is
 * whatever its buffer held. A training step would then go on with garbage. We watch for that print (the wasm module
 * binds console.warn when it is created, so the watch is installed before) and turn it into an error at the next
 * check, e.g. at the end of a training step.
 */
const XNN_FAILURE = /^XNN status for (\w+) is not successful\. Got status (\d+)/;
const STATUS: Record<string, string> = { "6": "out of memory: the wasm heap (4 GiB) is full" };

let installed = false;
let first: { op: string; status: string } | null = null;
let count = 0;

/** Wraps console.warn once so XNNPACK failures are recorded (they are still printed). */
export function watchWasmFailures(): void {
  if (installed) return;
  installed = true;
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    const m = typeof args[0] === "string" ? XNN_FAILURE.exec(args[0]) : null;
    if (m) {
      count++;
      first ??= { op: m[1]!, status: m[2]! };
    }
    warn.apply(console, args);
  };
}

/** Throws (and clears the record) if a wasm kernel failed since the last check. `where` names the work, e.g. "step 12". */
export function throwIfWasmKernelFailed(where: string): void {
  if (!first) return;
  const f = first;
  const n = count;
  first = null;
  count = 0;
  const why = STATUS[f.status] ?? `XNNPACK status ${f.status}`;
  throw new Error(
    `${where}: a wasm kernel failed (${f.op}: ${why}${n > 1 ? `; ${n} failures in all` : ""}), so its results are invalid. ` +
      (f.status === "6"
        ? "Lower the memory need: gradient checkpointing, a smaller batch or resolution, attention chunking, 8-bit Adam, optimizer/frozen-weight offload (planMemory suggests a set)."
        : ""),
  );
}
