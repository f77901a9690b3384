/**
 * The kernel's ZeroMQ sockets, bound from a Jupyter connection file: shell and stdin as ROUTER on the main thread;
 * iopub as PUB (iopub.ts), the heartbeat echo (heartbeat.ts) and the control socket (interrupts.ts) in worker
 * threads, so output goes out and they answer while a cell blocks this one.
 *
 * zeromq v6 allows one send in flight per socket, and the protocol needs iopub messages to arrive in the order they
 * were produced (stream text before the result before `idle`), so every socket sends through its own FIFO queue.
 */
import fs from "node:fs";
import * as zmq from "zeromq";
import { startHeartbeat, type Heartbeat } from "./heartbeat.js";
import { startIopub, type IopubSender } from "./iopub.js";
import { log } from "./log.js";

export interface ConnectionInfo {
  transport: "tcp" | "ipc";
  ip: string;
  shell_port: number;
  iopub_port: number;
  stdin_port: number;
  control_port: number;
  hb_port: number;
  key: string;
  signature_scheme: string;
  kernel_name?: string;
}

export function readConnectionFile(file: string): ConnectionInfo {
  const c = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<ConnectionInfo>;
  for (const k of ["shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"] as const) {
    if (typeof c[k] !== "number") throw new Error(`connection file ${file}: ${k} is missing`);
  }
  return {
    transport: c.transport ?? "tcp",
    ip: c.ip ?? "127.0.0.1",
    key: c.key ?? "",
    signature_scheme: c.signature_scheme ?? "hmac-sha256",
    ...c,
  } as ConnectionInfo;
}

export function address(c: ConnectionInfo, port: number): string {
  return c.transport === "ipc" ? `ipc://${c.ip}-${port}` : `tcp://${c.ip}:${port}`;
}

/**
 * One socket's ordered outgoing queue. It is pumped from a macrotask of its own, never from the caller's microtasks: a
 * cell that displays something and is then stopped by an interrupt (interrupts.ts) loses the microtasks queued behind
 * it, and the queue must not be one of them.
 */
class SendQueue {
  // (the main thread's sockets: shell and stdin)
  private readonly queue: Buffer[][] = [];
  private pumping = false;
  private waiters: Array<() => void> = [];
  constructor(private readonly socket: zmq.Writable & zmq.Socket, private readonly name: string) {}

  send(frames: Buffer[]): void {
    this.queue.push(frames);
    if (this.pumping) return;
    this.pumping = true;
    setImmediate(() => void this.pump());
  }

  private async pump(): Promise<void> {
    for (let frames = this.queue.shift(); frames; frames = this.queue.shift()) {
      if (this.socket.closed) continue;
      try {
        await this.socket.send(frames);
      } catch (e) {
        if (!this.socket.closed) log(`${this.name}: send failed: ${(e as Error).message}`);
      }
    }
    this.pumping = false;
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once everything queued so far is sent. */
  drain(): Promise<void> {
    return this.pumping ? new Promise((r) => this.waiters.push(r)) : Promise.resolve();
  }
}

export class Channels {
  readonly shell = new zmq.Router({ linger: 1000 });
  readonly stdin = new zmq.Router({ linger: 1000 });
  private heartbeat: Heartbeat | null = null;
  private iopub: IopubSender | null = null;
  readonly out: Record<"shell" | "stdin" | "iopub", Pick<SendQueue, "send" | "drain">>;

  constructor(readonly info: ConnectionInfo) {
    const iopub = {
      send: (frames: Buffer[]) => this.iopub?.send(frames),
      drain: () => this.iopub?.drain() ?? Promise.resolve(),
    };
    this.out = { shell: new SendQueue(this.shell, "shell"), stdin: new SendQueue(this.stdin, "stdin"), iopub };
  }

  async bind(): Promise<void> {
    const c = this.info;
    await Promise.all([this.shell.bind(address(c, c.shell_port)), this.stdin.bind(address(c, c.stdin_port))]);
    this.iopub = await startIopub(address(c, c.iopub_port), log);
    this.heartbeat = await startHeartbeat(address(c, c.hb_port));
  }

  async close(): Promise<void> {
    await Promise.all(Object.values(this.out).map((q) => q.drain()));
    for (const s of [this.shell, this.stdin]) if (!s.closed) s.close();
    await this.iopub?.close();
    await this.heartbeat?.close();
  }
}
