/**
 * Starts the kernel for one Jupyter connection file: what `controlnet-ts kernel run --connection-file F` (the
 * kernelspec's argv) ends up calling.
 */
import path from "node:path";
import { readConnectionFile } from "./channels.js";
import { cellGlobals } from "./globals.js";
import { Kernel } from "./kernel.js";
import { log } from "./log.js";
import { ensureDeclarations, installRuntimeResolution, readPackage, virtualTypeFiles } from "./resolve.js";
import { addVirtualFiles, routeTslabDisplay, TslabEngine } from "./tslab-engine.js";

export async function runKernel(connectionFile: string): Promise<Kernel> {
  const connection = readConnectionFile(path.resolve(connectionFile));
  const pkg = readPackage();
  installRuntimeResolution(pkg);
  const cwd = process.cwd();
  // `__dirname` / `__filename` type-check in cells (Node's types declare them) and were ReferenceErrors: the
  // notebook's folder (Jupyter starts a kernel there) and, where the server names it (JPY_SESSION_NAME), its file
  const session = process.env.JPY_SESSION_NAME;
  Object.assign(globalThis, { __dirname: cwd, ...(session ? { __filename: path.join(cwd, path.basename(session)) } : {}) });
  const exit = keepKernelOnExit();
  const graceEnv = Number(process.env.CONTROLNET_TS_INTERRUPT_GRACE_MS);
  const kernel = new Kernel({
    connection,
    implementation: { name: pkg.name, version: pkg.version },
    language: { engine: "tslab", version: TslabEngine.languageVersion() },
    interruptGraceMs: Number.isFinite(graceEnv) && graceEnv > 0 ? graceEnv : undefined,
    engine: async () => {
      const t0 = Date.now();
      addVirtualFiles(virtualTypeFiles(pkg, cwd, await ensureDeclarations(pkg)));
      const engine = new TslabEngine({ rootDir: cwd, globals: cellGlobals });
      log(`engine ${engine.info.name} (TypeScript ${engine.info.languageVersion}) ready in ${Date.now() - t0} ms`);
      return engine;
    },
    onShutdown: () => {
      // Timers or sockets a cell left open must not keep a shut-down kernel alive.
      setTimeout(() => exit(0), 50).unref();
    },
  });
  routeTslabDisplay((content, update) => kernel.tslabDisplay(content, update));
  await kernel.start();
  watchParent(kernel);
  return kernel;
}

/**
 * process.exit() in a cell (a script's `main().catch(() => process.exit(1))` pasted in) ended the kernel in the middle
 * of its messages: no reply, every variable gone, and zeromq's native teardown aborting the process. As IPython treats
 * sys.exit() in a cell: an error in that cell, the kernel and its state stay. The kernel itself exits through the
 * original, returned here.
 */
function keepKernelOnExit(): (code?: number) => never {
  const exit = process.exit.bind(process) as (code?: number) => never;
  process.exit = ((code?: number | string | null) => {
    const e = new Error(`process.exit(${code ?? ""}) was called; the kernel keeps running, with the notebook's state (restart the kernel to end it)`);
    e.name = "ProcessExit";
    throw e;
  }) as typeof process.exit;
  return exit;
}

/**
 * Jupyter passes its own pid as JPY_PARENT_PID; like ipykernel we end when that process is gone, so a server that
 * was killed does not leave orphaned kernels holding memory.
 */
function watchParent(kernel: Kernel): void {
  const ppid = Number(process.env.JPY_PARENT_PID);
  if (!Number.isInteger(ppid) || ppid <= 1) return;
  const timer = setInterval(() => {
    try {
      process.kill(ppid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ESRCH") return;
      log(`parent process ${ppid} is gone: shutting down`);
      clearInterval(timer);
      void kernel.shutdown(false);
    }
  }, 2000);
  timer.unref();
}
