/**
 * Cell helper: `estimateMemory(config, budget?)` → a plain plan object (for the CLI and code) that renders in
 * Jupyter as a table of the option tiers, the cheapest one that fits the budget highlighted.
 */
import { engineProfile, planMemory, plannedDeviceBytes, type EstimateConfig, type MemoryPlan } from "../planner/index.js";
import { engineInfo, memoryBudget, WASM_HEAP_LIMIT } from "../engine/index.js";
import { Table } from "../../widgets/table.js";

const GB = (x: number) => (x / 1e9).toFixed(2);

export interface PlannerCellResult extends MemoryPlan {
  /** The tiers as a widgets Table (what the notebook shows). */
  table(): Table;
  [key: symbol]: unknown;
}

/** The budget defaults to the running engine's (memoryBudget: wasm heap, GPU or host memory); wasm's before any runs. */
export function estimateMemory(config: EstimateConfig, budgetBytes: number = engineInfo() ? memoryBudget() : WASM_HEAP_LIMIT): PlannerCellResult {
  // the running engine's profile ("tfjs" = wasm, also before an engine is chosen): its heap also holds XNNPACK's
  // weight copies
  const profile = config.profile ?? engineProfile();
  const wasmHeap = profile === "tfjs";
  const plan = planMemory(config, budgetBytes, { wasmHeap });
  const table = () =>
    new Table({
      title: `Memory plan: ${config.resolution}px, batch ${config.batchSize}, budget ${GB(budgetBytes)} GB (${profile})`,
      columns: ["options", wasmHeap ? "wasm heap GB" : "device GB", "host GB", "activations GB", "attention GB", "fits"],
      rows: plan.tiers.map((t) => [t.name, GB(plannedDeviceBytes(t.estimate, wasmHeap)), GB(t.estimate.host.total), GB(t.estimate.device.activations), GB(t.estimate.device.attention), t.fits ? "yes" : "no"]),
      highlight: plan.chosen >= 0 ? [plan.chosen] : [],
      note: plan.best ? `cheapest that fits: ${plan.best.name}` : "no option set fits this budget",
    });
  return Object.assign(plan, {
    table,
    [Symbol.for("Jupyter.display")]: () => table().bundle(),
  });
}
