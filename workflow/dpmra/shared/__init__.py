"""Shared ground floor: atomic writes, checkpoint files, the torch device, pictures and HTML tables (no stage)."""
