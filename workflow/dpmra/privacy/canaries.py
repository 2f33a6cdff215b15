"""White-box gradient canaries inside the DP engine, for the one-run audit (Steinke, Nasr and Jagielski 2023).

A canary is a privacy unit whose clipped gradient is a fixed random direction u_j of norm C in the critic's
parameter space; each is included independently with probability 1/2 (the inclusion draw is the audit's secret).
Every included canary is Poisson-sampled at each privatised critic update with the run's rate q, and when sampled
its gradient joins the clipped sum before the noise (the same Gaussian draw, the same division by the expected
batch size). A canary's score is the sum over updates of <privatised update added to .grad, u_j>.

The directions are sparse: canary j is +-1/sqrt(s) on its own s = P // m parameters (a random partition, random
signs). They are exactly orthogonal, and storing them, adding a sampled canary and scoring all of them cost O(P)
whatever m; dense random directions would need m x P numbers (1.7 GB for the default critic at m = 1,000). The
canary streams are HMAC-derived seeds of the key and the run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from dpmra.privacy.dpsgd import BookKeepingClipper, ClippedSum, DPGradient
from dpmra.privacy.secret import derive_seed


@dataclasses.dataclass
class GradientCanaries:
    """m white-box canaries: disjoint sparse unit directions in the critic's parameters, each in with prob. 1/2."""

    support: Tensor
    """(m, s) flat indices into the concatenated trainable parameters: canary j's coordinates."""
    signs: Tensor
    """(m, s) +-1: u_j = signs_j / sqrt(s) on support_j."""
    included: Tensor
    """(m,) bool: the audit's secret."""
    norm: float
    """Norm of a sampled canary's gradient: the clipping bound every real unit is held to."""
    sample_rate: float
    sampler: torch.Generator
    shapes: list[torch.Size]
    sampled: Tensor
    """(m,) how many updates each canary was sampled into (diagnostic; the scores never read it)."""
    update_sum: Tensor
    """(P,) float64 sum of the privatised updates the engine added to .grad."""

    @property
    def count(self) -> int:
        return len(self.included)

    def draw(self) -> list[Tensor]:
        """The summed gradients of the included canaries Poisson-sampled for one update, shaped as the parameters."""
        hit = (torch.rand(self.count, generator=self.sampler) < self.sample_rate) & self.included
        self.sampled += hit
        rows = torch.nonzero(hit).flatten().to(self.support.device)
        flat = torch.zeros(self.update_sum.numel(), dtype=self.signs.dtype, device=self.signs.device)
        scale = self.norm / math.sqrt(self.support.shape[1])
        flat[self.support[rows].flatten()] = scale * self.signs[rows].flatten()
        return [part.view(shape) for part, shape in zip(flat.split([s.numel() for s in self.shapes]), self.shapes)]

    def record(self, update: list[Tensor]) -> None:
        """Add one privatised update (per parameter, what was added to .grad) to the running sum."""
        self.update_sum += torch.cat([u.flatten() for u in update]).double()

    def scores(self) -> np.ndarray:
        """(m,) <sum of privatised updates, u_j>: the sum over updates of each update's inner product with u_j."""
        picked = self.update_sum[self.support] * self.signs.double()
        return (picked.sum(dim=1) / math.sqrt(self.support.shape[1])).cpu().numpy()

    def state_dict(self) -> dict:
        """What a resumed audit needs to continue bit-identically (the directions and inclusion follow from the key)."""
        return {
            "count": self.count,
            "sampled": self.sampled,
            "update_sum": self.update_sum.cpu(),
            "sampler": self.sampler.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state written by ``state_dict`` for the same canaries."""
        self.sampled = state["sampled"].clone()
        self.update_sum = state["update_sum"].to(self.update_sum.device)
        self.sampler.set_state(state["sampler"].cpu())


def _stream(key: bytes, run: str, name: str) -> torch.Generator:
    """A CPU generator seeded from the secret key, the run and the stream name."""
    return torch.Generator().manual_seed(derive_seed(key, run, name))


def make_canaries(
    params: list[Tensor], count: int, key: bytes, run: str, sample_rate: float, norm: float
) -> GradientCanaries:
    """m canaries over these parameters: inclusion, directions and sampling from the audit's keyed streams."""
    total = sum(p.numel() for p in params)
    if not 2 <= count <= total:
        raise ValueError(f"canaries must be in 2..{total} (the critic's trainable parameters), got {count}")
    width = total // count
    directions = _stream(key, run, "audit-directions")
    device, dtype = params[0].device, params[0].dtype
    support = torch.randperm(total, generator=directions)[: count * width].view(count, width)
    signs = torch.randint(0, 2, (count, width), generator=directions).to(dtype) * 2 - 1
    included = torch.rand(count, generator=_stream(key, run, "audit-inclusion")) < 0.5
    return GradientCanaries(
        support=support.to(device),
        signs=signs.to(device),
        included=included,
        norm=norm,
        sample_rate=sample_rate,
        sampler=_stream(key, run, "audit-sampler"),
        shapes=[p.shape for p in params],
        sampled=torch.zeros(count, dtype=torch.int64),
        update_sum=torch.zeros(total, dtype=torch.float64, device=device),
    )


class CanaryClipper:
    """The engine's clipper, its clipped sum also holding C u_j of each included canary sampled for the update."""

    def __init__(self, clipper: BookKeepingClipper, canaries: GradientCanaries) -> None:
        self.clipper = clipper
        self.canaries = canaries

    def clipped_grad_sum(
        self, inputs: Tensor, per_sample_loss: Callable[[Tensor], Tensor], group_size: int = 1
    ) -> ClippedSum:
        """The clipped sum of the batch's units plus the sampled canaries' gradients: canaries are units too."""
        result = self.clipper.clipped_grad_sum(inputs, per_sample_loss, group_size)
        extra = self.canaries.draw()
        return dataclasses.replace(result, grads=[g + e for g, e in zip(result.grads, extra)])

    def __getattr__(self, name: str):
        """Everything else (parameters, clipping bound, hooks) is the wrapped clipper's."""
        return getattr(self.clipper, name)


class AuditedGradient:
    """The trainer's own DP engine with canaries in its clipped sums, recording each privatised update it adds."""

    def __init__(self, engine: DPGradient, canaries: GradientCanaries) -> None:
        engine.clipper = CanaryClipper(engine.clipper, canaries)
        self.engine = engine
        self.canaries = canaries

    def accumulate(
        self, inputs: Tensor, per_sample_loss: Callable[[Tensor], Tensor] = lambda out: out, group_size: int = 1
    ) -> ClippedSum:
        """The engine's accumulate, then record what it added to each parameter's .grad."""
        params = self.engine.clipper.params
        before = [None if p.grad is None else p.grad.clone() for p in params]
        result = self.engine.accumulate(inputs, per_sample_loss, group_size)
        self.canaries.record([p.grad if b is None else p.grad - b for p, b in zip(params, before)])
        return result

    def __getattr__(self, name: str):
        """Everything else is the engine's."""
        return getattr(self.engine, name)
