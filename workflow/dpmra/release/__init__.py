"""Release: a generator sampled into a synthetic dataset, its privacy card, and the shareable bundle."""
