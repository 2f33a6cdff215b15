"""Privacy: the DP-SGD engine, the accountants and run planning, the secret key, and the DP audit's statistics."""
