/** Reading the reference fixtures (tests/fixtures/<name>/io.safetensors, PyTorch NCHW) into NHWC tfjs tensors. */
import fs from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";
import { tf } from "../../lib/engine/index.js";
import { readSafetensors } from "../../lib/io/safetensors.js";
import type { HostTensor } from "../../lib/io/safetensors.js";

export const FIXTURES = process.env.CONTROLNET_TS_FIXTURES ?? path.resolve(path.dirname(new URL(import.meta.url).pathname), "../fixtures");

/** A fixture folder (or a model folder inside the fixtures, e.g. "sd_tiny/unet"); a clear failure when absent. */
export function fixtureDir(name: string): string {
  const dir = path.join(FIXTURES, name);
  assert.ok(fs.existsSync(dir), `fixture ${name} is missing: regenerate with tests/reference (see tests/fixtures/README.md)`);
  return dir;
}

export class FixtureIO {
  readonly tensors: Map<string, HostTensor>;
  constructor(readonly name: string) {
    this.tensors = readSafetensors(path.join(fixtureDir(name), "io.safetensors")).tensors;
  }
  host(key: string): HostTensor {
    const t = this.tensors.get(key);
    assert.ok(t, `fixture ${this.name} has no tensor '${key}'`);
    return t;
  }
  /** As stored (PyTorch layout). */
  raw(key: string): tf.Tensor {
    const t = this.host(key);
    return tf.tensor(t.data, t.shape, t.dtype);
  }
  /** NCHW → NHWC for 4-D tensors; others unchanged. */
  nhwc(key: string): tf.Tensor {
    const t = this.raw(key);
    return t.rank === 4 ? tf.tidy(() => tf.transpose(t, [0, 2, 3, 1])) : t;
  }
  /** Values in the fixture's layout (NCHW for 4-D). */
  values(key: string): Float32Array {
    return this.host(key).data as Float32Array;
  }
  has(key: string): boolean {
    return this.tensors.has(key);
  }
}

/** NHWC tfjs tensor → flat values in NCHW order (to compare with a fixture). */
export function nchwValues(t: tf.Tensor): Float32Array {
  return tf.tidy(() => (t.rank === 4 ? tf.transpose(t, [0, 3, 1, 2]) : t)).dataSync() as Float32Array;
}
