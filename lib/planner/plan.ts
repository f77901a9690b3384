/**
 * planMemory: the cheapest option set that fits a device budget. Tiers add options in order of their slowdown
 * (none < set_grads_to_none < chunked attention < 8-bit Adam < checkpointing < optimizer offload < frozen-weight
 * offload); each tier keeps the previous ones, as the seed README stacks them. For the wasm heap (`wasmHeap`) a tier
 * fits when the tensors *and* XNNPACK's hidden packed weight copies do, and a last tier drops those copies (per-call
 * weight copies: the slowest, every conv repacks its filter).
 */
import { estimateMemory, type EstimateConfig, type MemoryEstimate } from "./estimate.js";
import type { PlannerOptions } from "./types.js";

export interface PlanTier {
  name: string;
  options: Partial<PlannerOptions>;
  estimate: MemoryEstimate;
  fits: boolean;
}

export interface MemoryPlan {
  budgetBytes: number;
  tiers: PlanTier[];
  /** Index of the cheapest tier that fits, or -1. */
  chosen: number;
  best: PlanTier | null;
}

const STEPS: [string, Partial<PlannerOptions>][] = [
  ["none", {}],
  ["+ set_grads_to_none", { setGradsToNone: true }],
  ["+ chunked attention", { attentionChunkSize: 256 }],
  ["+ 8-bit Adam", { use8bitAdam: true }],
  ["+ gradient checkpointing", { gradientCheckpointing: true }],
  ["+ optimizer offload", { offloadOptimizerState: true }],
  ["+ frozen-weight offload", { offloadFrozenWeights: true }],
];

/** What a plan must fit: the tensor total and the heap's slack, plus the packed weight copies on the wasm heap. */
export function plannedDeviceBytes(e: MemoryEstimate, wasmHeap: boolean): number {
  return e.device.total + e.heapSlack + (wasmHeap ? e.wasmPackedWeights : 0);
}

export function planMemory(config: EstimateConfig, budgetBytes: number, opts: { wasmHeap?: boolean } = {}): MemoryPlan {
  const wasmHeap = opts.wasmHeap ?? false;
  const tiers: PlanTier[] = [];
  let acc: Partial<PlannerOptions> = { ...(config.options ?? {}) };
  const steps: [string, Partial<PlannerOptions>][] = wasmHeap ? [...STEPS, ["+ per-call weight copies", { keepPackedWeights: false }]] : STEPS;
  for (const [name, add] of steps) {
    acc = { ...acc, ...add };
    const estimate = estimateMemory({ ...config, options: acc });
    tiers.push({ name, options: { ...acc }, estimate, fits: plannedDeviceBytes(estimate, wasmHeap) <= budgetBytes });
  }
  const chosen = tiers.findIndex((t) => t.fits);
  return { budgetBytes, tiers, chosen, best: chosen >= 0 ? tiers[chosen]! : null };
}
