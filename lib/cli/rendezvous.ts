/**
 * Several machines: TensorFlow's cluster spec needs every machine's address, but accelerate's flags give only machine
 * 0's. Like torchrun's c10d rendezvous, machine 0's launcher answers on main_process_ip:main_process_port; every
 * launcher asks it (over HTTP) with its machine rank and the sizes it was launched with, and gets back the address
 * each machine was seen from, once all have asked. It carries addresses only — the training traffic is TF's.
 * Launches with different sizes are refused with a line naming both.
 */
import crypto from "node:crypto";
import http from "node:http";

export interface RendezvousOptions {
  numMachines: number;
  machineRank: number;
  numProcesses: number;
  perMachine: number;
  mainProcessIp: string;
  mainProcessPort: number;
  /** Default CONTROLNET_TS_RENDEZVOUS_TIMEOUT or 300 s. */
  timeoutSeconds?: number;
  /** Notes while the machines gather (waiting, joined, a refused machine): the launcher's stderr. */
  log?: (line: string) => void;
}

interface Join { machine_rank: number; num_machines: number; num_processes: number }

/** What the machines agree on: every machine's address by machine rank (machine 0's is main_process_ip), and the
 *  launch's id (machine 0's: its processes tell their group from another launch's by it). */
export interface Rendezvous {
  hosts: string[];
  launchId: string;
}

/** A fresh launch id (12 hex digits). */
export function newLaunchId(): string {
  return crypto.randomBytes(6).toString("hex");
}

export async function rendezvous(o: RendezvousOptions): Promise<Rendezvous> {
  const timeoutMs = (o.timeoutSeconds ?? (Number(process.env.CONTROLNET_TS_RENDEZVOUS_TIMEOUT) || 300)) * 1000;
  if (o.machineRank === 0) return serve(o, timeoutMs);
  const deadline = Date.now() + timeoutMs;
  o.log?.(`joining machine 0 at ${o.mainProcessIp}:${o.mainProcessPort} (waiting up to ${timeoutMs / 1000} s for it)`);
  const body = JSON.stringify({ machine_rank: o.machineRank, num_machines: o.numMachines, num_processes: o.numProcesses } satisfies Join);
  let last = "";
  while (Date.now() < deadline) {
    try {
      const r = await post(o.mainProcessIp, o.mainProcessPort, body, deadline - Date.now());
      if (r.status === 200) {
        const { hosts, launch } = JSON.parse(r.body) as { hosts: string[]; launch: string };
        return { hosts, launchId: launch };
      }
      // our launcher refuses with a reason in the body; anything else answering there is not machine 0's launcher
      throw new Error([400, 409, 503].includes(r.status)
        ? `machine 0 refused machine ${o.machineRank}: ${r.body}`
        : `${o.mainProcessIp}:${o.mainProcessPort} answered HTTP ${r.status}, not as machine 0's controlnet-ts launch: check --main_process_ip and --main_process_port`);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === "ENOTFOUND" || err.code === "EAI_AGAIN") throw new Error(`cannot resolve --main_process_ip ${o.mainProcessIp} (${err.code})`);
      if (!["ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ETIMEDOUT"].includes(err.code ?? "")) throw err;
      last = err.code!;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  throw new Error(`cannot reach machine 0's launcher at ${o.mainProcessIp}:${o.mainProcessPort} (${last || "timeout"}) within ${timeoutMs / 1000} s`);
}

function post(host: string, port: number, body: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method: "POST", path: "/join", headers: { "content-type": "application/json" }, timeout: timeoutMs }, (res) => {
      let data = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (data += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data }));
    });
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })));
    req.on("error", reject);
    req.end(body);
  });
}

function serve(o: RendezvousOptions, timeoutMs: number): Promise<Rendezvous> {
  return new Promise((resolve, reject) => {
    const hosts: (string | null)[] = Array.from({ length: o.numMachines }, (_, m) => (m === 0 ? o.mainProcessIp : null));
    const waiting: http.ServerResponse[] = [];
    const launchId = newLaunchId();
    const server = http.createServer((req, res) => {
      let data = "";
      req.setEncoding("utf8");
      req.on("data", (c) => (data += c));
      req.on("end", () => {
        let j: Join;
        try {
          j = JSON.parse(data) as Join;
        } catch {
          res.writeHead(400).end("not a rendezvous request");
          return;
        }
        const refuse = (why: string) => {
          // said on both sides: machine 0 keeps waiting for a machine launched right
          const from = (req.socket.remoteAddress ?? "?").replace(/^::ffff:/, "");
          o.log?.(`refused a machine from ${from}: ${why}; still waiting (up to ${timeoutMs / 1000} s) for the others`);
          res.writeHead(409).end(why);
        };
        if (j.num_machines !== o.numMachines || j.num_processes !== o.numProcesses) {
          return refuse(`it was launched with --num_machines ${j.num_machines} --num_processes ${j.num_processes}, machine 0 with ${o.numMachines} / ${o.numProcesses}`);
        }
        if (!(j.machine_rank > 0 && j.machine_rank < o.numMachines)) return refuse(`--machine_rank ${j.machine_rank} is not in 1…${o.numMachines - 1}`);
        if (hosts[j.machine_rank] !== null) return refuse(`two machines were launched with --machine_rank ${j.machine_rank}`);
        hosts[j.machine_rank] = (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
        waiting.push(res);
        o.log?.(`machine ${j.machine_rank} joined from ${hosts[j.machine_rank]}`);
        // a machine stopped while it waits (Ctrl-C, killed) frees its slot: its relaunch was refused as a second
        // machine of that rank, and the others went on with the dead one's address until the join timeout
        res.on("close", () => {
          if (res.writableEnded) return;
          waiting.splice(waiting.indexOf(res), 1);
          hosts[j.machine_rank] = null;
          o.log?.(`machine ${j.machine_rank} left before the others joined; waiting for it again`);
        });
        if (hosts.every((h) => h !== null)) {
          for (const w of waiting) w.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ hosts, launch: launchId }));
          clearTimeout(timer);
          server.close();
          resolve({ hosts: hosts as string[], launchId });
        }
      });
    });
    const timer = setTimeout(() => {
      server.close();
      for (const w of waiting) w.writeHead(503).end("machine 0 gave up waiting");
      const missing = hosts.flatMap((h, m) => (h === null ? [m] : []));
      reject(new Error(`machine(s) ${missing.join(", ")} did not join the rendezvous at ${o.mainProcessIp}:${o.mainProcessPort} within ${timeoutMs / 1000} s (CONTROLNET_TS_RENDEZVOUS_TIMEOUT)`));
    }, timeoutMs);
    server.once("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(e.code === "EADDRINUSE"
        ? `port ${o.mainProcessPort} is already in use (another training job?): pick another --main_process_port`
        : `cannot listen on ${o.mainProcessPort}: ${e.message}`));
    });
    // said at once: until the others join nothing else is printed, and a machine never started is otherwise silence
    const others = o.numMachines === 2 ? "1" : `1…${o.numMachines - 1}`;
    server.listen(o.mainProcessPort, "0.0.0.0", () => o.log?.(`waiting for machine(s) ${others} at ${o.mainProcessIp}:${o.mainProcessPort} ` +
      `(up to ${timeoutMs / 1000} s): run the same command there with --machine_rank ${others}`));
  });
}
