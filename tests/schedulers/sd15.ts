/** SD1.5's scheduler/scheduler_config.json, verbatim (a PNDMScheduler config, as the hub ships it). */
export const SD15_PNDM = {
  _class_name: "PNDMScheduler", _diffusers_version: "0.6.0", beta_end: 0.012, beta_schedule: "scaled_linear",
  beta_start: 0.00085, num_train_timesteps: 1000, set_alpha_to_one: false, skip_prk_steps: true, steps_offset: 1,
  trained_betas: null, clip_sample: false,
};
