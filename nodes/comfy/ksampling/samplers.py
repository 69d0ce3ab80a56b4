"""ComfyUI's samplers as plain functions with k-diffusion's signature:

    sample_<name>(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **options)

`model(x, sigma_batch, **extra_args)` returns the denoised latents; `x` starts at noise scaled to
sigmas[0]; `sigmas` descend (0 last for a full run). `extra_args["seed"]` seeds the step noise as
ComfyUI does when no `noise_sampler` is given: ancestral samplers (and the other samplers that add
fresh noise) a new generator seeded with it, SDE samplers (dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde and
their _gpu/_heun forms) a Brownian tree seeded with it. `callback({"x", "i", "sigma", "sigma_hat",
"denoised"})` once per step. The maths is that of SD-family (epsilon and v) models, whose alpha is 1
in this form: half-log-SNR lambda = -log sigma. CFG++ samplers (*_cfg_pp) read the negative
prediction from `model.uncond_denoised` (nodes.comfy.ksampling.denoiser.Denoiser).

SAMPLERS maps every ComfyUI sampler name Loom runs to its function; UNAVAILABLE lists ComfyUI's
other names, refused by name.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .noise import BrownianTreeNoiseSampler, default_noise_sampler


# --- shared pieces -----------------------------------------------------------------------------

def to_d(x, sigma, denoised):
    """The probability-flow ODE's derivative dx/dsigma."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from, sigma_to, eta=1.0):
    """(sigma_down, sigma_up): the deterministic step's target and the fresh noise's scale."""
    if not eta:
        return sigma_to, 0.0
    up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    return (sigma_to ** 2 - up ** 2) ** 0.5, up


def _lam(sigma):
    """Half-log-SNR of a sigma (alpha = 1)."""
    return sigma.log().neg()


def _sigma(lam):
    return lam.neg().exp()


def _args(extra_args):
    return {} if extra_args is None else extra_args


def _seeded(x, extra_args, noise_sampler):
    return noise_sampler or default_noise_sampler(x, seed=extra_args.get("seed"))


def _tree(x, sigmas, extra_args, noise_sampler, cpu=True):
    if noise_sampler is not None:
        return noise_sampler
    positive = sigmas[sigmas > 0]
    return BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=extra_args.get("seed"), cpu=cpu)


def _report(callback, x, i, sigma, denoised, sigma_hat=None):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma if sigma_hat is None else sigma_hat,
                  "denoised": denoised})


def _is_flow(model) -> bool:
    """Whether the denoiser is a flow-matching model (ComfyUI's CONST sampling): ancestral samplers
    then take ComfyUI's rectified-flow steps (x at sigma is (1 - sigma) * x0 + sigma * noise)."""
    return getattr(getattr(model, "ms", None), "prediction", None) in ("flow", "img_to_img_velocity")


def _rf_step(sigma, sigma_next, eta):
    """(sigma_down, the factor x is scaled by after the step, the fresh noise's scale) of an
    ancestral step on a flow model: the step goes to sigma_down, then x is rescaled to the signal
    level of sigma_next and noise makes up the rest."""
    down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    alpha_next, alpha_down = 1 - sigma_next, 1 - down
    renoise = (sigma_next ** 2 - down ** 2 * alpha_next ** 2 / alpha_down ** 2) ** 0.5
    return down, alpha_next / alpha_down, renoise


def _uncond(model):
    uncond = getattr(model, "uncond_denoised", None)
    if uncond is None:
        raise ValueError("CFG++ samplers need the negative prediction: give the sampler a negative conditioning")
    return uncond


# --- first-order and Runge-Kutta samplers ------------------------------------------------------

@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    extra_args = _args(extra_args)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                           eta=1.0, s_noise=1.0):
    extra_args = _args(extra_args)
    if _is_flow(model):
        return _euler_ancestral_rf(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise)
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], denoised)
        if down == 0:
            x = denoised
        else:
            x = x + to_d(x, sigmas[i], denoised) * (down - sigmas[i])
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    extra_args = _args(extra_args)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        _report(callback, x, i, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
            continue
        x_next = x + d * dt
        d_next = to_d(x_next, sigmas[i + 1], model(x_next, sigmas[i + 1] * ones, **extra_args))
        x = x + (d + d_next) / 2 * dt
    return x


@torch.no_grad()
def sample_heunpp2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Heun++: up to three slopes per step, weighted by their sigmas relative to the first sigma."""
    extra_args = _args(extra_args)
    ones = x.new_ones([x.shape[0]])
    last = sigmas[-1]
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        _report(callback, x, i, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == last:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * ones, **extra_args))
        if sigmas[i + 2] == last:
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
            continue
        x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
        d_3 = to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2] * ones, **extra_args))
        w2, w3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
        x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DPM-Solver-2 style: the slope at the log-midpoint of each step."""
    extra_args = _args(extra_args)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
            continue
        mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
        x_mid = x + d * (mid - sigmas[i])
        d_mid = to_d(x_mid, mid, model(x_mid, mid * ones, **extra_args))
        x = x + d_mid * (sigmas[i + 1] - sigmas[i])
    return x


def _euler_ancestral_rf(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise):
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        down, rescale, renoise = _rf_step(sigmas[i], sigmas[i + 1], eta)
        ratio = down / sigmas[i]
        x = ratio * x + (1 - ratio) * denoised
        if eta > 0:
            x = rescale * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                           eta=1.0, s_noise=1.0):
    extra_args = _args(extra_args)
    if _is_flow(model):
        return _dpm_2_ancestral_rf(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise)
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if down == 0:
            x = x + d * (down - sigmas[i])
            continue
        mid = sigmas[i].log().lerp(down.log(), 0.5).exp()
        x_mid = x + d * (mid - sigmas[i])
        d_mid = to_d(x_mid, mid, model(x_mid, mid * ones, **extra_args))
        x = x + d_mid * (down - sigmas[i])
        x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def _dpm_2_ancestral_rf(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise):
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        down, rescale, renoise = _rf_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if down == 0:
            x = x + d * (down - sigmas[i])
            continue
        mid = sigmas[i].log().lerp(down.log(), 0.5).exp()
        x_mid = x + d * (mid - sigmas[i])
        d_mid = to_d(x_mid, mid, model(x_mid, mid * ones, **extra_args))
        x = x + d_mid * (down - sigmas[i])
        x = rescale * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


# --- linear multistep --------------------------------------------------------------------------

def lms_coefficient(order: int, t, i: int, j: int) -> float:
    """Integral over [t[i], t[i+1]] of the Lagrange basis polynomial of node t[i-j] among t[i-order+1..i]
    (exactly, as a polynomial: what a quadrature of this cubic at most gives)."""
    nodes = [float(t[i - k]) for k in range(order)]
    basis = np.polynomial.Polynomial([1.0])
    for k, node in enumerate(nodes):
        if k != j:
            basis = basis * np.polynomial.Polynomial([-node, 1.0]) / (nodes[j] - node)
    antiderivative = basis.integ()
    return float(antiderivative(float(t[i + 1])) - antiderivative(float(t[i])))


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, order=4):
    extra_args = _args(extra_args)
    ones = x.new_ones([x.shape[0]])
    values = sigmas.detach().cpu().double().numpy()
    slopes = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        slopes = (slopes + [to_d(x, sigmas[i], denoised)])[-order:]
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        used = min(i + 1, order)
        x = x + sum(lms_coefficient(used, values, i, j) * d for j, d in enumerate(reversed(slopes)))
    return x


@torch.no_grad()
def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, max_order=4):
    """Improved PNDM: Adams-Bashforth on the ODE slope with fixed weights, up to fourth order."""
    weights = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    return _adams(model, x, sigmas, _args(extra_args), callback, max_order, lambda i, n: weights[n])


@torch.no_grad()
def sample_ipndm_v(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                   max_order=4):
    """iPNDM with weights for variable step sizes."""
    return _adams(model, x, sigmas, _args(extra_args), callback, max_order, lambda i, n: _ipndm_v_weights(sigmas, i, n))


def _adams(model, x, sigmas, extra_args, callback, max_order, weights_of):
    ones = x.new_ones([x.shape[0]])
    history = []  # the latest slope last
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x_next = denoised
        else:
            order = min(max_order, i + 1)
            slopes = [d] + history[::-1][:order - 1]
            x_next = x + (sigmas[i + 1] - sigmas[i]) * sum(w * s for w, s in zip(weights_of(i, order), slopes))
        history = (history + [d])[-(max_order - 1):] if max_order > 1 else []
        x = x_next
    return x


def _ipndm_v_weights(t, i, order):
    if order == 1:
        return [1.0]
    h0 = t[i + 1] - t[i]
    h1 = t[i] - t[i - 1]
    if order == 2:
        return [(2 + h0 / h1) / 2, -(h0 / h1) / 2]
    h2 = t[i - 1] - t[i - 2]
    a = (1 - h0 / (3 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return [(2 + h0 / h1) / 2 + a, -(h0 / h1) / 2 - (1 + h1 / h2) * a, a * h1 / h2]
    h3 = t[i - 2] - t[i - 3]
    b = ((1 - h0 / (3 * (h0 + h1))) / 2 + (1 - h0 / (2 * (h0 + h1))) * h0 / (6 * (h0 + h1 + h2))) \
        * (h0 * (h0 + h1) * (h0 + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return [(2 + h0 / h1) / 2 + a + b,
            -(h0 / h1) / 2 - (1 + h1 / h2) * a - (1 + h1 / h2 + q) * b,
            a * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * b,
            -b * q * h1 / h2]


def deis_coefficients(sigmas, max_order: int, points: int = 10000) -> list[list[float]]:
    """DEIS ("tab"): per step, the weights of the current and previous slopes: the integral over the
    step, in the VP time of EDM's default range (sigma 0.002..80), of the exponential integrator's
    integrand times each slope's Lagrange polynomial, as a Riemann sum over `points` evenly spaced
    times (both ends included), as ComfyUI computes it."""
    sigma = torch.as_tensor(sigmas).detach().cpu().double()
    eps_s, lo, hi = 1e-3, 0.002, 80.0
    beta_d = 2 * (math.log(lo ** 2 + 1) / eps_s - math.log(hi ** 2 + 1)) / (eps_s - 1)
    beta_min = math.log(hi ** 2 + 1) - 0.5 * beta_d
    t = ((beta_min ** 2 + 2 * beta_d * (sigma ** 2 + 1).log()).sqrt() - beta_min) / beta_d
    beta_0, beta_1 = beta_min, beta_d + beta_min
    out = []
    for i in range(len(t) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            out.append([])
            continue
        taus = torch.linspace(float(t[i]), float(t[i + 1]), points, dtype=torch.float64)
        step = (t[i + 1] - t[i]) / points
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        integrand = 0.5 * (taus * (beta_1 - beta_0) + beta_0) / torch.sqrt(alpha * (1 - alpha))
        nodes = [t[i - k] for k in range(order)]
        row = []
        for j in range(order):
            poly = torch.ones_like(taus)
            for k, node in enumerate(nodes):
                if k != j:
                    poly = poly * (taus - node) / (nodes[j] - node)
            row.append(float(torch.sum(integrand * poly) * step))
        out.append(row)
    return out


@torch.no_grad()
def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, max_order=3):
    """DEIS (arXiv 2204.13902), tabulated coefficients, up to third order."""
    extra_args = _args(extra_args)
    ones = x.new_ones([x.shape[0]])
    weights = deis_coefficients(sigmas, max_order)
    history = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        order = 1 if sigmas[i + 1] <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x + (sigmas[i + 1] - sigmas[i]) * d
        else:
            slopes = [d] + history[::-1][:order - 1]
            x_next = x + sum(w * slope for w, slope in zip(weights[i], slopes))
        history = (history + [d])[-(max_order - 1):] if max_order > 1 else []
        x = x_next
    return x


# --- DPM-Solver (fast and adaptive) ---------------------------------------------------------------

class _DPMSolver:
    """DPM-Solver-1/2/3 steps in t = -log sigma on the noise prediction (arXiv 2206.00927)."""

    def __init__(self, model, extra_args, callback):
        self.model, self.extra_args, self.callback = model, extra_args, callback

    @staticmethod
    def t(sigma):
        return sigma.log().neg()

    @staticmethod
    def sigma(t):
        return t.neg().exp()

    def eps(self, cache, key, x, t):
        if key not in cache:
            ones = x.new_ones([x.shape[0]])
            cache[key] = (x - self.model(x, self.sigma(t) * ones, **self.extra_args)) / self.sigma(t)
        return cache[key]

    def first(self, x, t, t_next, cache):
        return x - self.sigma(t_next) * (t_next - t).expm1() * self.eps(cache, "eps", x, t)

    def second(self, x, t, t_next, cache, r1=1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def third(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = x - self.sigma(s2) * (r2 * h).expm1() * eps \
            - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def report(self, x, i, t, cache):
        denoised = x - self.sigma(t) * cache["eps"]
        if self.callback is not None:
            self.callback({"x": x, "i": i, "sigma": self.sigma(t), "sigma_hat": self.sigma(t), "denoised": denoised})


def _dpm_range(sigmas):
    """DPM-Solver's (sigma_min, sigma_max) for a schedule: a final 0 is replaced by the level before it."""
    low = sigmas[-1] if sigmas[-1] != 0 else sigmas[-2]
    return low, sigmas[0]


@torch.no_grad()
def sample_dpm_fast(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                    eta=0.0, s_noise=1.0):
    """DPM-Solver-Fast: len(sigmas) - 1 model calls in third-order steps evenly spaced in log sigma
    between the schedule's ends (only the ends of `sigmas` are used)."""
    if len(sigmas) <= 1:
        return x
    extra_args = _args(extra_args)
    noise = _seeded(x, extra_args, noise_sampler)
    solver = _DPMSolver(model, extra_args, callback)
    low, high = _dpm_range(sigmas)
    t_start, t_end = solver.t(torch.as_tensor(high)), solver.t(torch.as_tensor(low))
    calls = len(sigmas) - 1
    m = calls // 3 + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if calls % 3 == 0 else [3] * (m - 1) + [calls % 3]
    for i, order in enumerate(orders):
        cache = {}
        t, t_next = ts[i], ts[i + 1]
        target, up = t_next, 0.0
        if eta:
            down, up = ancestral_step(solver.sigma(t), solver.sigma(t_next), eta)
            target = torch.minimum(t_end.to(x.device), solver.t(down))
            up = (solver.sigma(t_next) ** 2 - solver.sigma(target) ** 2) ** 0.5
        solver.eps(cache, "eps", x, t)
        solver.report(x, i, t, cache)
        x = (solver.first, solver.second, solver.third)[order - 1](x, t, target, cache)
        x = x + up * s_noise * noise(solver.sigma(t), solver.sigma(t_next))
    return x


class _StepController:
    """A PID controller of the adaptive step size (in t), accepting steps whose factor clears a safety margin."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order, accept_safety, eps=1e-8):
        self.h, self.accept_safety, self.eps = h, accept_safety, eps
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.errors = []

    def propose(self, error) -> bool:
        inverse = 1 / (float(error) + self.eps)
        if not self.errors:
            self.errors = [inverse] * 3
        self.errors[0] = inverse
        factor = self.errors[0] ** self.b1 * self.errors[1] ** self.b2 * self.errors[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errors[2], self.errors[1] = self.errors[1], self.errors[0]
        self.h *= factor
        return accept


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                        order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0,
                        accept_safety=0.81, eta=0.0, s_noise=1.0):
    """DPM-Solver-12/23 with an adaptive step size between the schedule's ends (only they are used)."""
    if len(sigmas) <= 1:
        return x
    if order not in (2, 3):
        raise ValueError("order should be 2 or 3")
    extra_args = _args(extra_args)
    noise = _seeded(x, extra_args, noise_sampler)
    solver = _DPMSolver(model, extra_args, callback)
    low, high = _dpm_range(sigmas)
    s, t_end = solver.t(torch.as_tensor(high)), solver.t(torch.as_tensor(low))
    atol, rtol = torch.tensor(atol), torch.tensor(rtol)
    controller = _StepController(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    x_prev, steps = x, 0
    while s < t_end - 1e-5:
        cache = {}
        t = torch.minimum(t_end, s + controller.h)
        target, up = t, 0.0
        if eta:
            down, up = ancestral_step(solver.sigma(s), solver.sigma(t), eta)
            target = torch.minimum(t_end, solver.t(down))
            up = (solver.sigma(t) ** 2 - solver.sigma(target) ** 2) ** 0.5
        denoised = x - solver.sigma(s) * solver.eps(cache, "eps", x, s)
        if order == 2:
            x_low, x_high = solver.first(x, s, target, cache), solver.second(x, s, target, cache)
        else:
            x_low, x_high = solver.second(x, s, target, cache, r1=1 / 3), solver.third(x, s, target, cache)
        delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if controller.propose(error):
            x_prev = x_low
            x = x_high + up * s_noise * noise(solver.sigma(s), solver.sigma(t))
            s = t
        _report(callback, x, steps, solver.sigma(s), denoised)
        steps += 1
    return x


# --- UniPC ----------------------------------------------------------------------------------------

def _vp_log_alpha(sigma):
    return 0.5 * torch.log(1 / (sigma * sigma + 1))


def _vp_std(sigma):
    return torch.sqrt(1.0 - torch.exp(2.0 * _vp_log_alpha(sigma)))


def _vp_lambda(sigma):
    log_alpha = _vp_log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def _expand(v, x):
    return v[(...,) + (None,) * (x.ndim - 1)]


@torch.no_grad()
def sample_uni_pc(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                  variant="bh1"):
    """UniPC (arXiv 2302.04867): multistep predictor-corrector on data predictions, up to third order,
    in the variance-preserving form x / sqrt(1 + sigma^2); a last sigma of 0 is taken as 0.001."""
    extra_args = _args(extra_args)
    times = sigmas.clone()
    if times[-1] == 0:
        times[-1] = 0.001
    steps = len(times) - 1
    order = min(3, len(times) - 2)
    x = x / torch.sqrt(1.0 + times[0] ** 2.0)

    def data(x_vp, t):
        scaled = x_vp * _expand((t ** 2 + 1.0) ** 0.5, x_vp)
        eps = (scaled - model(scaled, t, **extra_args)) / _expand(t, x_vp)
        return (x_vp - _expand(_vp_std(t), x_vp) * eps) / _expand(torch.exp(_vp_log_alpha(t)), x_vp)

    def update(x, models, times_prev, t, step_order, corrector):
        lam_0, lam_t = _vp_lambda(times_prev[-1]), _vp_lambda(t)
        model_0 = models[-1]
        ratio = _vp_std(t) / _vp_std(times_prev[-1])
        alpha_t = torch.exp(_vp_log_alpha(t))
        h = lam_t - lam_0
        rks, diffs = [], []
        for i in range(1, step_order):
            rk = ((_vp_lambda(times_prev[-(i + 1)]) - lam_0) / h)[0]
            rks.append(rk)
            diffs.append((models[-(i + 1)] - model_0) / rk)
        rks = torch.tensor([*[float(r) for r in rks], 1.0], device=x.device)
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        scale = hh if variant == "bh1" else torch.expm1(hh)
        rows, b, factorial = [], [], 1
        for i in range(1, step_order + 1):
            rows.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial / scale)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        R, b = torch.stack(rows), torch.tensor([float(v) for v in b], device=x.device)
        base = _expand(ratio, x) * x - _expand(alpha_t * h_phi_1, x) * model_0
        stacked = torch.stack(diffs, dim=1) if diffs else None
        predicted = 0
        if stacked is not None:
            rhos_p = torch.tensor([0.5], device=x.device) if step_order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
            predicted = torch.tensordot(stacked, rhos_p, dims=([1], [0]))
        x_t = base - _expand(alpha_t * scale, x) * predicted
        if not corrector:
            return x_t, None
        rhos_c = torch.tensor([0.5], device=x.device) if step_order == 1 else torch.linalg.solve(R, b)
        model_t = data(x_t, t)
        corrected = torch.tensordot(stacked, rhos_c[:-1], dims=([1], [0])) if stacked is not None else 0
        x_t = base - _expand(alpha_t * scale, x) * (corrected + rhos_c[-1] * (model_t - model_0))
        return x_t, model_t

    batch = x.shape[0]
    models, times_prev = [], []
    for index in range(steps):
        if index == 0:
            t = times[0].expand(batch)
            models, times_prev = [data(x, t)], [t]
        elif index < order:
            t = times[index].expand(batch)
            x, model_x = update(x, models, times_prev, t, index, True)
            models.append(model_x if model_x is not None else data(x, t))
            times_prev.append(t)
        else:
            for step in range(index, index + 1 + (1 if index == steps - 1 else 0)):
                t = times[step].expand(batch)
                step_order = min(order, steps + 1 - step)
                x, model_x = update(x, models, times_prev, t, step_order, step != steps)
                models, times_prev = models[1:] + models[-1:], times_prev[1:] + [t]
                if step < steps:
                    models[-1] = model_x if model_x is not None else data(x, t)
        if callback is not None:
            callback({"x": x, "i": index, "sigma": sigmas[index], "sigma_hat": sigmas[index], "denoised": models[-1]})
    return x / torch.exp(_vp_log_alpha(times[-1]))


def sample_uni_pc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    return sample_uni_pc(model, x, sigmas, extra_args, callback, disable, noise_sampler, variant="bh2")


# --- DPM-Solver++ family -----------------------------------------------------------------------

@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                              eta=1.0, s_noise=1.0):
    extra_args = _args(extra_args)
    if _is_flow(model):
        return _dpmpp_2s_ancestral_rf(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise)
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], denoised)
        if down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (down - sigmas[i])
        else:
            t, t_next = _lam(sigmas[i]), _lam(down)
            h = t_next - t
            s = t + h / 2
            x_mid = (_sigma(s) / _sigma(t)) * x - (-h / 2).expm1() * denoised
            denoised_mid = model(x_mid, _sigma(s) * ones, **extra_args)
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_mid
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def _dpmpp_2s_ancestral_rf(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise):
    """DPM-Solver++(2S) in the flow's half-log-SNR log((1 - sigma) / sigma); the midpoint of a start
    at sigma 1 (where that is -inf) is sigma 0.9999, as ComfyUI takes it."""
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        down, rescale, renoise = _rf_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (down - sigmas[i])
        else:
            if sigmas[i] == 1.0:
                sigma_s = 0.9999
            else:
                t, t_down = ((1 - sigmas[i]) / sigmas[i]).log(), ((1 - down) / down).log()
                sigma_s = ((t + (t_down - t) / 2).exp() + 1) ** -1
            ratio = sigma_s / sigmas[i]
            denoised_s = model(ratio * x + (1 - ratio) * denoised, sigma_s * ones, **extra_args)
            ratio = down / sigmas[i]
            x = ratio * x + (1 - ratio) * denoised_s
        if sigmas[i + 1] > 0 and eta > 0:
            x = rescale * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                     eta=1.0, s_noise=1.0, r=1 / 2, cpu_tree=True):
    """DPM-Solver++ (stochastic): two stages per step, Brownian-tree noise."""
    if len(sigmas) <= 1:
        return x
    extra_args = _args(extra_args)
    noise = _tree(x, sigmas, extra_args, noise_sampler, cpu_tree)
    if _is_flow(model):
        return _dpmpp_sde_flow(model, x, _offset_first_sigma(model, sigmas), extra_args, callback, noise, eta, s_noise, r)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lam_s, lam_t = _lam(sigmas[i]), _lam(sigmas[i + 1])
        lam_mid = lam_s + r * (lam_t - lam_s)
        sigma_mid = _sigma(lam_mid)
        down, up = ancestral_step(_sigma(lam_s), _sigma(lam_mid), eta)
        x_mid = (down / sigmas[i]) * x - (lam_s - _lam(down)).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_mid = x_mid + noise(sigmas[i], sigma_mid) * s_noise * up
        denoised_mid = model(x_mid, sigma_mid * ones, **extra_args)
        down, up = ancestral_step(_sigma(lam_s), _sigma(lam_t), eta)
        mixed = (1 - 1 / (2 * r)) * denoised + 1 / (2 * r) * denoised_mid
        x = (down / sigmas[i]) * x - (lam_s - _lam(down)).expm1() * mixed
        if eta > 0 and s_noise > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    extra_args = _args(extra_args)
    ones = x.new_ones([x.shape[0]])
    previous = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        t, t_next = _lam(sigmas[i]), _lam(sigmas[i + 1])
        h = t_next - t
        mixed = denoised
        if previous is not None and sigmas[i + 1] != 0:
            r = (t - _lam(sigmas[i - 1])) / h
            mixed = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * mixed
        previous = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                        eta=1.0, s_noise=1.0, solver_type="midpoint", cpu_tree=True):
    if len(sigmas) <= 1:
        return x
    if solver_type not in ("heun", "midpoint"):
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    extra_args = _args(extra_args)
    noise = _tree(x, sigmas, extra_args, noise_sampler, cpu_tree)
    if _is_flow(model):
        return _dpmpp_2m_sde_flow(model, x, _offset_first_sigma(model, sigmas), extra_args, callback, noise, eta,
                                  s_noise, solver_type)
    ones = x.new_ones([x.shape[0]])
    previous, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _lam(sigmas[i + 1]) - _lam(sigmas[i])
            h_eta = h * (eta + 1)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - (-h_eta).expm1() * denoised
            if previous is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - previous)
                else:
                    x = x - 0.5 * (-h_eta).expm1() * (1 / r) * (denoised - previous)
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        previous, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                        eta=1.0, s_noise=1.0, cpu_tree=True):
    if len(sigmas) <= 1:
        return x
    extra_args = _args(extra_args)
    noise = _tree(x, sigmas, extra_args, noise_sampler, cpu_tree)
    flow = _is_flow(model)  # ComfyUI's CONST models: the flow's log-SNR, denoised terms times alpha
    lam = _flow_lam if flow else _lam
    if flow:
        sigmas = _offset_first_sigma(model, sigmas)
    ones = x.new_ones([x.shape[0]])
    d1_prev = d2_prev = None
    h = h1 = h2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_next = lam(sigmas[i + 1])
            h = lam_next - lam(sigmas[i])
            h_eta = h * (eta + 1)
            alpha = sigmas[i + 1] * lam_next.exp() if flow else 1.0
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha * (-h_eta).expm1() * denoised
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h2 is not None:
                r0, r1 = h1 / h, h2 / h
                slope_0 = (denoised - d1_prev) / r0
                slope_1 = (d1_prev - d2_prev) / r1
                first = slope_0 + (slope_0 - slope_1) * r0 / (r0 + r1)
                second = (slope_0 - slope_1) / (r0 + r1)
                x = x + (alpha * phi_2) * first - (alpha * (phi_2 / h_eta - 0.5)) * second
            elif h1 is not None:
                x = x + (alpha * phi_2) * (denoised - d1_prev) / (h1 / h)
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        d1_prev, d2_prev = denoised, d1_prev
        h1, h2 = h, h1
    return x


def _flow_lam(sigma):
    """Half-log-SNR of a flow model's sigma: log((1 - sigma) / sigma)."""
    return sigma.logit().neg()


def _offset_first_sigma(model, sigmas):
    """A flow schedule starting at sigma 1 (log-SNR -inf) starts at the sigma of 0.01% instead (ComfyUI's)."""
    if len(sigmas) > 1 and sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = model.ms.percent_to_sigma(1e-4)
    return sigmas


def _dpmpp_2m_sde_flow(model, x, sigmas, extra_args, callback, noise, eta, s_noise, solver_type):
    """DPM-Solver++(2M) SDE in the flow's log-SNR, the denoised terms scaled by alpha = 1 - sigma_next."""
    ones = x.new_ones([x.shape[0]])
    previous, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_next = _flow_lam(sigmas[i + 1])
            h = lam_next - _flow_lam(sigmas[i])
            h_eta = h * (eta + 1)
            alpha = sigmas[i + 1] * lam_next.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha * (-h_eta).expm1().neg() * denoised
            if previous is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - previous)
                else:
                    x = x + 0.5 * alpha * (-h_eta).expm1().neg() * (1 / r) * (denoised - previous)
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        previous, h_last = denoised, h
    return x


def _dpmpp_sde_flow(model, x, sigmas, extra_args, callback, noise, eta, s_noise, r):
    """DPM-Solver++ (stochastic) in the flow's log-SNR: each stage scales x by the ratio of the signal
    levels alpha = sigma * exp(lambda) and its noise by the target's alpha (ComfyUI's general form)."""
    ones = x.new_ones([x.shape[0]])
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lam_s, lam_t = _flow_lam(sigmas[i]), _flow_lam(sigmas[i + 1])
        lam_mid = lam_s + r * (lam_t - lam_s)
        sigma_mid = lam_mid.neg().sigmoid()
        alpha_s, alpha_mid, alpha_t = sigmas[i] * lam_s.exp(), sigma_mid * lam_mid.exp(), sigmas[i + 1] * lam_t.exp()
        down, up = ancestral_step(lam_s.neg().exp(), lam_mid.neg().exp(), eta)
        h = down.log().neg() - lam_s
        x_mid = (alpha_mid / alpha_s) * (-h).exp() * x - alpha_mid * (-h).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_mid = x_mid + alpha_mid * noise(sigmas[i], sigma_mid) * s_noise * up
        denoised_mid = model(x_mid, sigma_mid * ones, **extra_args)
        down, up = ancestral_step(lam_s.neg().exp(), lam_t.neg().exp(), eta)
        h = down.log().neg() - lam_s
        mixed = (1 - fac) * denoised + fac * denoised_mid
        x = (alpha_t / alpha_s) * (-h).exp() * x - alpha_t * (-h).expm1() * mixed
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def _on_device_tree(fn, **fixed):
    """The _gpu form of an SDE sampler: its Brownian tree lives on the latents' device."""
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **options):
        return fn(model, x, sigmas, extra_args, callback, disable, noise_sampler, **{**fixed, **options},
                  cpu_tree=False)
    sample.__name__ = fn.__name__ + "_gpu"
    return sample


def sample_dpmpp_2m_sde_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                             eta=1.0, s_noise=1.0, cpu_tree=True):
    return sample_dpmpp_2m_sde(model, x, sigmas, extra_args, callback, disable, noise_sampler, eta=eta,
                               s_noise=s_noise, solver_type="heun", cpu_tree=cpu_tree)


# --- samplers that re-noise --------------------------------------------------------------------

@torch.no_grad()
def sample_ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DDPM's ancestral step, taken in the variance-preserving form x / sqrt(1 + sigma^2)."""
    extra_args = _args(extra_args)
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones, **extra_args)
        _report(callback, x, i, sigma, denoised)
        eps = (x - denoised) / sigma
        vp = x / torch.sqrt(1.0 + sigma ** 2.0)
        abar, abar_next = 1 / (sigma * sigma + 1), 1 / (sigma_next * sigma_next + 1)
        alpha = abar / abar_next
        x = (1.0 / alpha).sqrt() * (vp - (1 - alpha) * eps / (1 - abar).sqrt())
        if sigma_next > 0:
            x = x + ((1 - alpha) * (1.0 - abar_next) / (1.0 - abar)).sqrt() * noise(sigma, sigma_next)
            x = x * torch.sqrt(1.0 + sigma_next ** 2.0)
    return x


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Latent consistency: jump to the prediction, then noise it to the next level."""
    extra_args = _args(extra_args)
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            ms = getattr(model, "ms", None)  # the model's noising rule (a bare denoiser function: x0 + sigma * noise)
            fresh = noise(sigmas[i], sigmas[i + 1])
            x = fresh * sigmas[i + 1] + x if ms is None else ms.noise_scaling(sigmas[i + 1], fresh, x)
    return x


@torch.no_grad()
def res_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                  s_noise=1.0, eta=1.0, cfg_pp=False):
    """RES second-order multistep (arXiv 2308.02157), with ancestral noise for eta > 0."""
    extra_args = _args(extra_args)
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    old_down = old_denoised = None
    phi1 = lambda t: torch.expm1(t) / t  # noqa: E731
    phi2 = lambda t: (phi1(t) - 1.0) / t  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        uncond = _uncond(model) if cfg_pp else denoised
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], denoised)
        if down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], uncond) * down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = _lam(sigmas[i]), _lam(old_down), _lam(down), _lam(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            b1 = torch.nan_to_num(phi1(-h) - phi2(-h) / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2(-h) / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond)
            x = _sigma(h) * x + h * (b1 * uncond + b2 * old_denoised)
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
        old_denoised, old_down = uncond, down
    return x


def sample_res_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                         s_noise=1.0):
    return res_multistep(model, x, sigmas, extra_args, callback, disable, noise_sampler, s_noise, eta=0.0)


def sample_res_multistep_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                                s_noise=1.0):
    return res_multistep(model, x, sigmas, extra_args, callback, disable, noise_sampler, s_noise, eta=0.0, cfg_pp=True)


def sample_res_multistep_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                   noise_sampler=None, eta=1.0, s_noise=1.0):
    return res_multistep(model, x, sigmas, extra_args, callback, disable, noise_sampler, s_noise, eta=eta)


def sample_res_multistep_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                          noise_sampler=None, eta=1.0, s_noise=1.0):
    return res_multistep(model, x, sigmas, extra_args, callback, disable, noise_sampler, s_noise, eta=eta, cfg_pp=True)


@torch.no_grad()
def sample_gradient_estimation(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                               ge_gamma=2.0, cfg_pp=False):
    """Euler plus a correction from the change of the slope (gradient estimation, gamma = ge_gamma)."""
    extra_args = _args(extra_args)
    ones = x.new_ones([x.shape[0]])
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        d = to_d(x, sigmas[i], _uncond(model) if cfg_pp else denoised)
        _report(callback, x, i, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def sample_gradient_estimation_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                      noise_sampler=None, ge_gamma=2.0):
    return sample_gradient_estimation(model, x, sigmas, extra_args, callback, disable, noise_sampler, ge_gamma,
                                      cfg_pp=True)


# --- CFG++ ---------------------------------------------------------------------------------------

@torch.no_grad()
def sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                  noise_sampler=None, eta=1.0, s_noise=1.0):
    """Euler (ancestral) whose step follows the negative prediction's slope from the guided prediction."""
    extra_args = _args(extra_args)
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        d = to_d(x, sigmas[i], _uncond(model))
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = denoised + down * d
        if eta > 0 and s_noise > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def sample_euler_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args, callback, disable, noise_sampler,
                                         eta=0.0, s_noise=0.0)


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                     noise_sampler=None, eta=1.0, s_noise=1.0):
    extra_args = _args(extra_args)
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        uncond = _uncond(model)
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], denoised)
        if down == 0:
            x = denoised + to_d(x, sigmas[i], uncond) * down
        else:
            t, t_next = _lam(sigmas[i]), _lam(down)
            h = t_next - t
            s = t + h / 2
            x_mid = (_sigma(s) / _sigma(t)) * (x + (denoised - uncond)) - (-h / 2).expm1() * denoised
            denoised_mid = model(x_mid, _sigma(s) * ones, **extra_args)
            # ComfyUI shifts the final update by the negative prediction of the MIDPOINT call
            x = (_sigma(t_next) / _sigma(t)) * (x + (denoised - _uncond(model))) - (-h).expm1() * denoised_mid
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    extra_args = _args(extra_args)
    ones = x.new_ones([x.shape[0]])
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        uncond = _uncond(model)
        _report(callback, x, i, sigmas[i], denoised)
        h = _lam(sigmas[i + 1]) - _lam(sigmas[i])
        mix = -torch.exp(-h) * uncond
        if old_uncond is not None and sigmas[i + 1] != 0:
            r = (_lam(sigmas[i]) - _lam(sigmas[i - 1])) / h
            mix = mix - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


# --- ER-SDE and SEEDS ----------------------------------------------------------------------------

def er_sde_noise_scaler(x):
    """ER-SDE-Solver's default noise scale function."""
    return x * ((x ** 0.3).exp() + 10.0)


@torch.no_grad()
def sample_er_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                  s_noise=1.0, noise_scaler=None, max_stage=3):
    """Extended reverse-time SDE solver, up to three stages (arXiv 2309.06169)."""
    extra_args = _args(extra_args)
    noise = _seeded(x, extra_args, noise_sampler)
    scale = er_sde_noise_scaler if noise_scaler is None else noise_scaler
    ones = x.new_ones([x.shape[0]])
    points = 200.0
    index = torch.arange(0, points, dtype=torch.float32, device=x.device)
    lams = _sigma(_lam(sigmas))  # sigma / alpha (alpha = 1), computed as ComfyUI does
    old_denoised = old_slope = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = lams[i], lams[i + 1]
            r = scale(lam_t) / scale(lam_s)
            x = r * x + (1 - r) * denoised
            if stage >= 2:
                dt = lam_t - lam_s
                step = -dt / points
                positions = lam_t + index * step
                scaled = scale(positions)
                slope = (denoised - old_denoised) / (lam_s - lams[i - 1])
                x = x + (dt + torch.sum(1 / scaled) * step * scale(lam_t)) * slope
                if stage >= 3:
                    integral = torch.sum((positions - lam_s) / scaled) * step
                    curvature = (slope - old_slope) / ((lam_s - lams[i - 2]) / 2)
                    x = x + (dt ** 2 / 2 + integral * scale(lam_t)) * curvature
                old_slope = slope
            if s_noise > 0:
                spread = (lam_t ** 2 - lam_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
                x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * spread
        old_denoised = denoised
    return x


class PowerNoiseScaler:
    """SamplerER_SDE's reverse-time SDE noise scale: x^(eta + 1) (a value, so SAMPLERs compare equal)."""

    def __init__(self, eta: float):
        self.eta = eta

    def __call__(self, x):
        return x ** (self.eta + 1)

    def __eq__(self, other):
        return isinstance(other, PowerNoiseScaler) and other.eta == self.eta

    def __hash__(self):
        return hash(("PowerNoiseScaler", self.eta))


def _phi_1(h):
    return torch.expm1(h)


def _phi_2(h):
    return (torch.expm1(h) - h) / h


@torch.no_grad()
def sample_seeds_2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                   eta=1.0, s_noise=1.0, r=0.5, solver_type="phi_1"):
    """SEEDS-2 (arXiv 2305.14267): a two-stage exponential SDE step; the noise of the two segments is
    correlated as one Brownian path. solver_type "phi_2": the second stage weighs the two predictions
    with phi_1/phi_2 (an exponential Heun step) instead of mixing them."""
    if solver_type not in ("phi_1", "phi_2"):
        raise ValueError("solver_type must be 'phi_1' or 'phi_2'")
    return _seeds(model, x, sigmas, _args(extra_args), callback, noise_sampler, eta, s_noise, (r,), solver_type)


def sample_exp_heun_2_x0(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                         solver_type="phi_2"):
    """Exponential Heun (second order, data prediction, log-SNR time): SEEDS-2 with r = 1, no noise."""
    return sample_seeds_2(model, x, sigmas, extra_args, callback, disable, noise_sampler, eta=0.0, s_noise=0.0,
                          r=1.0, solver_type=solver_type)


def sample_exp_heun_2_x0_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                             eta=1.0, s_noise=1.0, solver_type="phi_2"):
    """The stochastic exponential Heun: SEEDS-2 with r = 1."""
    return sample_seeds_2(model, x, sigmas, extra_args, callback, disable, noise_sampler, eta=eta, s_noise=s_noise,
                          r=1.0, solver_type=solver_type)


@torch.no_grad()
def sample_seeds_3(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                   eta=1.0, s_noise=1.0, r_1=1.0 / 3, r_2=2.0 / 3):
    return _seeds(model, x, sigmas, _args(extra_args), callback, noise_sampler, eta, s_noise, (r_1, r_2))


def _seeds(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise, fractions, solver_type="phi_1"):
    noise = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    inject = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lam_s, lam_t = _lam(sigmas[i]), _lam(sigmas[i + 1])
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        x0 = x
        if len(fractions) == 1:
            r = fractions[0]
            sigma_1 = _sigma(torch.lerp(lam_s, lam_t, r))
            x_1 = sigma_1 / sigmas[i] * (-r * h * eta).exp() * x0 - _phi_1(-r * h_eta) * denoised
            if inject:
                path = (-2 * r * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_1)
                x_1 = x_1 + path * sigma_1 * s_noise
            denoised_1 = model(x_1, sigma_1 * ones, **extra_args)
            if solver_type == "phi_1":
                mixed = torch.lerp(denoised, denoised_1, 1 / (2 * r))
                x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x0 - _phi_1(-h_eta) * mixed
            else:
                b2 = _phi_2(-h_eta) / r
                b1 = _phi_1(-h_eta) - b2
                x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x0 - (b1 * denoised + b2 * denoised_1)
            last_sigma, last_r = sigma_1, r
        else:
            r1, r2 = fractions
            sigma_1, sigma_2 = _sigma(torch.lerp(lam_s, lam_t, r1)), _sigma(torch.lerp(lam_s, lam_t, r2))
            x_1 = sigma_1 / sigmas[i] * (-r1 * h * eta).exp() * x0 - _phi_1(-r1 * h_eta) * denoised
            if inject:
                path = (-2 * r1 * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_1)
                x_1 = x_1 + path * sigma_1 * s_noise
            denoised_1 = model(x_1, sigma_1 * ones, **extra_args)
            a2 = r2 / r1 * _phi_2(-r2 * h_eta)
            a1 = _phi_1(-r2 * h_eta) - a2
            x_2 = sigma_2 / sigmas[i] * (-r2 * h * eta).exp() * x0 - (a1 * denoised + a2 * denoised_1)
            if inject:
                segment = (r1 - r2) * h * eta
                path = path * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise(sigma_1, sigma_2)
                x_2 = x_2 + path * sigma_2 * s_noise
            denoised_2 = model(x_2, sigma_2 * ones, **extra_args)
            b3 = _phi_2(-h_eta) / r2
            b1 = _phi_1(-h_eta) - b3
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x0 - (b1 * denoised + b3 * denoised_2)
            last_sigma, last_r = sigma_2, r2
        if inject:
            segment = (last_r - 1) * h * eta
            path = path * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise(last_sigma, sigmas[i + 1])
            x = x + path * sigmas[i + 1] * s_noise
    return x


# --- SA-Solver ------------------------------------------------------------------------------------

def _sa_exponential_integrals(s, t, order: int, tau: float):
    """(1 + tau^2) * the integrals of exp((1 + tau^2) x) x^p over [s, t] for p < order, with
    exp((1 + tau^2) t) factored out (integration by parts as a lower-triangular recursion)."""
    spread = 1 + tau ** 2
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    ends = t ** p - s ** p * (-spread * (t - s)).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_factorial = (p + 1).lgamma()
    log_coeff = log_factorial.unsqueeze(1) - log_factorial.unsqueeze(0)
    if tau > 0:
        log_coeff = log_coeff - depth * math.log(spread)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (log_coeff.exp() * signs).tril() @ ends


def _sa_weights(sigma_next, lams, lam_s, lam_t, tau: float, simple_order_2: bool, corrector: bool):
    """SA-Solver's b coefficients of the stored predictions (oldest first), eqs. 15 and 18."""
    alpha_t = sigma_next * lam_t.exp()
    if simple_order_2 and lams.shape[0] == 2:
        spread, h = 1 + tau ** 2, lam_t - lam_s
        if corrector:
            b1 = alpha_t * (0.5 * spread * h)
            b2 = alpha_t * (-h * spread).expm1().neg() - b1
        else:
            b2 = alpha_t * (0.5 * spread * h ** 2) / (lams[-2] - lam_s)
            b1 = alpha_t * (-h * spread).expm1().neg() - b2
        return torch.stack([b2, b1])
    integrals = _sa_exponential_integrals(lam_s, lam_t, lams.shape[0], tau)
    lagrange = torch.linalg.solve(torch.vander(lams, lams.shape[0], increasing=True).T, integrals)
    return alpha_t * lagrange


def sa_tau_interval(start_sigma: float, end_sigma: float, eta: float = 1.0):
    """SA-Solver's stochasticity: eta inside [end_sigma, start_sigma], 0 (the ODE) elsewhere."""
    def tau(sigma) -> float:
        if eta <= 0:
            return 0.0
        value = float(sigma)
        return eta if start_sigma >= value >= end_sigma else 0.0
    return tau


@torch.no_grad()
def sample_sa_solver(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                     tau_func=None, s_noise=1.0, predictor_order=3, corrector_order=4, use_pece=False,
                     simple_order_2=False):
    """Stochastic Adams predictor-corrector (arXiv 2309.05019) on data predictions in log-SNR time. By
    default noise is added between 20% and 80% of the model's sigma range (`model.percent_to_sigma`)."""
    if len(sigmas) <= 1:
        return x
    extra_args = _args(extra_args)
    noise_of = _seeded(x, extra_args, noise_sampler)
    ones = x.new_ones([x.shape[0]])
    lams = _lam(sigmas)
    if tau_func is None:
        percent_to_sigma = getattr(model, "percent_to_sigma", None)
        if percent_to_sigma is None:
            raise ValueError("sa_solver needs the model's sigma range (percent_to_sigma) or a tau_func")
        tau_func = sa_tau_interval(percent_to_sigma(0.2), percent_to_sigma(0.8))
    keep = max(predictor_order, corrector_order)
    x_pred, h, tau, noise, preds = x, 0.0, 0.0, 0.0, []
    to_end = sigmas[-1].item() == 0  # lower orders near the end
    for i in range(len(sigmas) - 1):
        denoised = model(x_pred, sigmas[i] * ones, **extra_args)
        _report(callback, x_pred, i, sigmas[i], denoised)
        preds = (preds + [denoised])[-keep:]
        p_order = min(predictor_order, len(preds))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(preds))
        if to_end:
            p_order = min(p_order, len(sigmas) - 2 - i)
            c_order = min(c_order, len(sigmas) - 1 - i)
        if c_order == 0:
            x = x_pred
        else:
            b = _sa_weights(sigmas[i], lams[i - c_order + 1:i + 1], lams[i - 1], lams[i], tau, simple_order_2, True)
            correction = torch.tensordot(torch.stack(preds[-c_order:], dim=1), b, dims=([1], [0]))
            x = sigmas[i] / sigmas[i - 1] * (-(tau ** 2) * h).exp() * x + correction
            if tau > 0 and s_noise > 0:
                x = x + noise  # the previous predictor step's noise
            if use_pece:
                denoised = model(x, sigmas[i] * ones, **extra_args)
                preds[-1] = denoised
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        tau = tau_func(sigmas[i + 1])
        b = _sa_weights(sigmas[i + 1], lams[i - p_order + 1:i + 1], lams[i], lams[i + 1], tau, simple_order_2, False)
        prediction = torch.tensordot(torch.stack(preds[-p_order:], dim=1), b, dims=([1], [0]))
        h = lams[i + 1] - lams[i]
        x_pred = sigmas[i + 1] / sigmas[i] * (-(tau ** 2) * h).exp() * x + prediction
        if tau > 0 and s_noise > 0:
            noise = noise_of(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * tau ** 2 * h).expm1().neg().sqrt() * s_noise
            x_pred = x_pred + noise
    return x


def sample_sa_solver_pece(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                          tau_func=None, s_noise=1.0, predictor_order=3, corrector_order=4, simple_order_2=False):
    """SA-Solver in PECE mode: the corrected state is evaluated again."""
    return sample_sa_solver(model, x, sigmas, extra_args, callback, disable, noise_sampler, tau_func, s_noise,
                            predictor_order, corrector_order, use_pece=True, simple_order_2=simple_order_2)


# --- the names ------------------------------------------------------------------------------------

SAMPLERS = {
    "euler": sample_euler,
    "euler_cfg_pp": sample_euler_cfg_pp,
    "euler_ancestral": sample_euler_ancestral,
    "euler_ancestral_cfg_pp": sample_euler_ancestral_cfg_pp,
    "heun": sample_heun,
    "heunpp2": sample_heunpp2,
    "exp_heun_2_x0": sample_exp_heun_2_x0,
    "exp_heun_2_x0_sde": sample_exp_heun_2_x0_sde,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpm_fast": sample_dpm_fast,
    "dpm_adaptive": sample_dpm_adaptive,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_2s_ancestral_cfg_pp": sample_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_sde_gpu": _on_device_tree(sample_dpmpp_sde),
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_cfg_pp": sample_dpmpp_2m_cfg_pp,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": _on_device_tree(sample_dpmpp_2m_sde),
    "dpmpp_2m_sde_heun": sample_dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": _on_device_tree(sample_dpmpp_2m_sde_heun),
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": _on_device_tree(sample_dpmpp_3m_sde),
    "ddpm": sample_ddpm,
    "lcm": sample_lcm,
    "ipndm": sample_ipndm,
    "ipndm_v": sample_ipndm_v,
    "deis": sample_deis,
    "res_multistep": sample_res_multistep,
    "res_multistep_cfg_pp": sample_res_multistep_cfg_pp,
    "res_multistep_ancestral": sample_res_multistep_ancestral,
    "res_multistep_ancestral_cfg_pp": sample_res_multistep_ancestral_cfg_pp,
    "gradient_estimation": sample_gradient_estimation,
    "gradient_estimation_cfg_pp": sample_gradient_estimation_cfg_pp,
    "er_sde": sample_er_sde,
    "seeds_2": sample_seeds_2,
    "seeds_3": sample_seeds_3,
    "sa_solver": sample_sa_solver,
    "sa_solver_pece": sample_sa_solver_pece,
    # ComfyUI's ddim is the Euler sampler (whatever the scheduler; ddim_uniform is a scheduler).
    "ddim": sample_euler,
    "uni_pc": sample_uni_pc,
    "uni_pc_bh2": sample_uni_pc_bh2,
}
# The samplers whose step reads the negative prediction (ComfyUI computes it even at cfg 1 for them).
# ComfyUI's samplers that step in half-log-SNR, which for a flow model is log((1 - sigma) / sigma)
# with its own noise terms: Loom runs them on discrete models only so far (a flow model is refused).
FLOW_PENDING = ("euler_ancestral_cfg_pp", "er_sde",
                "seeds_2", "seeds_3", "exp_heun_2_x0", "exp_heun_2_x0_sde", "sa_solver", "sa_solver_pece")
NEEDS_UNCOND = {name for name in SAMPLERS if name.endswith("_cfg_pp")}

# ComfyUI's sampler names in its own order, and those Loom does not run (yet).
COMFY_SAMPLER_NAMES = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]
UNAVAILABLE = [name for name in COMFY_SAMPLER_NAMES if name not in SAMPLERS]
