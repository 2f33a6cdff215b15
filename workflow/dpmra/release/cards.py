"""Privacy cards as read back by the stages that report on synthetic datasets (quality, audit, figures)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def card_epsilon(value: float | str | None) -> float:
    """An epsilon from a privacy card: a number, or 'inf' (or null) where no privacy holds."""
    return math.inf if value is None or value == "inf" else float(value)


def read_card(path: Path) -> dict:
    """A privacy card, with a ValueError naming the file if it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a JSON privacy card ({err})") from err


def card_columns(path: Path) -> dict:
    """source, sigma, seed and (RDP) epsilon of a synthetic dataset, from its privacy card.

    The source is the card's directory below the synth root, `sigma~{sigma}/seed~{seed}`; the seed (the run
    index) is read from it, since the card does not carry it.
    """
    path = Path(path)
    card = read_card(path)
    source = "/".join(path.parent.parts[-2:])
    try:
        return {
            "source": source,
            "sigma": float(card["sigma"]),
            "seed": int(source.rpartition("seed~")[2]),
            "epsilon": card_epsilon(card["epsilon"]["rdp"]),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a privacy card with sigma, seed and epsilon.rdp ({err!r})") from err
