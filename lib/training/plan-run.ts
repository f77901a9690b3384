/**
 * The memory plan of a train_controlnet run, asked before step 1 (lib/planner's planMemory on the engine that runs):
 * an oversized run is refused up front with the flags that would fit, instead of growing the heap for minutes without
 * a line. Options that leave the mathematics unchanged (freeing gradients early, chunked attention, gradient
 * checkpointing, optimizer-state offload) are applied when they make the run fit, and said so; a plan that needs
 * 8-bit Adam (other numerics) or what this trainer cannot do (frozen-weight offload, per-call weight copies) is refused,
 * naming the flags to add.
 */
import { planMemory, plannedDeviceBytes, type EstimateConfig, type PlannerOptions } from "../planner/index.js";
import type { TrainArgs } from "./args.js";

/** The trainer's query chunk when it applies chunked attention itself (the planner's tier uses the same). */
export const PLANNED_ATTENTION_CHUNK = 256;
/** The user's --enable_xformers_memory_efficient_attention chunk (createSession). */
export const XFORMERS_ATTENTION_CHUNK = 1024;

export class PlanRefusedError extends Error {
  override name = "PlanRefusedError";
}

export interface RunPlan {
  /** Bytes the chosen option set needs on the device, and the device's budget. */
  neededBytes: number;
  budgetBytes: number;
  /** Flags the plan switched on (empty when the run fits as given). */
  applied: Partial<TrainArgs>;
  /** One line for the log. */
  message: string;
}

/** Options the trainer applies with unchanged mathematics → the flag that switches each on. */
const SAFE: [keyof PlannerOptions, keyof TrainArgs][] = [
  ["setGradsToNone", "set_grads_to_none"],
  ["attentionChunkSize", "enable_xformers_memory_efficient_attention"],
  ["gradientCheckpointing", "gradient_checkpointing"],
  ["offloadOptimizerState", "offload_optimizer_state"],
];
const FLAGS: Partial<Record<keyof PlannerOptions, string>> = {
  setGradsToNone: "--set_grads_to_none", attentionChunkSize: "--enable_xformers_memory_efficient_attention",
  use8bitAdam: "--use_8bit_adam", gradientCheckpointing: "--gradient_checkpointing", offloadOptimizerState: "--offload_optimizer_state",
  offloadFrozenWeights: "frozen-weight offload (not in this trainer yet)", keepPackedWeights: "per-call weight copies (not in this trainer yet)",
};

const GB = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;

/** The planner options the arguments already ask for. */
export function requestedOptions(a: TrainArgs): Partial<PlannerOptions> {
  return {
    setGradsToNone: a.set_grads_to_none, gradientCheckpointing: a.gradient_checkpointing, use8bitAdam: a.use_8bit_adam,
    offloadOptimizerState: a.offload_optimizer_state, attentionChunkSize: a.enable_xformers_memory_efficient_attention ? XFORMERS_ATTENTION_CHUNK : 0,
  };
}

/** Plans the run; throws PlanRefusedError when it cannot fit as given or with math-preserving options. */
export function planRun(a: TrainArgs, models: Omit<EstimateConfig, "resolution" | "batchSize" | "options">, budgetBytes: number, wasmHeap: boolean): RunPlan {
  const requested = requestedOptions(a);
  const plan = planMemory({ ...models, resolution: a.resolution, batchSize: a.train_batch_size, options: requested }, budgetBytes, { wasmHeap });
  const asGiven = plannedDeviceBytes(plan.tiers[0]!.estimate, wasmHeap);
  const where = `${wasmHeap ? "the wasm heap" : "device memory"} (${GB(budgetBytes)})`;
  const shape = `${a.resolution} px, batch ${a.train_batch_size}`;
  if (plan.tiers[0]!.fits) return { neededBytes: asGiven, budgetBytes, applied: {}, message: `memory plan: ${shape} needs ~${GB(asGiven)} of ${where}` };
  const best = plan.best;
  if (!best) {
    const least = Math.min(...plan.tiers.map((t) => plannedDeviceBytes(t.estimate, wasmHeap)));
    throw new PlanRefusedError(`${shape} needs ~${GB(asGiven)} as given and ~${GB(least)} with every memory option, more than ${where}: ` +
      "no option set fits. Lower --resolution or --train_batch_size (--gradient_accumulation_steps keeps the effective batch). Nothing was trained.");
  }
  const added = (Object.keys(best.options) as (keyof PlannerOptions)[]).filter((k) => best.options[k] !== (requested[k] ?? (k === "keepPackedWeights" ? true : k === "attentionChunkSize" ? 0 : false)) && k !== "mixedPrecision");
  const safeKeys = new Set(SAFE.map(([k]) => k));
  const needed = plannedDeviceBytes(best.estimate, wasmHeap);
  if (added.every((k) => safeKeys.has(k))) {
    const applied: Partial<TrainArgs> = {};
    for (const [k, flag] of SAFE) if (added.includes(k)) (applied as Record<string, unknown>)[flag] = true;
    return {
      neededBytes: needed, budgetBytes, applied,
      message: `memory plan: ${shape} needs ~${GB(asGiven)} as given, more than ${where}; applied ${added.map((k) => FLAGS[k]).join(" ")} (same mathematics) → ~${GB(needed)}`,
    };
  }
  throw new PlanRefusedError(`${shape} needs ~${GB(asGiven)} as given, more than ${where}. It would fit (~${GB(needed)}) with ` +
    `${added.map((k) => FLAGS[k]).join(" ")}; add those, or lower --resolution / --train_batch_size. Nothing was trained.`);
}
