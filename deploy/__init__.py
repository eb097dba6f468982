"""Deployment helpers: the local stack runner and the real Redis process it (and the tests) use."""
