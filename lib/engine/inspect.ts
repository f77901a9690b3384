/**
 * How a tensor prints through Node's util.inspect (console.log, the REPL, a notebook cell's result — also inside an
 * array or an object): its values, summarised by tfjs past 20 per axis, with its shape and dtype, instead of the
 * engine's bookkeeping fields (`kept`, `dataId`, `scopeId`, …). A disposed tensor says so.
 */
import util from "node:util";
import { tf } from "./tf.js";

function inspectTensor(this: tf.Tensor): string {
  const what = `shape [${this.shape.join(", ")}], ${this.dtype}`;
  if (this.isDisposed) return `Tensor (disposed; ${what})`;
  return `${this.toString()}\n  (${what})`;
}

/** Installs the method on tfjs's Tensor class (Variables inherit it); once, idempotent. */
export function installTensorInspect(): void {
  const proto = tf.Tensor.prototype as unknown as Record<symbol, unknown>;
  if (proto[util.inspect.custom] !== inspectTensor) {
    Object.defineProperty(proto, util.inspect.custom, { value: inspectTensor, configurable: true, writable: true });
  }
}
