/**
 * Asynchronous signals are held back from the threads that run TensorFlow's kernels (native/signals: the oneDNN in
 * TensorFlow 2.21's wheels corrupts the heap when a signal is handled on a thread inside its JIT'ed GEMM — V8's CPU
 * profiler, a Jupyter interrupt or a child's exit can send one; the addon's header has the evidence). Each op the
 * backend runs goes through `binding.executeOp`; the backend is handed a binding whose executeOp holds signals around
 * the call, and TensorFlow's thread pools, started while its addon loads, are started with them held.
 */
import { loadAddon } from "./addon.js";

interface SignalsAddon {
  hold(): void;
  release(): void;
}

export interface SignalGuard {
  /** Runs `load` (the addon that starts TensorFlow's threads) with signals held, so those threads keep them held. */
  whileLoading<T>(load: () => T): T;
  /** The binding as the backend should see it: executeOp holds signals while TensorFlow runs the op. */
  guard<B extends { executeOp: (...args: never[]) => unknown }>(binding: B): B;
  /** One line for describeEngine. */
  status: string;
}

/** The guard of the signals addon installed under `nativeDir`, or a pass-through saying why there is none. */
export function signalGuard(nativeDir: string): SignalGuard {
  const unguarded = (why: string): SignalGuard => ({
    whileLoading: (load) => load(),
    guard: (binding) => binding,
    status: `not held (${why}): a signal during a TensorFlow op may corrupt memory; rebuild with: npm run install-native`,
  });
  const loaded = loadAddon<SignalsAddon>(nativeDir, "signals");
  if ("missing" in loaded) return unguarded(loaded.missing);
  const { addon } = loaded;
  const held = <T>(run: () => T): T => {
    addon.hold();
    try {
      return run();
    } finally {
      addon.release();
    }
  };
  return {
    whileLoading: held,
    guard(binding) {
      // the binding's own properties are read-only (napi_default): the backend gets an object that inherits them
      const executeOp = binding.executeOp;
      return Object.create(binding, {
        executeOp: { value: (...args: never[]) => held(() => executeOp.apply(binding, args)) },
      }) as typeof binding;
    },
    status: "held back from TensorFlow's threads while its ops run",
  };
}
