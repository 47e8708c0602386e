"""Experiences, variants, holdouts and bandits (Thompson sampling), and the exposures lift reads."""
