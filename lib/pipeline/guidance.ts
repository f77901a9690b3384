/**
 * The control logic of StableDiffusionControlNetPipeline that does not touch a network: per-ControlNet argument
 * lists, the control_guidance_start/end windows, and classifier-free guidance. Kept apart so it is tested exactly.
 */
import { tf } from "../engine/index.js";
import { InputError } from "../io/input-error.js";

/** One value per ControlNet: a scalar is repeated; a list must have exactly one entry per net. */
export function perNet<T>(value: T | T[], numNets: number, what: string): T[] {
  if (Array.isArray(value)) {
    if (value.length !== numNets) {
      throw new Error(`${what}: got ${value.length} values for ${numNets} ControlNet${numNets === 1 ? "" : "s"} (give one per ControlNet, or a single value)`);
    }
    return [...value];
  }
  return new Array<T>(numNets).fill(value);
}

/** Validates and broadcasts control_guidance_start/end (fractions of the schedule, start < end). */
export function controlGuidanceWindows(
  start: number | number[],
  end: number | number[],
  numNets: number,
): { start: number[]; end: number[] } {
  const s = perNet(start, numNets, "controlGuidanceStart");
  const e = perNet(end, numNets, "controlGuidanceEnd");
  s.forEach((si, i) => {
    const ei = e[i]!;
    if (!(si >= 0)) throw new Error(`controlGuidanceStart ${si} must be ≥ 0`);
    if (!(ei <= 1)) throw new Error(`controlGuidanceEnd ${ei} must be ≤ 1`);
    if (!(si < ei)) throw new Error(`controlGuidanceStart (${si}) must be smaller than controlGuidanceEnd (${ei})`);
  });
  return { start: s, end: e };
}

/**
 * keep[i][k] ∈ {0, 1}: whether ControlNet k acts at step i of n. diffusers: 1 − [i/n < start or (i+1)/n > end].
 */
export function controlnetKeep(numSteps: number, start: number[], end: number[]): number[][] {
  return Array.from({ length: numSteps }, (_, i) =>
    start.map((s, k) => 1 - Number(i / numSteps < s || (i + 1) / numSteps > end[k]!)),
  );
}

/** Whether classifier-free guidance runs (diffusers: guidance_scale > 1 and no LCM-style guidance embedding). */
export function doClassifierFreeGuidance(guidanceScale: number, timeCondProjDim: number | null | undefined): boolean {
  return guidanceScale > 1 && (timeCondProjDim === null || timeCondProjDim === undefined);
}

/**
 * Which halves of the classifier-free batch the ControlNet acts on:
 *   - "balanced" (diffusers' StableDiffusionControlNetPipeline): both, so guidance leaves the control's strength alone;
 *   - "controlnet" (sd-webui-controlnet's "ControlNet is more important"): the conditional half only, with no depth
 *     ramp — the unconditional prediction is the base's own, so guidance multiplies the control's effect (g × scale).
 * Guess mode always uses the conditional half (and adds its ramp); without guidance both modes are the same.
 */
export type ControlMode = "balanced" | "controlnet";
export const CONTROL_MODES: readonly ControlMode[] = ["balanced", "controlnet"];

export function parseControlMode(name: string): ControlMode {
  if ((CONTROL_MODES as readonly string[]).includes(name)) return name as ControlMode;
  throw new InputError(`unknown control mode "${name}" (use ${CONTROL_MODES.join(" or ")})`);
}

/** ε = ε_uncond + g·(ε_text − ε_uncond) on a batch stacked [uncond; text]. */
export function applyGuidance(noisePred: tf.Tensor, guidanceScale: number): tf.Tensor {
  return tf.tidy(() => {
    const [uncond, text] = tf.split(noisePred, 2, 0);
    return tf.add(uncond!, tf.mul(guidanceScale, tf.sub(text!, uncond!)));
  });
}

/** Repeats each batch row `times` times in place (torch `repeat_interleave(times, dim=0)`). */
export function repeatInterleave<T extends tf.Tensor>(x: T, times: number): T {
  if (times === 1) return x.clone();
  return tf.tidy(() => {
    const b = x.shape[0]!;
    const idx = Array.from({ length: b * times }, (_, i) => Math.floor(i / times));
    return tf.gather(x, tf.tensor1d(idx, "int32")) as T;
  });
}
