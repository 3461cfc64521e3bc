"""Analyses of ein cascades that passes and `einc explain` read."""

