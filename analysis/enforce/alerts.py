"""Budget alerts on live traffic, in every mode (observe too: an alert changes no traffic).

`BudgetAlerter` runs the simulator's definition (analysis.simulate.alerts) after each charge a
live policy makes: it adds the call's cost to the window's spend by model and feature, reads
the window's spend and fires the shares reached that nobody claimed before (the claim is
atomic in Redis, so several proxies fire an alert once). `slack_payload` turns an alert into
the JSON a Slack incoming webhook accepts: a `text` line for notifications, `blocks` with the
figures as fields, and the same figures as plain JSON under `llm_shadow` for any other
receiver. Sending happens elsewhere, off the event loop (analysis.enforce.webhook).

`webhook_urls` reads each budget's `alert_webhook_env` when a proxy starts: a variable that is
unset or holds no http(s) URL stops the proxy with the policy line at fault, as any other bad
policy does.
"""

import os
import re

from analysis.simulate.alerts import TOP_SPENDERS, Alert, alert_line, fire
from analysis.simulate.policy import Policy, PolicyError
from analysis.simulate.state import BudgetState, StateBackend
from reports.format import percent, usd  # alert texts are for people: money is written as everywhere else


def webhook_urls(policy: Policy) -> dict[str, str]:
    """Budget name -> webhook URL, from the environment variables the policy names."""
    urls = {}
    for budget in policy.budgets:
        name = budget.alert_webhook_env
        if name is None:
            continue
        value = os.environ.get(name, "").strip()
        if not value:
            raise policy.error(budget.origin, "alert_webhook_env", f"the environment variable {name} is not set")
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise policy.error(
                budget.origin, "alert_webhook_env", f"the environment variable {name} holds no http(s) URL"
            )
        urls[budget.name] = value
    return urls


class BudgetAlerter:
    """The alerting budgets of one live policy, with their markers and spend breakdowns."""

    def __init__(self, policy: Policy, backend: StateBackend, budgets: list[BudgetState]):
        self.budgets = budgets
        self.watched = {
            index: (budget, backend.budget_alerts(budget.name))
            for index, budget in enumerate(policy.budgets)
            if budget.alert_at
        }

    def after_charge(
        self,
        index: int,
        key: str,
        usd_charged: float,
        request_id: str,
        ts_us: int,
        model: str | None,
        feature: str | None,
    ) -> list[Alert]:
        """Budget `index` was just charged `usd_charged` in window `key`: the alerts now due."""
        watched = self.watched.get(index)
        if watched is None:
            return []
        budget, state = watched
        state.add(key, model, feature, usd_charged)
        return fire(budget, state, key, self.budgets[index].spent_in(key), request_id, ts_us)


def slack_payload(alert: Alert) -> dict:
    """The alert as a JSON body for a Slack incoming webhook (and anyone else)."""
    line = f"llm-shadow: {alert_line(alert)}"

    def spenders(rows: tuple[tuple[str, float], ...]) -> str:
        return "\n".join(f"{name or '(none)'}: {usd(amount)}" for name, amount in rows) or "(none)"

    fields = [
        ("Spend", f"{usd(alert.spend_usd)} of {usd(alert.limit_usd)} ({percent(alert.spent_share)})"),
        ("Alert at", percent(alert.share, 0)),
        ("Window", f"{alert.window} from {alert.window_start}"),
        ("Scope", f"{alert.scope}: {alert.scope_value}" if alert.scope != "global" else "global"),
        (f"Top models (up to {TOP_SPENDERS})", spenders(alert.top_models)),
        (f"Top features (up to {TOP_SPENDERS})", spenders(alert.top_features)),
    ]
    return {
        "text": line,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{line}*"}},
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{title}*\n{value}"} for title, value in fields],
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"request {alert.request_id} at {alert.fired_at}; budget {alert.budget}"}
                ],
            },
        ],
        "llm_shadow": alert.to_dict(),
    }


__all__ = ["BudgetAlerter", "PolicyError", "slack_payload", "webhook_urls"]
