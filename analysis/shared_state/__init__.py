"""State that several proxies share: budget windows, rate windows, cached responses, the semantic
cache's entries, wrapped keys.

One mitmproxy process uses one core, so a deployment that outgrows it runs several behind a load
balancer. Their policies must then see one set of windows, or a $200/day budget becomes $200 per
process. `--state memory` (the default) keeps everything in the process, in the simulator's own
classes (analysis.simulate.state); `--state redis://HOST:PORT/DB` keeps it in Redis, through
classes with the same methods and the same meaning, made atomic with Lua scripts.

- backend      the --state value: which backend, and the objects each policy gets from it
- redis_link   the connection to Redis: time budget per call, fail-open to local state, counters
- redis_state  ResponseCache, BudgetWindows and RateWindows kept in Redis
- redis_semantic  the semantic cache's stored entries (vectors, validity, answer references) in Redis
- keys         wrapped keys (lsk-...): the registry, salted hashes, in the data dir or in Redis

The clock rule: every time in shared state is the wall clock (UTC, integer microseconds) of the
proxy that handles the request, read when the request arrived. Redis never supplies a time, so
windows mean exactly what they mean in the simulator; proxies on several machines must keep
their clocks in step (NTP), and a skew of s shifts a window's edge by s for that proxy.
"""
