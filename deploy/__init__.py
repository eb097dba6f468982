"""Deployment helpers: the stack's processes (``stack``, used by ``linx-local``, the tests and
the bench), the local stack runner and the real Redis process."""
