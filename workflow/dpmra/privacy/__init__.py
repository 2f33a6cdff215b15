"""Privacy: the DP-SGD engine, the accountants, delta, run planning, the secret key, the DP audit's canaries and bound."""
