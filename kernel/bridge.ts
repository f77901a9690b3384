/**
 * The kernel ↔ library display bridge (the contract in the project's shared contracts): what the kernel installs at
 * `globalThis[Symbol.for("controlnet-ts.kernel")]`. The library must not import kernel/, so it declares its own copy
 * of this shape; this file is the implementation side's statement of it, plus two kernel extensions (`input`,
 * `registerCommTarget`) that are optional for consumers.
 */

export const BRIDGE_SYMBOL = Symbol.for("controlnet-ts.kernel");

export interface DisplayOptions {
  displayId?: string;
  /** Replace the output(s) showing `displayId` instead of adding a new output. */
  update?: boolean;
  metadata?: Record<string, unknown>;
}

export interface Comm {
  readonly id: string;
  readonly target: string;
  send(data: unknown, buffers?: ArrayBufferView[]): void;
  close(data?: unknown): void;
  onMsg(cb: (data: unknown, buffers: Buffer[]) => void): void;
  onClose(cb: (data: unknown) => void): void;
}

export interface KernelBridge {
  display(bundle: Record<string, unknown>, opts?: DisplayOptions): void;
  clearOutput(wait?: boolean): void;
  /** Aborted when the user interrupts the cell this call belongs to. */
  abortSignal(): AbortSignal;
  /** The client's id of the cell this call belongs to (execute_request metadata `cellId`), or null when the client
   *  sends none (nbclient, jupyter console). */
  cellId(): string | null;
  openComm(target: string, data: unknown, opts?: { metadata?: Record<string, unknown>; buffers?: ArrayBufferView[] }): Comm;
  /** Kernel extension: answer comms the frontend opens on `target`. */
  registerCommTarget(target: string, handler: (comm: Comm, data: unknown, buffers: Buffer[]) => void): void;
  /** Kernel extension: ask the frontend for a line of input (stdin channel). Rejects when the frontend disallows it. */
  input(prompt?: string, opts?: { password?: boolean }): Promise<string>;
  /** Kernel extension: run `cb` (awaited) when the cell this call belongs to has returned, before its reply and
   *  idle; false when no cell is running (the caller does the work itself). */
  beforeIdle(cb: () => unknown): boolean;
  /** Kernel extension: run `cb` (awaited) when the kernel shuts down or restarts, after a running cell stopped. */
  onShutdown(cb: () => unknown): void;
  /** Kernel extension: identifies the implementation. */
  readonly kernel: { name: string; version: string };
}

export function installBridge(bridge: KernelBridge): void {
  Object.defineProperty(globalThis, BRIDGE_SYMBOL, { value: bridge, configurable: true, enumerable: false, writable: false });
}

export function uninstallBridge(): void {
  delete (globalThis as Record<PropertyKey, unknown>)[BRIDGE_SYMBOL];
}
