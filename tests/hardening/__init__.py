"""Proxy hardening: hostile input, slow clients, failing containers and a failing Redis, all
against real processes (``python -m dataplane``, the control plane under gunicorn, Redis, the
recording echo backend).

=============================  ===============================================================
``test_smuggling.py``          framing/smuggling corpus (272 raw-socket cases)
``test_fuzz.py``               Hypothesis-generated request heads (``LINX_FUZZ_EXAMPLES``)
``test_limits.py``             head size/fields, head deadline (slowloris, ``slowhttptest``),
                               idle, connect and response timeouts, connection limit, slow
                               reader memory
``test_failing_containers.py`` truncated bodies, WebSocket reset, silence, garbage, fake 101,
                               huge heads, ambiguous responses, disallowed targets; a soak
                               (``LINX_SOAK_REQUESTS``) that must leave no residue
``test_redis_faults.py``       Redis killed/restarted, a partitioned proxy, a trimmed feed,
                               convergence under random partitions (``LINX_CONVERGENCE_OPS``)
``test_tokens.py``             forgery corpus; a canary token that must never leak
``test_regressions_memory.py`` in-memory regressions for the proxy bugs the corpus found
=============================  ===============================================================

``pytest -m "not slow" tests/hardening`` is the CI run (about 2 minutes on 2 cores);
``tox -e long`` raises the counts (50,000 fuzz examples, 100,000 soak requests, 2,000
convergence operations) and adds the ``slow`` tests (a 30 s Redis outage). ``slowhttptest`` must
be installed (``.ci/run`` installs it); the coverage-guided harness for the head parser is
``bench/fuzz_head.py`` (atheris, run on demand).
"""
