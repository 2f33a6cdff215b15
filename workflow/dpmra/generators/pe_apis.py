"""Private Evolution's APIs: public generators of candidate pairs, with a random draw and a variation.

A population is a float64 array (M, D), one candidate per row. `render` turns rows into labelled pairs on the
training set's scale, `per_candidate` pairs each. Neither API reads private data: the simulator's ranges come from
the public site's table (never site A's or B's), the latent API from the public warm-start generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch

from dpmra.data.patches import INTENSITY_RULES, extract_patches
from dpmra.data.phantom import SITES, Site, make_subject
from dpmra.data.volumes import normalise_intensity
from dpmra.generators.generator import build_generator
from dpmra.shared.devices import default_device


class PeApi(Protocol):
    """What Private Evolution needs from a public generator of candidates."""

    per_candidate: int

    def random(self, m: int, rng: np.random.Generator) -> np.ndarray: ...

    def variation(self, population: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray: ...

    def render(self, population: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]: ...

    def state(self) -> dict: ...


# Simulator parameters, in this order: log in-plane spacing (mm), log vessel contrast, log noise sigma, log bias
# strength, slow-flow signal kept by the thinnest branches, and the seed of the subject's anatomy.
SIMULATOR_PARAMETERS = ("log_spacing_mm", "log_vessel_contrast", "log_noise_sigma", "log_bias_strength", "slow_flow")


@dataclass(frozen=True)
class SimulatorApi:
    """The phantom simulator (Sim-PE): candidates are parameter vectors of a site, rendered into pairs.

    random: each parameter uniform (log scale for the positive ones) within the public site's value divided and
    multiplied by `widen`; slow flow uniform in [1 / widen, 1] (the public site has none). variation: Gaussian
    steps of `scale` times each range's width, clipped to the range, and a new anatomy seed.
    """

    site: str = "C"
    widen: float = 2.0
    patch_size: int = 32
    intensity: str = "volume"
    shape: tuple[int, int, int] = (96, 96, 32)
    per_candidate: int = 32

    def __post_init__(self) -> None:
        if self.site not in SITES or self.widen < 1 or self.per_candidate < 2:
            raise ValueError(f"simulator API: a site of {sorted(SITES)}, widen >= 1, per_candidate >= 2")

    def ranges(self) -> np.ndarray:
        """(5, 2) lower and upper bound of each parameter (log scale for the positive ones)."""
        base = SITES[self.site]
        centre = np.log([base.spacing_mm[0], base.vessel_contrast, base.noise_sigma, base.bias_strength])
        spread = math.log(self.widen)
        positive = np.stack([centre - spread, centre + spread], axis=1)
        return np.vstack([positive, [1.0 / self.widen, 1.0]])

    def random(self, m: int, rng: np.random.Generator) -> np.ndarray:
        low, high = self.ranges().T
        values = rng.uniform(low, high, size=(m, len(low)))
        return np.hstack([values, _anatomy_seeds(m, rng)])

    def variation(self, population: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        low, high = self.ranges().T
        values = population[:, :-1] + scale * (high - low) * rng.standard_normal(population[:, :-1].shape)
        return np.hstack([np.clip(values, low, high), _anatomy_seeds(len(population), rng)])

    def site_of(self, row: np.ndarray) -> Site:
        """The public site's table with one candidate's parameters."""
        base = SITES[self.site]
        spacing, contrast, noise, bias = np.exp(row[:4])
        ratio = spacing / base.spacing_mm[0]
        return replace(
            base,
            spacing_mm=(spacing, spacing, base.spacing_mm[2] * ratio),
            vessel_contrast=float(contrast),
            noise_sigma=float(noise),
            bias_strength=float(bias),
            slow_flow_signal=float(row[4]),
        )

    def render(self, population: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self._render_one(row, rng) for row in population]
        owner = np.repeat(np.arange(len(population)), self.per_candidate)
        return np.concatenate(pairs), owner

    def _render_one(self, row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One candidate's subject, prepared and cut as the real patients are (half vessel-centred)."""
        subject = make_subject(self.site_of(row), int(row[-1]), shape=self.shape)
        image, _ = normalise_intensity(subject.image, subject.brain_mask)
        patches = extract_patches(image, subject.label, subject.brain_mask, self.per_candidate, self.patch_size, rng)
        channel0 = INTENSITY_RULES[self.intensity](patches.image)
        return np.stack([channel0, patches.label.astype(np.float32) * 2 - 1], axis=1)

    def state(self) -> dict:
        return {
            "api": "simulator",
            "site": self.site,
            "widen": self.widen,
            "patch_size": self.patch_size,
            "intensity": self.intensity,
            "shape": list(self.shape),
            "per_candidate": self.per_candidate,
        }


def _anatomy_seeds(m: int, rng: np.random.Generator) -> np.ndarray:
    """A column of anatomy seeds, above the cohorts' subject numbers."""
    return rng.integers(10**6, 2**31, size=(m, 1)).astype(np.float64)


@dataclass(frozen=True)
class LatentApi:
    """The public warm-start generator: candidates are latent vectors z, rendered as G(z).

    random: z ~ N(0, I); variation: z' = sqrt(1 - a^2) z + a e, e ~ N(0, I), a = `scale` (at most 1), so every
    population stays distributed as N(0, I) where the histogram is flat.
    """

    generator: dict
    per_candidate: int = 1

    @property
    def latent_dim(self) -> int:
        return int(self.generator["config"]["latent_dim"])

    def random(self, m: int, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((m, self.latent_dim))

    def variation(self, population: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        a = min(scale, 1.0)
        return math.sqrt(1 - a * a) * population + a * rng.standard_normal(population.shape)

    @torch.no_grad()
    def render(self, population: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        model = build_generator(self.generator["config"], self.generator["state_dict"], default_device())
        device = next(model.parameters()).device
        z = torch.as_tensor(population, dtype=torch.float32)
        pairs = np.concatenate([model(batch.to(device)).cpu().numpy() for batch in z.split(512)])
        return pairs, np.arange(len(population))

    def state(self) -> dict:
        return {"api": "generator", "generator": self.generator}


def build_api(state: dict) -> PeApi:
    """An API rebuilt from its stored state (a release file's `api`)."""
    if state["api"] == "simulator":
        return SimulatorApi(**{**{k: v for k, v in state.items() if k != "api"}, "shape": tuple(state["shape"])})
    if state["api"] == "generator":
        return LatentApi(state["generator"])
    raise ValueError(f"unknown PE API {state['api']!r} (simulator or generator)")


def sample_release(stored: dict, n: int, seed: int) -> np.ndarray:
    """n pairs from a PE release: candidates drawn from the final population, varied at the last round's scale
    (fresh anatomy for the simulator), rendered; deterministic from the seed, post-processing only."""
    api = build_api(stored["api"])
    rng = np.random.default_rng([seed, 0x5E])
    population = torch.as_tensor(stored["population"]).numpy()
    m = math.ceil(n / api.per_candidate)
    rows = api.variation(population[rng.choice(len(population), size=m)], stored["final_scale"], rng)
    pairs, _ = api.render(rows, rng)
    return pairs[rng.permutation(len(pairs))[:n]].astype(np.float32)
