/**
 * planMemory: the cheapest option set that fits a device budget. Tiers add options in order of their slowdown
 * (none < set_grads_to_none < chunked attention < 8-bit Adam < checkpointing < optimizer offload < frozen-weight
 * offload); each tier keeps the previous ones, as the seed README stacks them.
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

export function planMemory(config: EstimateConfig, budgetBytes: number): MemoryPlan {
  const tiers: PlanTier[] = [];
  let acc: Partial<PlannerOptions> = { ...(config.options ?? {}) };
  for (const [name, add] of STEPS) {
    acc = { ...acc, ...add };
    const estimate = estimateMemory({ ...config, options: acc });
    tiers.push({ name, options: { ...acc }, estimate, fits: estimate.device.total <= budgetBytes });
  }
  const chosen = tiers.findIndex((t) => t.fits);
  return { budgetBytes, tiers, chosen, best: chosen >= 0 ? tiers[chosen]! : null };
}
