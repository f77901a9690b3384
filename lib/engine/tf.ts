/**
 * The single import of TensorFlow.js for the whole library. Everything in lib/ imports `tf` from here so that
 * exactly one tfjs instance (and one engine singleton) is ever used, whichever backend package is loaded.
 *
 * We use the full `@tensorflow/tfjs` bundle rather than `tfjs-core` alone because only the full bundle's Node
 * entry registers the gradient functions (`tfjs-core`'s CommonJS build does not).
 */
import * as tf from "@tensorflow/tfjs";
export { tf };
export type Tensor = tf.Tensor;
export type Variable = tf.Variable;
