/** lib/models: the image models (UNet, ControlNet, VAE) and the CLIP text encoder, in diffusers' parameter names. */
export * from "./module.js";
export * from "./layers.js";
export * from "./embeddings.js";
export * from "./resnet.js";
export * from "./attention.js";
export * from "./unet-blocks.js";
export * from "./unet-encoder.js";
export * from "./unet-2d-condition.js";
export * from "./controlnet.js";
export * from "./pretrained.js";
export * from "./autoencoder-kl.js";
export * from "./clip/text-model.js";
