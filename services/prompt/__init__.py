"""Prompt processing: the Alert Production payload's steps (being built; association first)."""
