/**
 * A minimal Jupyter client for the kernel tests: starts `bin/controlnet-ts.js kernel run` as a child process with a
 * fresh connection file and talks to it over ZeroMQ (DEALER for shell/control/stdin, SUB for iopub, REQ for hb).
 */
import { spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import * as zmq from "zeromq";
import { decode, encode, newHeader, Signer, type Header, type Message } from "../../kernel/wire.js";
import { tempDir } from "../helpers.js";

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface StartOptions {
  cwd?: string;
  env?: Record<string, string>;
  key?: string;
}

type Channel = "shell" | "control" | "stdin";

export class KernelClient {
  readonly iopubLog: Message[] = [];
  readonly stdinLog: Message[] = [];
  readonly stderrText: string[] = [];
  private readonly replies = new Map<string, Message>();
  private waiters: Array<() => void> = [];
  private readonly session = crypto.randomUUID();
  private readonly sockets: { shell: zmq.Dealer; control: zmq.Dealer; stdin: zmq.Dealer; iopub: zmq.Subscriber };
  private closed = false;
  exitCode: number | null = null;
  /** The signal that ended the process, when one did (exitCode is then null). */
  exitSignal: NodeJS.Signals | null = null;
  readonly exited: Promise<number | null>;

  private constructor(
    readonly proc: ChildProcess,
    readonly connection: Record<string, unknown> & { key: string; ip: string },
    readonly signer: Signer,
    readonly dir: string,
  ) {
    const routingId = `test-${crypto.randomUUID()}`;
    this.sockets = {
      shell: new zmq.Dealer({ routingId, linger: 0 }),
      control: new zmq.Dealer({ routingId, linger: 0 }),
      stdin: new zmq.Dealer({ routingId, linger: 0 }),
      iopub: new zmq.Subscriber({ linger: 0 }),
    };
    this.exited = new Promise((resolve) => proc.on("exit", (code, signal) => {
      this.exitSignal = signal;
      resolve((this.exitCode = code));
    }));
    proc.stderr?.on("data", (d: Buffer) => this.stderrText.push(d.toString()));
    proc.stdout?.on("data", (d: Buffer) => this.stderrText.push(d.toString()));
  }

  static async start(opts: StartOptions = {}): Promise<KernelClient> {
    const dir = tempDir("cnts-kernel-test-");
    const ports = await Promise.all([0, 1, 2, 3, 4].map(() => freePort()));
    const key = opts.key ?? crypto.randomUUID();
    const connection = {
      transport: "tcp",
      ip: "127.0.0.1",
      shell_port: ports[0],
      iopub_port: ports[1],
      stdin_port: ports[2],
      control_port: ports[3],
      hb_port: ports[4],
      key,
      signature_scheme: "hmac-sha256",
    };
    const file = path.join(dir, "connection.json");
    fs.writeFileSync(file, JSON.stringify(connection));
    const proc = spawn(process.execPath, [path.join(ROOT, "bin", "controlnet-ts.js"), "kernel", "run", "--connection-file", file], {
      cwd: opts.cwd ?? dir,
      env: { ...process.env, ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const client = new KernelClient(proc, connection, new Signer(key), dir);
    await client.connect();
    return client;
  }

  private url(port: unknown): string {
    return `tcp://${this.connection.ip}:${port}`;
  }

  private async connect(): Promise<void> {
    const c = this.connection;
    this.sockets.shell.connect(this.url(c.shell_port));
    this.sockets.control.connect(this.url(c.control_port));
    this.sockets.stdin.connect(this.url(c.stdin_port));
    this.sockets.iopub.connect(this.url(c.iopub_port));
    this.sockets.iopub.subscribe();
    for (const ch of ["shell", "control", "stdin"] as const) void this.pump(ch);
    void this.pumpIopub();
    // Like jupyter_client's wait_for_ready: kernel_info until both a reply and an iopub message arrive (the SUB
    // socket only receives once its subscription reached the kernel).
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (this.exitCode !== null) throw new Error(`kernel exited (${this.exitCode}): ${this.stderrText.join("")}`);
      const id = this.send("shell", "kernel_info_request", {});
      try {
        await this.reply(id, 2000);
        await this.waitFor(() => this.iopubLog.some((m) => m.parent_header.msg_id === id), 1000);
        return;
      } catch {
        // not ready yet
      }
    }
    throw new Error(`kernel did not become ready: ${this.stderrText.join("")}`);
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private async pump(ch: Channel): Promise<void> {
    try {
      for await (const frames of this.sockets[ch]) {
        const msg = decode(frames, this.signer);
        if (ch === "stdin") this.stdinLog.push(msg);
        else this.replies.set(String(msg.parent_header.msg_id), msg);
        this.notify();
      }
    } catch (e) {
      if (!this.closed) throw e;
    }
  }

  private async pumpIopub(): Promise<void> {
    try {
      for await (const frames of this.sockets.iopub) {
        this.iopubLog.push(decode(frames, this.signer));
        this.notify();
      }
    } catch (e) {
      if (!this.closed) throw e;
    }
  }

  /** Resolves when `cond()` holds (checked on every incoming message). */
  async waitFor<T>(cond: () => T | undefined | false | null, timeoutMs = 30_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = cond();
      if (v) return v;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("timed out waiting for the kernel");
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Sends a request; returns its msg_id. `raw` lets a test send unsigned or tampered frames. */
  send(ch: Channel, msgType: string, content: unknown, opts: { buffers?: Buffer[]; signer?: Signer; metadata?: Record<string, unknown>; parent?: Header } = {}): string {
    const header = newHeader(msgType, this.session, "test");
    const frames = encode(opts.signer ?? this.signer, [], header, opts.parent ?? {}, opts.metadata ?? {}, content, opts.buffers ?? []);
    void this.sockets[ch].send(frames);
    return header.msg_id;
  }

  sendFrames(ch: Channel, frames: Buffer[]): void {
    void this.sockets[ch].send(frames);
  }

  reply(msgId: string, timeoutMs = 30_000): Promise<Message> {
    return this.waitFor(() => this.replies.get(msgId), timeoutMs);
  }

  hasReply(msgId: string): boolean {
    return this.replies.has(msgId);
  }

  iopubFor(msgId: string): Message[] {
    return this.iopubLog.filter((m) => m.parent_header.msg_id === msgId);
  }

  idle(msgId: string, timeoutMs = 30_000): Promise<Message[]> {
    return this.waitFor(() => {
      const msgs = this.iopubFor(msgId);
      return msgs.some((m) => m.header.msg_type === "status" && (m.content as { execution_state?: string }).execution_state === "idle") && msgs;
    }, timeoutMs);
  }

  /** Runs a cell; resolves with its reply and its iopub messages (up to its idle status). `cellId`: the request's
   *  metadata cellId, as JupyterLab sends it. */
  async execute(code: string, opts: { allow_stdin?: boolean; stop_on_error?: boolean; timeoutMs?: number; cellId?: string; user_expressions?: Record<string, string> } = {}): Promise<{ id: string; reply: Message; iopub: Message[] }> {
    const id = this.send("shell", "execute_request", { code, silent: false, store_history: true, user_expressions: opts.user_expressions ?? {}, allow_stdin: opts.allow_stdin ?? false, stop_on_error: opts.stop_on_error ?? true },
      opts.cellId ? { metadata: { cellId: opts.cellId } } : {});
    const reply = await this.reply(id, opts.timeoutMs);
    const iopub = await this.idle(id, opts.timeoutMs);
    return { id, reply, iopub };
  }

  /** Sends an execute_request and resolves with its id once the kernel has started it (its execute_input is out). */
  async started(code: string, timeoutMs = 10000): Promise<string> {
    const id = this.send("shell", "execute_request", { code });
    await this.waitFor(() => this.iopubFor(id).some((m) => m.header.msg_type === "execute_input"), timeoutMs);
    return id;
  }

  async close(): Promise<void> {
    if (!this.closed) {
      if (this.exitCode === null) {
        const id = this.send("control", "shutdown_request", { restart: false });
        await Promise.race([this.reply(id, 5000).catch(() => null), this.exited]);
        await Promise.race([this.exited, new Promise((r) => setTimeout(r, 3000))]);
      }
      this.closed = true;
      for (const s of Object.values(this.sockets)) s.close();
    }
    if (this.exitCode === null) this.proc.kill("SIGKILL");
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 2000))]);
  }
}

/** Helpers over one cell's iopub messages. */
export function ofType(msgs: Message[], type: string): Array<Record<string, any>> {
  return msgs.filter((m) => m.header.msg_type === type).map((m) => m.content as Record<string, any>);
}

export function streamText(msgs: Message[], name: "stdout" | "stderr"): string {
  return ofType(msgs, "stream")
    .filter((c) => c.name === name)
    .map((c) => c.text as string)
    .join("");
}
