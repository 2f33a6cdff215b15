"""The study's GAN runs from the config: sigma labels, and sigmas solved from target epsilons."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dpmra.privacy.delta import resolve_delta

SIGNIFICANT_DIGITS = 4


def sigma_label(sigma: float) -> str:
    """The wildcard value of a noise multiplier: `inf` or the shortest decimal (e.g. 0.65)."""
    return "inf" if math.isinf(sigma) else f"{sigma:g}"


def parse_sigma(value: float | str) -> float:
    """A sigma from the config or a path: a positive number or `inf`."""
    sigma = float(value)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive or inf, got {value!r}")
    return sigma


def round_up(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """Round up to `digits` significant digits: a larger sigma can only lower epsilon."""
    scale = 10 ** (digits - 1 - math.floor(math.log10(value)))
    return math.ceil(value * scale) / scale


def iterations_per_epoch(sample_rate: float) -> int:
    """round(1/q) generator iterations make an epoch (the paper's meaning), as in the trainer."""
    return max(1, round(1 / sample_rate))


def fresh_steps(epochs: int, sample_rate: float, n_critic: int) -> int:
    """Accountant charges of `epochs` epochs in the fresh loop: one per critic update."""
    return epochs * n_critic * iterations_per_epoch(sample_rate)


@dataclass(frozen=True)
class Sampling:
    """The privacy units of the GAN training set and their Poisson sampling, as the trainer computes them."""

    units: int
    """Number of privacy units N: training pairs (unit patch) or training patients (unit patient)."""
    sample_rate: float
    """q = expected units per batch / N."""
    delta: float


def sampling(gan: dict, privacy: dict, n_patients: int, per_patient: int) -> Sampling:
    """The units, q and delta of the config's GAN runs; a delta above 1/N is refused naming `gan.delta`."""
    patient_unit = privacy["unit"] == "patient"
    units = n_patients if patient_unit else n_patients * per_patient
    expected = privacy["patient_batch"] if patient_unit else gan["batch_size"]
    return Sampling(units, min(1.0, expected / units), resolve_delta(gan["delta"], units, "gan.delta"))


def sigma_for_epsilon(target: float, plan: Sampling, gan: dict) -> float:
    """The noise multiplier whose valid RDP bound after the configured epochs is at most `target`.

    fresh: n_critic charges at sigma per generator iteration; paper: the reused batch is one charge
    per generator iteration at sigma / sqrt(n_critic) (docs/design.md §2.2).
    """
    # Imported here: the accountant loads torch and Opacus, which every Snakemake start (plan is read by
    # common.smk) would otherwise pay, seconds per job on a cluster.
    from dpmra.privacy.accountants import solve_sigma

    q = plan.sample_rate
    if gan["mode"] == "fresh":
        sigma = solve_sigma(target, q, fresh_steps(gan["epochs"], q, gan["n_critic"]), plan.delta)
    else:
        sigma = solve_sigma(target, q, gan["epochs"] * iterations_per_epoch(q), plan.delta) * math.sqrt(gan["n_critic"])
    return round_up(sigma)


def epsilon_sigmas(gan: dict, plan: Sampling) -> dict[float, str]:
    """The sigma label solved for each target epsilon of gan.epsilons: the accountant's work, done once per start."""
    return {float(e): sigma_label(sigma_for_epsilon(float(e), plan, gan)) for e in gan["epsilons"]}


def gan_sigmas(gan: dict, by_epsilon: dict[float, str]) -> list[str]:
    """Sigma labels of every GAN run: the configured sigmas, then those solved for target epsilons."""
    labels = [sigma_label(parse_sigma(s)) for s in gan["sigmas"]] + list(by_epsilon.values())
    return list(dict.fromkeys(labels))


PLACEBO_PREFIX = "placebo~"
"""A placebo's source name: its private run's `sigma~S/seed~N` with this prefix instead of `sigma~`."""


PE_PREFIX, PE_PLACEBO_PREFIX = "pe~", "pe-placebo~"


def placebo_source(source: str) -> str | None:
    """The placebo of a private run's source: placebo~S/seed~N for the DP-WGAN's sigma~S/seed~N, pe-placebo~S/seed~N
    for Private Evolution's pe~S/seed~N; None for any other source."""
    for private, placebo in (("sigma~", PLACEBO_PREFIX), (PE_PREFIX, PE_PLACEBO_PREFIX)):
        if source.startswith(private):
            return placebo + source[len(private):]
    return None


def placebo_sigmas(gan: dict, by_epsilon: dict[float, str]) -> list[str]:
    """Sigma labels of the runs that get a placebo: gan.placebo lists target epsilons (of gan.epsilons, solved in
    `by_epsilon`) or sigmas (of gan.sigmas); any other value is refused naming the key."""
    by_sigma = {parse_sigma(s): sigma_label(parse_sigma(s)) for s in gan["sigmas"]}
    labels = []
    for value in gan["placebo"]:
        number = float(value)
        if number not in by_epsilon and number not in by_sigma:
            raise ValueError(
                f"gan.placebo: {value} is neither one of gan.epsilons ({gan['epsilons']}) nor of gan.sigmas "
                f"({gan['sigmas']})"
            )
        labels.append(by_epsilon.get(number) or by_sigma[number])
    return list(dict.fromkeys(labels))


def setting_name(lr: float, dropout: float, augment: bool) -> str:
    """The wildcard value of a U-Net setting, e.g. lr-0.0001_dropout-0.1_augment-on."""
    return f"lr-{lr:g}_dropout-{dropout:g}_augment-{'on' if augment else 'off'}"


def unet_settings(unet: dict) -> dict[str, dict]:
    """The U-Net hyper-parameter grid (lr x dropout x augmentation), by setting name, in config order."""
    return {
        setting_name(lr, dropout, augment): {"lr": lr, "dropout": dropout, "augment": augment}
        for lr in unet["lr"]
        for dropout in unet["dropout"]
        for augment in unet["augment"]
    }


def pe_sigmas(pe: dict, delta: float) -> dict[float, str]:
    """Private Evolution's sigma label per target epsilon (exact GDP at `delta` over pe.iterations rounds, sigma
    rounded up), and `inf` for a run without noise."""
    if not pe["epsilons"]:
        return {}
    from dpmra.privacy.gdp import solve_pe_sigma  # scipy.stats costs about a second: only where PE runs

    return {
        float(eps): sigma_label(round_up(solve_pe_sigma(float(eps), pe["iterations"], delta)))
        for eps in pe["epsilons"]
    }


def pe_placebo_sigmas(pe: dict, by_epsilon: dict[float, str]) -> list[str]:
    """Sigma labels of the PE runs that get a placebo (pe.placebo: target epsilons of pe.epsilons)."""
    missing = [value for value in pe["placebo"] if float(value) not in by_epsilon]
    if missing:
        raise ValueError(f"pe.placebo lists {missing}, which are not target epsilons of pe.epsilons {sorted(by_epsilon)}")
    return [by_epsilon[float(value)] for value in pe["placebo"]]
