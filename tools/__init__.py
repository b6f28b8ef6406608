"""Generators of committed data and other maintainer scripts (not part of the product)."""
