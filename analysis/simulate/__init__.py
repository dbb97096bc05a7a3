"""The simulator: replay recorded traffic against a policy file and see what would have happened.

The modules, in the order a run uses them (docs/simulator.md explains the rules):

- policy       the TOML policy file into frozen dataclasses; errors with line and key (tomlpos)
- matching     a policy's conditions, for one request or a whole frame
- cacheability which requests a cache may answer, and why not
- pricer       what a request costs on another model or at the batch price (token re-estimation)
- embedders    text to vectors for the semantic cache (offline hashing, OpenAI-compatible API)
- semantic     the semantic cache's LSH index and response slots
- state        exact-cache LRU, budget windows, rate windows
- facts        what the policies need to know of a request, apart from history
- engine       PolicyEngine: facts of one request and `decide(record, state)` (enforce mode)
- batch        the same facts for a whole frame, vectorised
- replay       the one pass in time order that needs history, and the per-request decisions
- results      decisions to figures (SimulationResult.to_dict())
- simulator    `simulate(policy, requests, contents)`: all of the above
- runs         runs stored under <data>/simulations/<run_id>/
- explain      why one request got its decision
- enforceable  which entries enforce mode can act on live, and why not
- synthetic    synthetic traffic for the benchmark and property tests

No module here imports mitmproxy or runs SQL: frames come from analysis.store.datadir.
"""
