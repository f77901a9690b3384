/** TensorFlow's two-line status errors become one line that names the problem (lib/engine/errors.ts). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { engineErrorLine } from "../../lib/engine/index.js";
import { describeError } from "../../lib/io/describe-error.js";
import { withPath } from "../../lib/io/diffusers.js";

test("TensorFlow's status errors in one line; running out of memory names the ways out", () => {
  // as tfjs-node's binding throws them
  const oom = "Invalid TF_Status: 8\nMessage: OOM when allocating tensor with shape[100000000,4,32,32] and type float on /job:localhost/replica:0/task:0/device:CPU:0 by allocator mklcpu";
  assert.equal(engineErrorLine(oom), "out of memory: TensorFlow could not allocate a tensor of shape [100000000,4,32,32]; use a smaller batch, " +
    "resolution or image count, or the memory options the planner names (gradient checkpointing, 8-bit Adam, offload)");
  assert.equal(engineErrorLine("Invalid TF_Status: 3\nMessage: Incompatible shapes: [2,3] vs. [3,2]"), "TensorFlow: Incompatible shapes: [2,3] vs. [3,2]");
  assert.equal(engineErrorLine("ordinary error"), null);
  // the command line's one-line report used to keep only "Invalid TF_Status: 8"
  assert.match(describeError(new Error(oom)), /^out of memory: TensorFlow could not allocate a tensor of shape \[100000000,4,32,32\]/);
});

test("a write through a file descriptor that fails names its file (TensorBoard's event file, an atomic write's target)", () => {
  const full = () => {
    throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC", syscall: "write" });
  };
  assert.throws(() => withPath("/runs/logs/events.out.tfevents.1", full), (e: NodeJS.ErrnoException) =>
    e.path === "/runs/logs/events.out.tfevents.1" && describeError(e) === "no space left on the device while writing /runs/logs/events.out.tfevents.1: ENOSPC: no space left on device, write");
  // an error that already names a path keeps it
  assert.throws(() => withPath("/b", () => { throw Object.assign(new Error("x"), { code: "EACCES", path: "/a" }); }), (e: NodeJS.ErrnoException) => e.path === "/a");
});
