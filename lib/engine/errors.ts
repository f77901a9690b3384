/**
 * TensorFlow's errors in one line. tfjs-node throws a failed op's status as two lines ("Invalid TF_Status: 8" then
 * "Message: OOM when allocating tensor with shape[…]…"), which a one-line report cut to the status code. The code
 * names nothing a user can act on; the message does, and running out of memory gets the ways out.
 */
const STATUS = /^Invalid TF_Status: (\d+)\r?\nMessage: ([^\n]*)/;

/** The one-line form of an engine error's message, or null when `message` is not TensorFlow's status. */
export function engineErrorLine(message: string): string | null {
  const m = STATUS.exec(message);
  if (!m) return null;
  const text = m[2]!.trim();
  const oom = /^OOM when allocating tensor with shape\[([^\]]*)\]/.exec(text);
  if (oom) {
    return `out of memory: TensorFlow could not allocate a tensor of shape [${oom[1]}]; use a smaller batch, resolution or ` +
      "image count, or the memory options the planner names (gradient checkpointing, 8-bit Adam, offload)";
  }
  return `TensorFlow: ${text}`;
}
