"""Code both Linx processes import: config, Redis schema and change feed, records, tokens.

Imports neither Flask nor Twisted.
"""
