"""The company's LLM features: who calls which model, when, with what prompt and what answer.

Each feature is a `Feature`: a volume (sessions per weekday and weekend day), an hour profile, and
a session function that turns one arrival time into the calls of that session (a conversation's
turns, a tool loop, a RAG question and its embedding lookup...). Answers at temperature 0 are a
function of the prompt alone, so an exact repeat gets the exact same answer, as it would in life.
The one-off runaway batch job is `runaway_backfill`, scheduled by generate.py on one day.
"""

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sample_traffic import ids, material
from sample_traffic.calls import Call, Message, Reply, Tool, ToolCall
from sample_traffic.org import AGENTS, ANALYSTS, ENGINEERS, KEYS, MARKETERS, customer_id

Session = Callable[[random.Random, float], list[Call]]


@dataclass(frozen=True)
class Feature:
    name: str
    team: str
    weekday_sessions: float
    weekend_sessions: float
    hours: str  # a schedule.HOUR_PROFILES name
    session: Session
    growth_per_day: float = 0.0  # relative growth of the volume per day of the month
    spike_days: tuple[tuple[date, float], ...] = ()  # (day, multiplier)
    scheduled: bool = False  # a cron job: exactly the volume each day, not a random number


def shadow(team: str, feature: str | None = None, user: str | None = None) -> dict[str, str]:
    headers = {"x-shadow-team": team}
    if feature:
        headers["x-shadow-feature"] = feature
    if user:
        headers["x-shadow-user"] = user
    return headers


def stable_fraction(*parts: str) -> float:
    """A number in [0, 1) fixed by the text: decisions a temperature-0 model makes the same way."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# --- support ---------------------------------------------------------------------------------

SUPPORT_SYSTEM = (
    f"You are Kit, the virtual assistant of {material.BANK}, an online bank. Answer the customer's "
    "question in 2-4 short sentences, in plain language. Only state fees, limits and timings you are "
    "sure of. Never ask for card numbers, PINs, passcodes or one-time codes. If the customer is upset, "
    "acknowledge it briefly. If you cannot help, offer to connect them with a human agent."
)
OPENERS = [
    "",
    "",
    "Thanks for reaching out! ",
    "I'm sorry for the trouble. ",
    "Happy to help. ",
    "I understand how frustrating that is. ",
]
CLOSERS = [
    "",
    "",
    " Is there anything else I can help with?",
    " Let me know if that doesn't solve it.",
    " I can connect you with an agent if you need more help.",
]
FOLLOW_UPS = [
    "That didn't work.",
    "Thanks!",
    "How long will that take?",
    "Can I talk to a human?",
    "Ok, and is there a fee for that?",
    "I already tried that.",
]


def _support_answer(rng: random.Random, intent: str) -> str:
    answer = material.support_intents()[intent]["answer"]
    return rng.choice(OPENERS) + answer + rng.choice(CLOSERS)


def support_bot(rng: random.Random, at: float) -> list[Call]:
    """The customer chat widget: 1-3 turns, streamed to the browser, a few on a canary model."""
    customer = customer_id(rng)
    canary = rng.random() < 0.08
    key = KEYS["support-widget-canary" if canary else "support-widget"]
    model = "gpt-4.1-mini" if canary else "gpt-4o-mini"
    stream = rng.random() < 0.6
    intent = material.pick_intent(rng)
    history: list[Message] = []
    calls = []
    for turn in range(rng.choices([1, 2, 3], [70, 24, 6])[0]):
        text = material.pick_query(rng, intent) if turn == 0 else rng.choice(FOLLOW_UPS)
        history.append(Message("user", text))
        answer = _support_answer(rng, intent)
        calls.append(
            Call(
                at=at,
                key=key,
                api="chat",
                model=model,
                feature="support-bot",
                system=SUPPORT_SYSTEM,
                messages=list(history),
                reply=Reply(answer),
                stream=stream,
                include_usage=not canary,  # the canary build forgot stream_options
                params={"temperature": 0.3, "max_tokens": 400},
                shadow_headers=shadow("support", "support-bot"),
                body_user=customer,
            )
        )
        history.append(Message("assistant", answer))
        at += 20 + rng.expovariate(1 / 45)
    return calls


CONFUSABLE = {
    "card_arrival": "card_delivery_estimate",
    "lost_or_stolen_card": "compromised_card",
    "pin_blocked": "change_pin",
    "exchange_rate": "card_payment_wrong_exchange_rate",
    "pending_card_payment": "transaction_charged_twice",
    "declined_card_payment": "card_not_working",
    "top_up_failed": "top_up_reverted",
    "pending_top_up": "top_up_failed",
    "transfer_not_received_by_recipient": "pending_transfer",
    "transfer_timing": "pending_transfer",
    "request_refund": "Refund_not_showing_up",
    "verify_my_identity": "unable_to_verify_identity",
    "cash_withdrawal_charge": "card_payment_fee_charged",
}


def classifier_system() -> str:
    labels = ", ".join(material.all_intent_labels())
    return (
        "Classify the customer message into exactly one intent label. Reply with JSON "
        f'{{"intent": "<label>"}} and nothing else. Labels: {labels}'
    )


def intent_classifier(rng: random.Random, at: float) -> list[Call]:
    """Ticket triage at temperature 0; tickets are re-triaged when the customer writes again."""
    intent = material.pick_intent(rng)
    query = material.pick_query(rng, intent, popular=0.85)
    label = intent
    if intent in CONFUSABLE and stable_fraction("classify", query) < 0.15:
        label = CONFUSABLE[intent]
    calls = []
    for _ in range(rng.choices([1, 2, 3], [82, 14, 4])[0]):
        calls.append(
            Call(
                at=at,
                key=KEYS["support-pipeline"],
                api="chat",
                model="gpt-4.1-mini",
                feature="intent-classifier",
                system=classifier_system(),
                messages=[Message("user", query)],
                reply=Reply(json.dumps({"intent": label})),
                params={"temperature": 0, "response_format": {"type": "json_object"}},
                shadow_headers=shadow("support", "intent-classifier"),
            )
        )
        at += rng.uniform(120, 7200)
    return calls


def ticket_summary(rng: random.Random, at: float) -> list[Call]:
    """An agent closes a ticket: Claude Haiku writes the summary for the CRM."""
    agent = rng.choice(AGENTS)
    transcript, summary = material.ticket_transcript(rng, material.pick_intent(rng))
    return [
        Call(
            at=at,
            key=KEYS["support-summaries"],
            api="messages",
            model="claude-haiku-4-5",
            feature="ticket-summary",
            system="Summarise the support conversation for the CRM in at most three sentences: the "
            "customer's issue, what was done, and whether it is resolved.",
            messages=[Message("user", transcript)],
            reply=Reply(summary),
            params={"temperature": 0.2, "max_tokens": 300},
            shadow_headers=shadow("support", "ticket-summary", agent),
            body_user=agent,
        )
    ]


AGENT_ASSIST_SYSTEM = (
    "You help Kestrel Bank support agents draft replies. Use only the handbook and the retrieved "
    "articles. Write a reply the agent can send as is, then one line starting 'Internal note:' if "
    "the case needs escalation."
)


def agent_assist(rng: random.Random, at: float) -> list[Call]:
    """An agent asks for draft replies; the handbook makes a long, cache-friendly prefix."""
    agent = rng.choice(AGENTS)
    calls = []
    for _ in range(rng.choices([1, 2, 3], [55, 30, 15])[0]):
        intent = material.pick_intent(rng)
        articles = "\n\n".join(material.retrieved_articles(rng, intent, k=3))
        query = material.pick_query(rng, intent, popular=0.3)
        escalate = rng.random() < 0.2
        reply = material.support_intents()[intent]["answer"]
        if escalate:
            reply += "\nInternal note: customer has written three times; escalate to tier 2."
        calls.append(
            Call(
                at=at,
                key=KEYS["support-pipeline"],
                api="chat",
                model="gpt-4.1-mini",
                feature="agent-assist",
                system=AGENT_ASSIST_SYSTEM,
                context=material.handbook(),
                messages=[Message("user", f"Retrieved articles:\n{articles}\n\nCustomer message: {query}")],
                reply=Reply(reply),
                params={"temperature": 0.2},
                shadow_headers=shadow("support", "agent-assist", agent),
            )
        )
        at += rng.uniform(40, 400)
    return calls


# --- growth ----------------------------------------------------------------------------------


def campaign_copy(rng: random.Random, at: float) -> list[Call]:
    """Marketers' notebook: creative copy on the big model, high temperature, no attribution."""
    product, segment, channel, n = material.campaign_request(rng)
    ask = f"Write {n} {channel} variants promoting {product} to {segment}. Keep each under 90 characters."
    return [
        Call(
            at=at,
            key=KEYS["growth-notebooks"],
            api="chat",
            model="gpt-4o",
            feature="campaign-copy",
            system="You are a senior copywriter for a European fintech. Be concrete, no exclamation marks.",
            messages=[Message("user", ask)],
            reply=Reply(material.campaign_copy(rng, product, segment, channel, n)),
            params={"temperature": 0.9, "top_p": 1},
        )
    ]


def review_insights(rng: random.Random, at: float) -> list[Call]:
    """Themes in a batch of customer feedback, on a thinking Gemini model."""
    messages, themes = material.feedback_batch(rng, rng.randint(12, 24))
    listing = "\n".join(f"- {m}" for m in messages)
    return [
        Call(
            at=at,
            key=KEYS["growth-insights"],
            api="generate_content",
            model="gemini-2.5-flash",
            feature="review-insights",
            system="You analyse customer feedback for a bank's product team. Group it into themes, "
            "count mentions, and say what the product team should look at first.",
            messages=[Message("user", f"Feedback from the last 24 hours:\n{listing}")],
            reply=Reply(themes, reasoning_tokens=rng.randint(300, 1600)),
            params={"temperature": 0.4},
            shadow_headers=shadow("growth", "review-insights"),
        )
    ]


def campaign_chat(rng: random.Random, at: float) -> list[Call]:
    """A marketer brainstorms in the internal studio app (streamed Gemini, a few turns)."""
    marketer = rng.choice(MARKETERS)
    history: list[Message] = []
    calls = []
    for _ in range(rng.choices([1, 2, 3], [50, 35, 15])[0]):
        product, segment, _, _ = material.campaign_request(rng)
        history.append(Message("user", f"Give me campaign ideas for {product} aimed at {segment}."))
        ideas = material.campaign_ideas(rng, product, segment)
        calls.append(
            Call(
                at=at,
                key=KEYS["growth-studio"],
                api="generate_content",
                model="gemini-2.5-flash",
                feature="campaign-studio",
                system="You are a growth marketing assistant for a digital bank.",
                messages=list(history),
                reply=Reply(ideas, reasoning_tokens=rng.randint(80, 700)),
                stream=True,
                params={"temperature": 1.0},
                shadow_headers=shadow("growth", "campaign-studio", marketer),
            )
        )
        history.append(Message("assistant", ideas))
        at += rng.uniform(30, 240)
    return calls


# --- platform --------------------------------------------------------------------------------

HELP_RAG_SYSTEM = (
    "You answer questions on Kestrel Bank's help centre. Use only the handbook below and the "
    "articles in the user's message. If the answer is not there, say so and link to /contact. "
    "Answer in at most 120 words."
)


def help_center(rng: random.Random, at: float) -> list[Call]:
    """Website visitors ask the help centre: embed the question, then Claude answers from the
    handbook (a cache breakpoint after it) and the retrieved articles. Follow-ups hit the cache."""
    visitor = customer_id(rng)
    stream = rng.random() < 0.7
    history: list[Message] = []
    calls = []
    for _ in range(rng.choices([1, 2, 3, 4], [45, 30, 15, 10])[0]):
        intent = material.pick_intent(rng)
        question = material.pick_query(rng, intent, popular=0.5)
        calls.append(
            Call(
                at=at,
                key=KEYS["platform-search"],
                api="embeddings",
                model="text-embedding-3-small",
                feature="help-center-search",
                embedding_inputs=[question],
                params={"dimensions": 256},
                shadow_headers=shadow("platform", "help-center-search"),
            )
        )
        articles = "\n\n".join(material.retrieved_articles(rng, intent, k=3))
        answer = material.support_intents()[intent]["answer"]
        # Earlier turns keep only the questions and answers; fresh articles go with the new one.
        turn = Message("user", f"<articles>\n{articles}\n</articles>\n\nQuestion: {question}")
        calls.append(
            Call(
                at=at + rng.uniform(0.15, 0.4),
                key=KEYS["platform-help-rag"],
                api="messages",
                model="claude-sonnet-4-5",
                feature="help-center-answers",
                system=HELP_RAG_SYSTEM,
                context=material.handbook(),
                messages=[*history, turn],
                reply=Reply(answer),
                stream=stream,
                params={"max_tokens": 1024, "temperature": 0.3},
                cache_control=True,
                shadow_headers=shadow("platform", "help-center-answers"),
                body_user=visitor if rng.random() < 0.5 else None,
            )
        )
        history += [Message("user", question), Message("assistant", answer)]
        at += rng.uniform(45, 240)
    return calls


def search_indexer(rng: random.Random, at: float) -> list[Call]:
    """Re-embedding changed help-centre chunks in small batches."""
    intents = rng.sample(list(material.support_intents()), rng.randint(2, 5))
    return [
        Call(
            at=at,
            key=KEYS["platform-indexer"],
            api="embeddings",
            model="text-embedding-3-small",
            feature="search-index",
            embedding_inputs=[material.help_article(i) for i in intents],
            params={"dimensions": 256},
            shadow_headers=shadow("platform", "search-index"),
        )
    ]


# --- data ------------------------------------------------------------------------------------

QUEUES = ["chat", "email", "cards"]


def nightly_digest(rng: random.Random, at: float) -> list[Call]:
    """02:00 job: one digest per support queue, written by gpt-4o-mini at temperature 0."""
    day = previous_day(at)
    calls = []
    for queue in QUEUES:
        stats, digest = material.daily_digest(rng, f"{day} ({queue} queue)")
        calls.append(
            Call(
                at=at,
                key=KEYS["data-etl"],
                api="chat",
                model="gpt-4o-mini",
                feature="nightly-digest",
                system="Write a three-sentence digest of the day's support statistics for the ops channel.",
                messages=[Message("user", stats)],
                reply=Reply(digest),
                params={"temperature": 0},
                shadow_headers=shadow("data", "nightly-digest"),
            )
        )
        at += rng.uniform(2, 9)
    return calls


def previous_day(at: float) -> str:
    """The day a nightly job at `at` reports on (the day before)."""
    return (datetime.fromtimestamp(at, UTC) - timedelta(days=1)).strftime("%Y-%m-%d")


RUNAWAY_MEAN_INTERVAL_S = 12.0  # four workers, each waiting for its call to finish
BACKFILL_SYSTEM = "Summarise the support ticket in one sentence for the analytics warehouse."


def runaway_backfill(rng: random.Random, start: float, count: int) -> list[Call]:
    """The data team's backfill script with a bug: the cursor does not advance after a page, so
    it re-summarises the same few hundred tickets again and again, four workers in parallel."""
    records = []
    for record_id in range(48_210, 48_210 + max(1, count // 6)):
        intent = material.pick_intent(rng)
        records.append(material.record_summary_task(rng, record_id, intent, "2026-09-30"))
    calls = []
    at = start
    for i in range(count):
        record, summary = records[i % len(records)]
        calls.append(
            Call(
                at=round(at, 3),
                key=KEYS["data-etl"],
                api="chat",
                model="gpt-4o",
                feature="ticket-backfill",
                system=BACKFILL_SYSTEM,
                messages=[Message("user", record)],
                reply=Reply(summary),
                params={"temperature": 0},
                shadow_headers=shadow("data", "ticket-backfill"),
            )
        )
        at += rng.expovariate(1 / RUNAWAY_MEAN_INTERVAL_S)
    return calls


SQL_SYSTEM = "Write one PostgreSQL query that answers the analyst's question. Reply with SQL only."


def sql_helper(rng: random.Random, at: float) -> list[Call]:
    """Analysts turn questions into SQL with a reasoning model on the Responses API."""
    analyst = rng.choice(ANALYSTS)
    question, sql = rng.choice(material.SQL_QUESTIONS)
    return [
        Call(
            at=at,
            key=KEYS["data-analysts"],
            api="responses",
            model="o4-mini",
            feature="sql-helper",
            system=SQL_SYSTEM,
            messages=[Message("user", f"{material.SQL_SCHEMA}\n\nQuestion: {question}")],
            reply=Reply(sql, reasoning_tokens=rng.choice([192, 256, 384, 448, 640, 896, 1216])),
            stream=rng.random() < 0.25,
            params={"reasoning": {"effort": "medium"}},
            shadow_headers=shadow("data", "sql-helper", analyst),
        )
    ]


# --- eng-tools -------------------------------------------------------------------------------

CODE_TOOLS = [
    Tool(
        "read_file",
        "Read a file from the repository.",
        {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    ),
    Tool(
        "search_code",
        "Search the repository for code matching a query.",
        {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    ),
    Tool(
        "run_tests",
        "Run tests and return the failures.",
        {
            "type": "object",
            "properties": {"path": {"type": "string"}, "filter": {"type": "string"}},
            "required": ["path"],
        },
    ),
]
CODE_SYSTEM = (
    "You are Kestrel's internal coding assistant. Use the tools to look at the code before "
    "answering. Be concise and show code in fenced blocks."
)


def code_assistant(rng: random.Random, at: float) -> list[Call]:
    """The IDE assistant: a tool call, then the answer using the tool's result (both streamed)."""
    engineer = rng.choice(ENGINEERS)
    task = rng.choice(material.code_tasks())
    on_claude = rng.random() < 0.4
    key, api, model = (
        (KEYS["eng-copilot-anthropic"], "messages", "claude-sonnet-4-5")
        if on_claude
        else (KEYS["eng-copilot-openai"], "chat", "gpt-4.1")
    )
    call_id = ids.anthropic_tool_use(rng) if on_claude else ids.openai_tool_call(rng)
    # GPT writes compact JSON arguments, Claude spaced ones, as the recorded exchanges show.
    arguments = json.dumps(task["args"], separators=None if on_claude else (",", ":"))
    tool_call = ToolCall(call_id, task["tool"], arguments)
    common = dict(
        key=key,
        api=api,
        model=model,
        feature="code-assistant",
        system=CODE_SYSTEM,
        tools=CODE_TOOLS,
        stream=True,
        params={"temperature": 0.2, "max_tokens": 2048},
        shadow_headers=shadow("eng-tools", "code-assistant", engineer),
    )
    ask = Message("user", task["ask"])
    first = Call(at=at, messages=[ask], reply=Reply(tool_calls=[tool_call]), **common)
    at += rng.uniform(1.5, 6)  # the tool runs on the engineer's machine
    history = [
        ask,
        Message("assistant", tool_calls=[tool_call]),
        Message("tool", task["result"], tool_call_id=call_id, tool_name=task["tool"]),
    ]
    second = Call(at=at, messages=list(history), reply=Reply(task["answer"]), **common)
    return [first, second]


def commit_message(rng: random.Random, at: float) -> list[Call]:
    """A git hook writes commit messages; its old streaming code never asked for usage."""
    path, diff, message = rng.choice(material.COMMIT_DIFFS)
    return [
        Call(
            at=at,
            key=KEYS["eng-cli"],
            api="chat",
            model="gpt-4o-mini",
            feature="commit-message",
            system="Write a git commit subject line (imperative, max 72 characters) for the diff.",
            messages=[Message("user", f"diff --git a/{path} b/{path}\n{diff}")],
            reply=Reply(message),
            stream=True,
            include_usage=False,
            params={"temperature": 0.2},
            shadow_headers=shadow("eng-tools", "commit-message", rng.choice(ENGINEERS)),
        )
    ]


CAMPAIGN_LAUNCH = date(2026, 10, 13)

FEATURES = [
    Feature("support-bot", "support", 5.5, 3.5, "customers", support_bot, growth_per_day=0.01),
    Feature("intent-classifier", "support", 4.5, 2.5, "customers", intent_classifier, growth_per_day=0.01),
    Feature("ticket-summary", "support", 3, 1, "office", ticket_summary),
    Feature("agent-assist", "support", 1.2, 0.2, "office", agent_assist),
    Feature("campaign-copy", "growth", 1.5, 0.1, "office", campaign_copy, spike_days=((CAMPAIGN_LAUNCH, 4.0),)),
    Feature("review-insights", "growth", 1.5, 0.2, "office", review_insights),
    Feature("campaign-studio", "growth", 1.2, 0.1, "office", campaign_chat, spike_days=((CAMPAIGN_LAUNCH, 4.0),)),
    Feature("help-center", "platform", 1.1, 0.6, "customers", help_center),
    Feature("search-index", "platform", 0.8, 0.8, "always", search_indexer),
    Feature("nightly-digest", "data", 1, 1, "nightly", nightly_digest, scheduled=True),
    Feature("sql-helper", "data", 1.5, 0.1, "office", sql_helper),
    Feature("code-assistant", "eng-tools", 2, 0.1, "office", code_assistant),
    Feature("commit-message", "eng-tools", 1.5, 0.1, "office", commit_message),
]
