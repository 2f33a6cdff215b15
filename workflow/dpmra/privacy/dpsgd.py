"""DP-SGD gradients: per-sample clipping by book-keeping, then one Gaussian noise draw.

One file on purpose (a little over 400 lines): the engine's sensitivity argument (per-layer norms, float64 sums,
the clipping bound, the noise) reads in one place.

Why hand-written rather than Opacus: on this CPU (paper critic, batch 32) Opacus' hooks
cost 3.5x a non-private critic update, expanded weights 3.2x, and its ghost clipping 4.1x
because Opacus 1.6 has no ghost norm for Conv2d. This engine runs one forward pass and
one backward pass that computes only the layers' output gradients (no weight gradients),
then for each Linear/Conv2d layer either

- materialises the per-sample weight gradients G_i^T A_i (cheap when the layer has few
  parameters: the first, high-resolution convolutions), or
- computes their squared norms without materialising them, the "ghost norm"
  sum_{t,s} (A_i A_i^T)_{ts} (G_i G_i^T)_{ts} (cheap when the layer has few output
  positions T: the deep, wide layers),

whichever needs fewer multiply-adds (T^2 (Din + Dout) against T Din Dout: the first
convolutions get per-sample gradients, the deep ones ghost norms; at the paper's width the
choice is the same as by memory, T^2 against Din Dout, which picked ghost norms for a
P = 32 critic's 9 x 9 maps at 10x the cost). With the clipping factors c_i known,
the clipped sum sum_i c_i g_i is the weighted sum of the stored per-sample gradients, or
the layer's weight gradient for the reweighted output gradients c_i G_i (one kernel call).
No second backward pass through the network is needed.

A: the layer's input seen by each output position, (B, T, Din) (unfolded patches for a
Conv2d); G: the gradient of sum_i loss_i with respect to the layer's output, (B, T, Dout).
G_i is sample i's own output gradient only if samples do not interact, so BatchNorm is
refused.

Groups (the patient as privacy unit): with ``group_size`` m, consecutive rows of m
samples form one unit whose gradient is the sum of its samples' gradients. Its weight
gradient is G_u^T A_u with the unit's output positions the union of its samples' (A_u:
(m T, Din)), so the same two formulas give its norm; the clipping factor of the unit then
scales each of its samples' terms.

Frozen parameters (requires_grad False, e.g. critic blocks kept at a public warm start's weights) are outside
the mechanism: no hook, no per-sample gradient, no share of the clipping norm and no noise. Norms, clipping and
the noise (std sigma C per coordinate) cover exactly the trained parameters (``BookKeepingClipper.params``).

Per-sample squared norms are summed over layers in float64: float32 norms of
multi-million-element tensors were off by up to 4e-4 (docs/design.md §2.1), enough to break the
sensitivity bound. Clipping uses C / (1 + NORM_RTOL) so that the remaining float32
rounding of the per-sample gradients themselves cannot push a contribution above C.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM_RTOL = 1e-5
"""Relative safety margin of the clipping bound against float32 rounding."""

SUPPORTED_LAYERS = (nn.Linear, nn.Conv2d)

NORMALISED_GAMMA = 0.01
"""Stability constant of normalised clipping, relative to C (Bu et al. 2023 use 0.01)."""


@dataclass
class ClippedSum:
    """The result of one book-keeping pass over a batch."""

    grads: list[Tensor]
    """sum_i c_i g_i per trainable parameter (aligned with BookKeepingClipper.params)."""
    norms: Tensor
    """(U,) float64 per-unit gradient norms before clipping (U = B for one sample per unit)."""
    factors: Tensor
    """(U,) float64 clipping factors c_u = min(1, C / ((1 + NORM_RTOL) ||g_u||))."""
    outputs: Tensor
    """The module's outputs on the batch, detached."""


@dataclass
class _Record:
    """One layer call seen by the forward hook."""

    layer: nn.Module
    inputs: Tensor
    output: Tensor
    version: int


def _check_layer(name: str, layer: nn.Module) -> None:
    """Refuse layer configurations the formulas here do not cover."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError(
                f"layer {name!r}: only Conv2d with groups=1, zero padding and numeric " "padding is supported"
            )


def _trainable_layers(module: nn.Module) -> list[nn.Module]:
    """Supported layers holding trainable parameters; refuse anything else that trains."""
    layers = []
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"layer {name!r}: BatchNorm mixes samples; per-sample clipping is undefined")
        if getattr(sub, "track_running_stats", False):
            raise ValueError(f"layer {name!r}: running statistics would record private data without noise")
        own = [p for p in sub.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if not isinstance(sub, SUPPORTED_LAYERS):
            raise ValueError(
                f"layer {name!r} ({type(sub).__name__}) has trainable parameters but is not Linear or Conv2d"
            )
        _check_layer(name, sub)
        layers.append(sub)
    return layers


def output_grads(layer: nn.Module, grad_output: Tensor) -> Tensor:
    """G: (B, T, Dout), the output gradient at each of the layer's T output positions."""
    batch = grad_output.shape[0]
    if isinstance(layer, nn.Conv2d):
        return grad_output.reshape(batch, layer.out_channels, -1).transpose(1, 2)
    return grad_output.reshape(batch, -1, layer.out_features)


def input_patches(layer: nn.Module, inputs: Tensor) -> Tensor:
    """A: (B, T, Din), the input each output position sees (unfolded patches for a Conv2d)."""
    if isinstance(layer, nn.Conv2d):
        a = F.unfold(inputs, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return a.transpose(1, 2)
    return inputs.reshape(inputs.shape[0], -1, layer.in_features)


def use_ghost_norm(positions: int, d_in: int, d_out: int) -> bool:
    """Ghost norm when its two (T x T) Grams take fewer multiply-adds than one per-sample weight gradient.

    T^2 (Din + Dout) against T Din Dout. Where the per-sample gradient wins, it is also no larger than the
    unfolded input A (T Din) plus G (T Dout) already in memory.
    """
    return positions * (d_in + d_out) < d_in * d_out


def ghost_sq_norms(a: Tensor, g: Tensor) -> Tensor:
    """(B,) squared Frobenius norms of G_i^T A_i without forming them, in float64."""
    gram_a = torch.bmm(a, a.transpose(1, 2))
    gram_g = torch.bmm(g, g.transpose(1, 2))
    return (gram_a.double() * gram_g.double()).sum(dim=(1, 2))


def per_sample_weight_grads(layer: nn.Module, inputs: Tensor, grad_output: Tensor) -> Tensor:
    """(B, Dout, Din) per-sample weight gradients G_i^T A_i.

    For a Conv2d: one grouped weight-gradient convolution with the batch as groups, which
    was faster here than unfolding the input and a batched matmul.
    """
    batch = inputs.shape[0]
    if isinstance(layer, nn.Conv2d):
        c_out, c_in = layer.out_channels, layer.in_channels
        grads = torch.nn.grad.conv2d_weight(
            inputs.reshape(1, batch * c_in, *inputs.shape[2:]),
            (batch * c_out, c_in, *layer.kernel_size),
            grad_output.reshape(1, batch * c_out, *grad_output.shape[2:]),
            layer.stride,
            layer.padding,
            layer.dilation,
            groups=batch,
        )
        return grads.reshape(batch, c_out, -1)
    return torch.bmm(output_grads(layer, grad_output).transpose(1, 2), input_patches(layer, inputs))


def sq_norms(x: Tensor) -> Tensor:
    """(B,) squared norms of each sample's slice of x: float32 sums within, float64 out.

    Per-sample float32 sums of squares (cascade summation) were within 2e-7 of float64;
    it is the float32 ``norm()`` of huge tensors that docs/design.md §2.1 found off by 4e-4.
    """
    return x.reshape(x.shape[0], -1).pow(2).sum(dim=1).double()


def weighted_weight_grad(layer: nn.Module, inputs: Tensor, grad_output: Tensor, c: Tensor) -> Tensor:
    """sum_i c_i G_i^T A_i in the weight's shape, by the layer's own weight-gradient kernel."""
    scale = c.reshape(-1, *([1] * (grad_output.dim() - 1)))
    if isinstance(layer, nn.Conv2d):
        return torch.nn.grad.conv2d_weight(
            inputs,
            layer.weight.shape,
            grad_output * scale,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
        )
    g = (grad_output * scale).reshape(-1, layer.out_features)
    return g.T @ inputs.reshape(-1, layer.in_features)


SMALL_MAP_POSITIONS = 32
"""Up to this many output positions, a ghost-normed Conv2d's clipped sum is one GEMM on
its (already unfolded) patches: the convolution weight-gradient kernel was 2x slower on
4 x 4 maps, and faster from 13 x 13 up."""


class _LayerTerms:
    """A layer's per-sample squared norms and, once the factors are known, its clipped sums."""

    def __init__(self, layer: nn.Module, inputs: Tensor, grad_output: Tensor, group_size: int = 1) -> None:
        self.layer = layer
        self.inputs = inputs
        self.grad_output = grad_output
        self.group_size = group_size
        g = output_grads(layer, grad_output)
        positions, d_out, d_in = g.shape[1], g.shape[2], layer.weight[0].numel()
        self.bias_grads = g.sum(dim=1)
        self.ghost = use_ghost_norm(group_size * positions, d_in, d_out)
        self.weight_grads: Tensor | None = None
        self.patches: tuple[Tensor, Tensor] | None = None
        if self.ghost:
            a = input_patches(layer, inputs)
            self.weight_sq_norms = ghost_sq_norms(self._grouped(a), self._grouped(g))
            if isinstance(layer, nn.Conv2d) and positions <= SMALL_MAP_POSITIONS:
                self.patches = (a, g)
        else:
            self.weight_grads = per_sample_weight_grads(layer, inputs, grad_output)
            self.weight_sq_norms = sq_norms(self._unit_sums(self.weight_grads))

    def _grouped(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B / m, m T, D): each unit's output positions are the union of its samples'."""
        return x.reshape(x.shape[0] // self.group_size, -1, x.shape[-1])

    def _unit_sums(self, x: Tensor) -> Tensor:
        """Per-sample tensors (B, ...) summed within each unit of m consecutive samples: (B / m, ...)."""
        if self.group_size == 1:
            return x
        return x.reshape(x.shape[0] // self.group_size, self.group_size, *x.shape[1:]).sum(dim=1)

    def sq_norms(self) -> Tensor:
        """(B / m,) float64 squared norm of each unit's gradient of this layer's trainable parameters."""
        total = torch.zeros_like(self.weight_sq_norms)
        if self.layer.weight.requires_grad:
            total += self.weight_sq_norms
        if self.layer.bias is not None and self.layer.bias.requires_grad:
            total += sq_norms(self._unit_sums(self.bias_grads))
        return total

    def _weighted_weight_grad(self, c: Tensor) -> Tensor:
        if self.weight_grads is not None:
            return torch.einsum("b,boi->oi", c, self.weight_grads)
        if self.patches is not None:
            a, g = self.patches
            return torch.einsum("bto,bti->oi", g * c[:, None, None], a)
        return weighted_weight_grad(self.layer, self.inputs, self.grad_output, c)

    def clipped_sums(self, factors: Tensor) -> list[Tensor]:
        """sum_i c_i g_i for the layer's trainable parameters, in parameter order."""
        c = factors.to(self.grad_output.dtype)
        sums = []
        weight = self.layer.weight
        if weight.requires_grad:
            sums.append(self._weighted_weight_grad(c).reshape(weight.shape))
        bias = self.layer.bias
        if bias is not None and bias.requires_grad:
            sums.append(c @ self.bias_grads)
        return sums


class BookKeepingClipper:
    """Sum of per-sample-clipped gradients of a module whose trainable layers are Linear/Conv2d.

    Forward hooks record each layer's input and output while ``clipped_grad_sum`` runs;
    at other times the module behaves as usual. Layer outputs must not be modified in
    place (the recorded output would no longer be the layer's); this is checked.
    """

    def __init__(self, module: nn.Module, max_grad_norm: float, normalised: bool = False) -> None:
        if not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {max_grad_norm}")
        self.module = module
        self.max_grad_norm = max_grad_norm
        self.normalised = normalised
        self.layers = _trainable_layers(module)
        self.params = [p for layer in self.layers for p in _own_trainable(layer)]
        self._records: list[_Record] | None = None
        self._handles = [layer.register_forward_hook(self._record) for layer in self.layers]

    def _record(self, layer: nn.Module, args: tuple, output: Tensor) -> None:
        if self._records is not None:
            self._records.append(_Record(layer, args[0].detach(), output, output._version))

    def remove(self) -> None:
        """Detach the hooks from the module."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def factors(self, norms: Tensor) -> Tensor:
        """Clipping factors, float64: flat min(1, C' / norm), or normalised C' / (norm + gamma); C' = C / (1 + NORM_RTOL).

        Normalised clipping (Bu et al. 2023, "automatic clipping") scales every gradient to just under C, so
        small gradients count as much as large ones; either way no unit's contribution exceeds C.
        """
        bound = self.max_grad_norm / (1.0 + NORM_RTOL)
        if self.normalised:
            return bound / (norms + NORMALISED_GAMMA * self.max_grad_norm)
        return torch.clamp(bound / norms.clamp_min(1e-300), max=1.0)

    def _forward(self, inputs: Tensor) -> tuple[Tensor, list[_Record]]:
        self._records = []
        try:
            outputs = self.module(inputs)
            records = self._records
        finally:
            self._records = None
        seen = [r.layer for r in records]
        if len(set(map(id, seen))) != len(seen):
            raise ValueError("a layer was called twice in one forward pass (weight sharing is not supported)")
        return outputs, records

    def clipped_grad_sum(
        self, inputs: Tensor, per_sample_loss: Callable[[Tensor], Tensor], group_size: int = 1
    ) -> ClippedSum:
        """sum_u min(1, C/||g_u||) g_u over units u of ``group_size`` consecutive samples.

        g_u is the sum over the unit's samples i of the gradient of per_sample_loss(module(x))[i];
        with group_size 1 every sample is its own unit.
        """
        if group_size < 1 or inputs.shape[0] % group_size:
            raise ValueError(f"a batch of {inputs.shape[0]} samples does not split into units of {group_size}")
        if inputs.shape[0] == 0:
            return self._empty(inputs)
        outputs, records = self._forward(inputs)
        losses = per_sample_loss(outputs)
        if losses.shape != (inputs.shape[0],):
            raise ValueError(
                f"per_sample_loss must return shape ({inputs.shape[0]},), got {tuple(losses.shape)}"
            )
        for r in records:
            if r.output._version != r.version:
                raise RuntimeError(
                    f"the output of {r.layer} was modified in place; use non-inplace activations"
                )
        grads_out = torch.autograd.grad(losses.sum(), [r.output for r in records], allow_unused=True)
        terms = [
            _LayerTerms(r.layer, r.inputs, torch.zeros_like(r.output) if g is None else g, group_size)
            for r, g in zip(records, grads_out)
        ]
        by_layer = {id(t.layer): t for t in terms}
        norms = torch.stack([t.sq_norms() for t in terms]).sum(dim=0).sqrt()
        factors = self.factors(norms)
        sample_factors = factors.repeat_interleave(group_size)
        grads: list[Tensor] = []
        for layer in self.layers:
            term = by_layer.get(id(layer))
            if term is None:
                grads.extend(torch.zeros_like(p) for p in _own_trainable(layer))
            else:
                grads.extend(term.clipped_sums(sample_factors))
        return ClippedSum(grads, norms, factors, outputs.detach())

    def _empty(self, inputs: Tensor) -> ClippedSum:
        empty = torch.zeros(0, dtype=torch.float64, device=inputs.device)
        return ClippedSum([torch.zeros_like(p) for p in self.params], empty, empty, inputs.new_zeros(0))


def _own_trainable(layer: nn.Module) -> list[Tensor]:
    return [p for p in layer.parameters(recurse=False) if p.requires_grad]


class DPGradient:
    """The DP-SGD gradient of a per-sample loss, added to the parameters' ``.grad``.

    (sum_i c_i g_i + N(0, (sigma C)^2 I)) / expected_batch_size: one Gaussian draw per
    call, divided by the *expected* batch size q N of Poisson sampling (the actual size
    is private and may be 0; then the result is noise alone).
    """

    def __init__(
        self,
        module: nn.Module,
        max_grad_norm: float,
        noise_multiplier: float,
        expected_batch_size: float,
        generator: torch.Generator | None = None,
        normalised: bool = False,
    ) -> None:
        if noise_multiplier < 0 or not expected_batch_size > 0:
            raise ValueError(
                f"need noise_multiplier >= 0 and expected_batch_size > 0, got "
                f"{noise_multiplier}, {expected_batch_size}"
            )
        self.clipper = BookKeepingClipper(module, max_grad_norm, normalised)
        self.noise_multiplier = noise_multiplier
        self.expected_batch_size = expected_batch_size
        self.generator = generator

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise on the clipped sum: sigma * C."""
        return self.noise_multiplier * self.clipper.max_grad_norm

    def accumulate(
        self, inputs: Tensor, per_sample_loss: Callable[[Tensor], Tensor] = lambda out: out, group_size: int = 1
    ) -> ClippedSum:
        """Add the privatised gradient to each parameter's .grad; return the clipping pass.

        ``group_size`` consecutive samples form one privacy unit, clipped as one (see the module docstring).
        """
        result = self.clipper.clipped_grad_sum(inputs, per_sample_loss, group_size)
        for param, clipped in zip(self.clipper.params, result.grads):
            noisy = (clipped + self._noise(param)) / self.expected_batch_size
            param.grad = noisy if param.grad is None else param.grad + noisy
        return result

    def _noise(self, param: Tensor) -> Tensor:
        if self.noise_multiplier == 0:
            return torch.zeros_like(param)
        noise = torch.randn(param.shape, generator=self.generator, device=param.device, dtype=param.dtype)
        return noise * self.noise_std

    def remove(self) -> None:
        """Detach the engine's hooks from the module."""
        self.clipper.remove()
