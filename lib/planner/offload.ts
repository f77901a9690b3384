/**
 * Frozen-weight offload: the big blocks of a frozen model (its ResnetBlock2D, Transformer2DModel and down/upsampler
 * instances) keep
 * their weights in host memory (Float32Arrays, PyTorch layout) and bring them into the device heap only while the
 * block runs — in the forward and again in the gradient-checkpoint recompute — then free them. Requires gradient
 * checkpointing on the model: a checkpointed block's forward is not taped, so nothing on the tape holds its weights
 * between the two uses (the recompute's own tape keeps what its backward needs until that block's gradient is done).
 */
import { Downsample2D, Module, ResnetBlock2D, Transformer2DModel, Upsample2D, makeRng } from "../models/index.js";
import type { HostTensor } from "../io/safetensors.js";

export interface StreamedBlock {
  module: Module;
  host: Map<string, HostTensor>;
  bytes: number;
}

export interface FrozenWeightStream {
  blocks: StreamedBlock[];
  /** Host bytes holding the streamed weights. */
  hostBytes: number;
  /** Times a block's weights were brought into the heap. */
  loads: number;
}

const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

/**
 * Moves the weights of every resnet/transformer/sampler block of `model` to host memory and makes their forward load and
 * free them. Blocks that have weights are copied out (then freed on the device); shape-only blocks get random
 * host weights (uniform ±1/√fan_in, norms at 1/0), for benches with exact shapes and no checkpoint.
 */
export function streamFrozenWeights(model: Module, seed = 1): FrozenWeightStream {
  if (!model.gradientCheckpointing) throw new Error("streamFrozenWeights needs gradient checkpointing on the model (enableGradientCheckpointing)");
  const rng = makeRng(seed);
  const state: FrozenWeightStream = { blocks: [], hostBytes: 0, loads: 0 };
  for (const m of model.modules()) {
    if (!(m instanceof ResnetBlock2D || m instanceof Transformer2DModel || m instanceof Downsample2D || m instanceof Upsample2D)) continue;
    const host = new Map<string, HostTensor>();
    if (m.materialized) {
      for (const [k, t] of m.stateDict()) host.set(k, t);
      m.dispose();
    } else {
      for (const [k, spec] of m.parameterSpecs()) {
        const data = new Float32Array(numel(spec.shape));
        if (/norm\d?\.weight$|^norm\.weight$/.test(k)) data.fill(1);
        else if (!k.endsWith("bias")) {
          const fanIn = spec.shape.length > 1 ? numel(spec.shape.slice(1)) : spec.shape[0]!;
          const bound = 1 / Math.sqrt(fanIn);
          for (let i = 0; i < data.length; i++) data[i] = (rng() * 2 - 1) * bound;
        }
        host.set(k, { dtype: "float32", shape: spec.shape, data });
      }
    }
    const bytes = [...host.values()].reduce((a, t) => a + t.data.byteLength, 0);
    state.blocks.push({ module: m, host, bytes });
    state.hostBytes += bytes;
    const inner = (m as unknown as { forward: (...a: unknown[]) => unknown }).forward.bind(m);
    (m as unknown as { forward: (...a: unknown[]) => unknown }).forward = (...args: unknown[]) => {
      m.loadState(host, { strict: true });
      state.loads++;
      try {
        return inner(...args);
      } finally {
        m.dispose();
      }
    };
  }
  return state;
}
