"""ComfyUI's euler + normal as a diffusers scheduler, written out in the tests from ComfyUI's rules
(not Loom's code), so a diffusers pipeline loaded from the same files samples as ComfyUI's KSampler:
the sigma table from float64 betas; sigmas at timesteps evenly spaced from 999 to 0 (log-linear
between table entries), then 0; the UNet fed x / sqrt(sigma^2 + 1) at the nearest training timestep;
the noise scaled by sqrt(1 + sigma_0^2) (sigma_0 is the table's top); Euler steps on the denoised
latents. The pipeline parity tests of ComfyUI workflows compare against a pipeline that has it."""
from __future__ import annotations

import math

import torch


class ComfyEulerScheduler:
    order = 1

    def __init__(self, config):
        self.config = config
        betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, config["num_train_timesteps"],
                               dtype=torch.float64) ** 2
        abar = torch.cumprod(1 - betas, 0)
        self.table = (((1 - abar) / abar) ** 0.5).float()
        self.prediction = config.get("prediction_type", "epsilon")

    def set_timesteps(self, num_inference_steps, device=None, **_):
        log_table = self.table.log()
        t = torch.linspace(len(self.table) - 1, 0, num_inference_steps)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        sigmas = ((1 - w) * log_table[low] + w * log_table[high]).exp()
        self.sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
        nearest = (self.sigmas[:-1].log()[None, :] - log_table[:, None]).abs().argmin(dim=0)
        self.timesteps = nearest.float().to(device)
        self.init_noise_sigma = math.sqrt(1.0 + float(self.sigmas[0]) ** 2)
        self.index = 0

    def set_begin_index(self, index: int = 0):
        self.index = index

    def scale_model_input(self, sample, timestep=None):
        return sample / (self.sigmas[self.index] ** 2 + 1) ** 0.5

    def step(self, model_output, timestep, sample, return_dict=False, **_):
        s, s_next = self.sigmas[self.index], self.sigmas[self.index + 1]
        if self.prediction == "v_prediction":
            denoised = sample / (s ** 2 + 1) - model_output * s / (s ** 2 + 1) ** 0.5
        else:
            denoised = sample - model_output * s
        self.index += 1
        return (sample + (sample - denoised) / s * (s_next - s),)
