"""The proxy's policy state (--state): one backend per proxy process, and its status file.

`SharedState` owns the `shadow_state` option (`memory`, or `redis://HOST:PORT/DB`; empty: env
LLM_SHADOW_STATE, else memory) and opens the backend (analysis.shared_state.backend) that enforce
mode and wrapped keys use: other addons find it with `ctx.master.addons.get("sharedstate")`.

Redis being down or slow is never an error of a call: the backend serves it from local state
and counts it. This addon puts those counts where `llm-shadow stats` looks, in
`<data>/status/<process>.state.json`, checked every second and rewritten when they changed.
"""

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from mitmproxy import ctx, exceptions

from analysis.shared_state.backend import STATE_ENV, BadStateURL, open_backend, state_problems, state_status
from analysis.simulate.state import StateBackend
from analysis.store.datadir import new_instance_name
from analysis.store.modes import create_private_file, make_dir

log = logging.getLogger("llm_shadow")

STATUS_INTERVAL_S = 1.0


class SharedState:
    def __init__(self) -> None:
        self.backend: StateBackend | None = None
        self.url: str | None = None
        self.instance = new_instance_name()
        self._written: tuple | None = None
        self._task: asyncio.Task | None = None  # rewrites the status file every second

    def load(self, loader):
        loader.add_option(
            "shadow_state",
            str,
            "",
            "Where policy state lives: memory, or redis://HOST:PORT/DB shared by several proxies "
            f"(default: env {STATE_ENV}, else memory).",
        )

    def configure(self, updated):
        if "shadow_state" in updated:
            self.open()

    def open(self) -> StateBackend:
        """The backend the option names (opened once; OptionsError for a bad value)."""
        value = ctx.options.shadow_state or os.environ.get(STATE_ENV) or "memory"
        if self.backend is None or value != self.url:
            try:
                self.backend = open_backend(value)
            except BadStateURL as e:
                raise exceptions.OptionsError(f"llm-shadow: {e}") from e
            self.url = value
        return self.backend

    def get(self) -> StateBackend:
        return self.backend if self.backend is not None else self.open()

    def problems(self) -> dict[str, int]:
        return state_problems(self.backend) if self.backend is not None else {}

    def write_status(self) -> None:
        """`<data>/status/<instance>.state.json` with the fallback counts, when they changed."""
        if self.backend is None:
            return
        problems = self.problems()
        signature = tuple(sorted(problems.items()))
        if signature == self._written or (not problems and self._written is None):
            return
        self._written = signature
        status = {
            "instance": f"{self.instance}.state",
            "pid": os.getpid(),
            "updated": time.time(),
            "recorded": 0,
            "spooled": 0,
            "problems": problems,
            "state": state_status(self.backend),
        }
        directory = Path(ctx.options.shadow_data) / "status"
        try:
            make_dir(directory)
            tmp = directory / f".{self.instance}.state.json.tmp"
            create_private_file(tmp, json.dumps(status).encode())
            os.replace(tmp, directory / f"{self.instance}.state.json")
        except OSError:
            pass  # a convenience; the counts are also logged at exit

    def running(self):
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._status_loop())

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            self.write_status()

    def done(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.write_status()
        problems = self.problems()
        if problems:
            log.warning("llm-shadow: shared state: %s", ", ".join(f"{k}={v}" for k, v in sorted(problems.items())))
