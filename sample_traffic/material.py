"""The texts the sample month's calls are made of.

Customer messages are real (a BANKING77 subset, see banking77/SOURCE.txt); everything the fictional
Kestrel Bank says back is written here or in material/*.json. Long texts (the support handbook the
RAG features send, help articles) are built from small tables so that they read like real
documents without being pasted in as blobs. Everything is a pure function of its arguments.
"""

import csv
import json
import random
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
BANK = "Kestrel Bank"


# --- BANKING77 customer messages ---------------------------------------------------------------


@cache
def queries_by_intent() -> dict[str, list[str]]:
    """The BANKING77 subset: intent -> customer messages (paraphrases of one another)."""
    by_intent: dict[str, list[str]] = {}
    with open(HERE / "banking77" / "queries.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_intent.setdefault(row["category"], []).append(row["text"].strip())
    return by_intent


@cache
def all_intent_labels() -> list[str]:
    return json.loads((HERE / "banking77" / "categories.json").read_text(encoding="utf-8"))


@cache
def support_intents() -> dict[str, dict[str, str]]:
    """intent -> {"issue": short description, "answer": the bank's answer}."""
    return json.loads((HERE / "material" / "support_intents.json").read_text(encoding="utf-8"))


@cache
def code_tasks() -> list[dict]:
    return json.loads((HERE / "material" / "code_tasks.json").read_text(encoding="utf-8"))


def intent_weights() -> list[tuple[str, float]]:
    """Intents with Zipf-like popularity: a few topics make most of the support volume."""
    intents = list(queries_by_intent())
    return [(intent, 1.0 / (rank + 1) ** 0.8) for rank, intent in enumerate(intents)]


def pick_intent(rng: random.Random) -> str:
    intents, weights = zip(*intent_weights(), strict=True)
    return rng.choices(intents, weights)[0]


def pick_query(rng: random.Random, intent: str, popular: float = 0.6) -> str:
    """A customer message for `intent`; the first few of each cluster come up most often."""
    queries = queries_by_intent()[intent]
    if rng.random() < popular:
        return queries[min(int(rng.expovariate(0.9)), len(queries) - 1)]
    return rng.choice(queries)


def humanize(intent: str) -> str:
    return intent.replace("_", " ").replace("?", "").capitalize()


# --- Support handbook (the long, stable context of the RAG features) ---------------------------

PLANS = ["Standard", "Plus", "Premium", "Metal"]
PLAN_FACTS = [
    ("Monthly fee", ["EUR 0", "EUR 3.99", "EUR 7.99", "EUR 13.99"]),
    ("Free ATM withdrawals per month", ["EUR 200", "EUR 400", "EUR 800", "EUR 1,200"]),
    ("ATM fee above allowance", ["2%", "2%", "1.5%", "1%"]),
    ("FX without markup per month", ["EUR 1,000", "EUR 3,000", "unlimited", "unlimited"]),
    ("Weekend FX markup", ["1%", "1%", "0.5%", "0.5%"]),
    ("Express card delivery", ["EUR 9", "EUR 9", "free", "free"]),
    ("Card replacement", ["EUR 6", "EUR 6", "free", "free"]),
    ("Disposable virtual cards", ["1 per day", "5 per day", "20 per day", "unlimited"]),
    ("Priority chat support", ["no", "no", "yes", "yes, 24/7"]),
]
TRANSFER_RAILS = [
    ("Kestrel to Kestrel", "instant", "free", "24/7"),
    ("SEPA Credit Transfer", "up to 1 working day", "free", "working days"),
    ("SEPA Instant", "under 10 seconds", "free", "24/7"),
    ("UK Faster Payments", "within 2 hours", "free", "24/7"),
    ("SWIFT (EUR/USD)", "2-5 working days", "EUR 5 + correspondent fees", "working days"),
    ("SWIFT (other currencies)", "3-5 working days", "0.5%, min EUR 5", "working days"),
    ("US ACH", "1-3 working days", "USD 1", "US working days"),
]
DELIVERY_DAYS = [
    ("Germany", 3, 1),
    ("France", 3, 1),
    ("Spain", 4, 2),
    ("Italy", 4, 2),
    ("Netherlands", 3, 1),
    ("Ireland", 4, 2),
    ("Poland", 5, 2),
    ("Portugal", 5, 2),
    ("United Kingdom", 5, 2),
    ("Switzerland", 6, 2),
    ("United States", 9, 3),
    ("Australia", 10, 4),
]
LIMITS = [
    ("Contactless payment", "EUR 50 per payment, EUR 150 cumulative before PIN is asked"),
    ("ATM withdrawal", "EUR 3,000 per day, 10 withdrawals per day"),
    ("Card top-up", "EUR 5,000 per day, EUR 30,000 per month"),
    ("Bank transfer top-up", "no limit (source of funds checks above EUR 15,000)"),
    ("Outgoing transfer", "EUR 50,000 per day, SWIFT above EUR 10,000 reviewed"),
    ("Cheque deposit", "not supported"),
]
CURRENCIES = [  # (code, name, held in app, card spending, transfers out)
    ("EUR", "Euro", "yes", "yes", "SEPA, SWIFT"),
    ("USD", "US dollar", "yes", "yes", "ACH, SWIFT"),
    ("GBP", "Pound sterling", "yes", "yes", "Faster Payments, SWIFT"),
    ("CHF", "Swiss franc", "yes", "yes", "SWIFT"),
    ("PLN", "Polish zloty", "yes", "yes", "Elixir, SWIFT"),
    ("SEK", "Swedish krona", "yes", "yes", "SWIFT"),
    ("NOK", "Norwegian krone", "yes", "yes", "SWIFT"),
    ("DKK", "Danish krone", "yes", "yes", "SWIFT"),
    ("CZK", "Czech koruna", "yes", "yes", "SWIFT"),
    ("HUF", "Hungarian forint", "yes", "yes", "SWIFT"),
    ("RON", "Romanian leu", "yes", "yes", "SWIFT"),
    ("JPY", "Japanese yen", "yes", "yes", "SWIFT"),
    ("AUD", "Australian dollar", "yes", "yes", "SWIFT"),
    ("CAD", "Canadian dollar", "yes", "yes", "SWIFT"),
    ("TRY", "Turkish lira", "no", "yes", "none"),
    ("MXN", "Mexican peso", "no", "yes", "none"),
    ("THB", "Thai baht", "no", "yes", "none"),
    ("AED", "UAE dirham", "yes", "yes", "SWIFT"),
    ("INR", "Indian rupee", "no", "yes", "SWIFT (outbound only)"),
    ("ZAR", "South African rand", "no", "yes", "none"),
]
DISPUTE_REASONS = [  # (reason, how long the customer has, evidence needed)
    ("Goods or services not received", "120 days", "order confirmation, delivery date promised"),
    ("Item not as described", "120 days", "photos, merchant correspondence"),
    ("Cancelled subscription still charged", "120 days", "cancellation confirmation"),
    ("Duplicate charge", "120 days", "both transaction ids"),
    ("Incorrect amount", "120 days", "receipt showing the correct amount"),
    ("Unrecognised payment (fraud)", "13 months", "none; card must be frozen"),
    ("ATM did not dispense cash", "60 days", "ATM location and time"),
    ("Refund promised but not received", "120 days from the promised date", "refund confirmation or ARN"),
]
ESCALATION_RULES = [
    "Suspected fraud or a compromised card: freeze the card first, then hand over to the fraud queue (priority P1).",
    "Customer mentions vulnerability, bereavement or financial hardship: hand over to a human agent, no scripted replies.",
    "Chargebacks over EUR 500 or older than 60 days: the disputes team decides; do not promise an outcome.",
    "Identity verification failed three times: manual review queue, answer within 24 hours.",
    "Account closure with a positive balance: confirm the withdrawal destination before closing.",
    "Never ask for a full card number, PIN, passcode or one-time code. Never share internal ticket notes.",
    "Quote fees and limits only from this handbook; if the plan is unknown, ask which plan the customer has.",
    "Outages: check the status page banner; if an incident is open, use the incident macro and do not speculate about causes.",
]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@cache
def handbook() -> str:
    """The support handbook: ~2,100 tokens that every RAG call sends unchanged (so it caches)."""
    plan_rows = [[fact, *values] for fact, values in PLAN_FACTS]
    rail_rows = [list(rail) for rail in TRANSFER_RAILS]
    delivery_rows = [
        [c, f"{std}-{std + 2} working days", f"{exp} working day{'s' * (exp > 1)}"] for c, std, exp in DELIVERY_DAYS
    ]
    parts = [
        f"# {BANK} support handbook (edition 2026-10)",
        "This handbook is the single source of truth for fees, limits and timings quoted to customers.",
        "## Plans and fees",
        _table(["", *PLANS], plan_rows),
        "## Transfers",
        _table(["Rail", "Arrives", "Fee", "Runs"], rail_rows),
        "Transfers sent after 16:00 CET on a working day are processed on the next working day unless the rail runs 24/7.",
        "A transfer can be cancelled while its status is Pending. Sent transfers can only be recalled by the receiving bank.",
        "## Card delivery",
        _table(["Country", "Standard", "Express"], delivery_rows),
        "Cards ship from Vilnius. Tracking starts once the courier scans the parcel, usually the next working day.",
        "If a card has not arrived after the standard window plus 3 working days, order a free replacement and cancel the old card.",
        "## Limits",
        "\n".join(f"- {name}: {value}." for name, value in LIMITS),
        "## Card payments and exchange",
        "Card payments in a foreign currency use the network rate on the settlement day plus the plan's weekend markup when applicable.",
        "Pre-authorisations (hotels, car rentals, fuel) can be held for up to 7 days (31 days for car rentals) and are released automatically.",
        "A payment shown twice is usually a pre-authorisation plus the final charge; only open a dispute once both have completed.",
        "Refunds are sent by the merchant and take 5-10 working days; ask for the ARN when a refund is late.",
        "## Top-ups",
        "Card top-ups are instant in most cases (up to 30 minutes). A top-up is reverted when the issuing bank disputes the payment.",
        "Top-ups with cards issued outside the EEA cost 0.7%. Apple Pay and Google Pay top-ups follow card top-up limits.",
        "## Security",
        "Three wrong PIN entries block the PIN; it can be unblocked in the app or at an ATM. The PIN can be viewed in the app.",
        "Contactless works only after one chip-and-PIN payment with a new card.",
        "## Currencies",
        _table(["Code", "Currency", "Hold in app", "Card spending", "Send via"], [list(c) for c in CURRENCIES]),
        "Currencies that cannot be held are converted at the card network rate when spent; exchanges in the app run 24/7.",
        "## Disputes and chargebacks",
        _table(["Reason", "Deadline", "Evidence"], [list(d) for d in DISPUTE_REASONS]),
        "Open a dispute only after the merchant has had 15 days to answer, except for fraud. Provisional credit is given for fraud disputes within 10 working days.",
        "## Escalation rules",
        "\n".join(f"{i}. {rule}" for i, rule in enumerate(ESCALATION_RULES, 1)),
    ]
    return "\n\n".join(parts)


def help_article(intent: str) -> str:
    """A short help-centre article about one intent (what a retriever returns)."""
    info = support_intents()[intent]
    return (
        f"### Help article: {humanize(intent)}\n"
        f"Customers ask about {info['issue']}.\n{info['answer']}\n"
        f"Applies to plans: {', '.join(PLANS)}. Last reviewed 2026-09."
    )


def retrieved_articles(rng: random.Random, intent: str, k: int = 3) -> list[str]:
    """The article for `intent` plus k-1 neighbours, as a vector search would rank them."""
    intents = list(support_intents())
    others = rng.sample([i for i in intents if i != intent], k - 1)
    return [help_article(i) for i in [intent, *others]]


# --- Growth: campaign copy and ideas --------------------------------------------------------------

PRODUCTS = [
    "Metal plan",
    "SEPA Instant transfers",
    "disposable virtual cards",
    "savings vaults",
    "travel insurance add-on",
    "junior accounts",
    "Apple Pay top-ups",
    "cashback on groceries",
]
SEGMENTS = [
    "students",
    "frequent travellers",
    "freelancers",
    "new customers in Spain",
    "dormant accounts",
    "Premium customers",
    "small business owners",
    "parents",
]
CHANNELS = ["push notification", "email subject line", "in-app banner", "Instagram ad"]
HOOKS = [
    "No fees abroad",
    "Your money, instantly",
    "Pay like a local",
    "Skip the queue",
    "Smarter spending starts today",
    "Built for your next trip",
    "Made for busy weeks",
    "Put your savings on autopilot",
    "Tap, pay, done",
    "Treat yourself, not the bank",
]
CLOSERS = ["Try it now", "Open the app", "Upgrade in 2 taps", "Learn more", "Get started", "Activate today"]


def campaign_request(rng: random.Random) -> tuple[str, str, str, int]:
    return rng.choice(PRODUCTS), rng.choice(SEGMENTS), rng.choice(CHANNELS), rng.choice([3, 3, 5])


def campaign_copy(rng: random.Random, product: str, segment: str, channel: str, n: int) -> str:
    lines = []
    for i in range(1, n + 1):
        hook = rng.choice(HOOKS)
        lines.append(f"{i}. {hook}: {product} for {segment}. {rng.choice(CLOSERS)}.")
    return f"Here are {n} {channel} options:\n" + "\n".join(lines)


IDEA_TEMPLATES = [
    "Lead with a concrete number: show how much {segment} saved last month with {product}.",
    "Run a 2-week challenge for {segment}: use {product} three times and unlock a reward.",
    "Pair {product} with a timely moment (back to school, holiday travel) for {segment}.",
    "A/B test a benefit-first message against a social-proof message for {segment}.",
    "Use an in-app checklist that walks {segment} through their first use of {product}.",
    "Partner with a brand {segment} already love and bundle it with {product}.",
]


def campaign_ideas(rng: random.Random, product: str, segment: str) -> str:
    picks = rng.sample(IDEA_TEMPLATES, 3)
    body = "\n".join(f"* {t.format(product=product, segment=segment)}" for t in picks)
    return (
        f"Here are three ideas to promote {product} to {segment}:\n\n{body}\n\nWant me to draft copy for one of them?"
    )


# --- Data team: SQL helper, digests, ticket summaries ---------------------------------------------

SQL_QUESTIONS = [
    (
        "How many new accounts were opened per country last week?",
        "SELECT country, count(*) AS new_accounts\nFROM accounts\nWHERE opened_at >= date_trunc('week', now()) - interval '1 week'\n  AND opened_at < date_trunc('week', now())\nGROUP BY country\nORDER BY new_accounts DESC;",
    ),
    (
        "Which merchants had the most chargebacks in September?",
        "SELECT m.name, count(*) AS chargebacks\nFROM disputes d JOIN merchants m ON m.id = d.merchant_id\nWHERE d.kind = 'chargeback' AND d.opened_at >= '2026-09-01' AND d.opened_at < '2026-10-01'\nGROUP BY m.name\nORDER BY chargebacks DESC\nLIMIT 20;",
    ),
    (
        "What is the median time to first response for support tickets by channel?",
        "SELECT channel,\n       percentile_cont(0.5) WITHIN GROUP (ORDER BY first_response_at - created_at) AS median_first_response\nFROM tickets\nWHERE created_at >= now() - interval '30 days'\nGROUP BY channel;",
    ),
    (
        "Show daily card top-up volume in EUR for the last 14 days.",
        "SELECT date_trunc('day', created_at) AS day, sum(amount_eur) AS topup_eur\nFROM topups\nWHERE status = 'completed' AND created_at >= now() - interval '14 days'\nGROUP BY 1\nORDER BY 1;",
    ),
    (
        "Which plan upgrades happened after a declined payment within 24 hours?",
        "SELECT u.account_id, u.from_plan, u.to_plan\nFROM plan_changes u\nJOIN card_payments p ON p.account_id = u.account_id\nWHERE p.status = 'declined'\n  AND u.changed_at BETWEEN p.created_at AND p.created_at + interval '24 hours';",
    ),
    (
        "Count failed SWIFT transfers by destination currency this month.",
        "SELECT currency, count(*) AS failed\nFROM transfers\nWHERE rail = 'swift' AND status = 'failed' AND created_at >= date_trunc('month', now())\nGROUP BY currency\nORDER BY failed DESC;",
    ),
]
SQL_SCHEMA = (
    "Tables: accounts(id, country, plan, opened_at), tickets(id, channel, intent, created_at, "
    "first_response_at, resolved_at), card_payments(id, account_id, merchant_id, amount_eur, status, "
    "created_at), topups(id, account_id, amount_eur, status, created_at), transfers(id, account_id, rail, "
    "currency, amount, status, created_at), disputes(id, merchant_id, kind, opened_at), "
    "merchants(id, name, mcc), plan_changes(account_id, from_plan, to_plan, changed_at)."
)


def ticket_transcript(rng: random.Random, intent: str) -> tuple[str, str]:
    """A short support conversation and the one-paragraph summary of it."""
    info = support_intents()[intent]
    query = pick_query(rng, intent, popular=0.3)
    resolved = rng.random() < 0.7
    follow_up = (
        rng.choice(["Thanks, that helps.", "Ok, I'll try that.", "Great, thank you!"])
        if resolved
        else rng.choice(
            [
                "That doesn't help, I already did that.",
                "Can I talk to a person?",
                "It's been two weeks, this is not acceptable.",
            ]
        )
    )
    transcript = f"Customer: {query}\nAssistant: {info['answer']}\nCustomer: {follow_up}"
    outcome = "Resolved by the assistant's answer." if resolved else "Not resolved; escalate to a human agent."
    summary = (
        f"The customer contacted support about {info['issue']}. The assistant explained the standard process. {outcome}"
    )
    return transcript, summary


def record_summary_task(rng: random.Random, record_id: int, intent: str, day: str) -> tuple[str, str]:
    """One ticket record for the data team's backfill job, and its one-line summary."""
    info = support_intents()[intent]
    query = pick_query(rng, intent, popular=0.9)
    channel = rng.choice(["chat", "chat", "email", "app"])
    record = f"ticket_id: {record_id}\ncreated: {day}\nchannel: {channel}\nintent: {intent}\nmessage: {query}"
    return record, f"Customer reports {info['issue']} via {channel}."


def daily_digest(rng: random.Random, day: str) -> tuple[str, str]:
    """A day's support statistics and the digest the nightly job writes from them."""
    intents = rng.sample(list(support_intents()), 5)
    counts = sorted((rng.randint(40, 400) for _ in intents), reverse=True)
    csat = round(rng.uniform(4.0, 4.7), 2)
    deflection = rng.randint(48, 71)
    stats = "\n".join(f"{i}: {c} tickets" for i, c in zip(intents, counts, strict=True))
    prompt = f"Support statistics for {day}:\n{stats}\nCSAT: {csat}\nBot deflection rate: {deflection}%"
    top = support_intents()[intents[0]]["issue"]
    digest = (
        f"On {day} the busiest topic was {top} ({counts[0]} tickets), followed by "
        f"{support_intents()[intents[1]]['issue']} ({counts[1]}). The bot resolved {deflection}% of "
        f"conversations without an agent and CSAT was {csat}."
    )
    return prompt, digest


def feedback_batch(rng: random.Random, size: int) -> tuple[list[str], str]:
    """App-store style feedback (customer messages) and the themes a model finds in them."""
    picks = [pick_intent(rng) for _ in range(size)]
    messages = [pick_query(rng, intent, popular=0.2) for intent in picks]
    counts: dict[str, int] = {}
    for intent in picks:
        counts[intent] = counts.get(intent, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
    themes = "\n".join(
        f"- {humanize(i)} ({n} mentions): customers report {support_intents()[i]['issue']}." for i, n in ranked
    )
    return messages, f"Top themes in this batch:\n{themes}\nOverall sentiment: mostly frustrated, few churn threats."


COMMIT_DIFFS = [
    (
        "services/cards/limits.py",
        "-    MAX_CONTACTLESS = 50\n+    MAX_CONTACTLESS = settings.contactless_limit()",
        "Read contactless limit from settings instead of a constant",
    ),
    (
        "web/src/TransferForm.tsx",
        "-  const fee = 0\n+  const fee = quoteFee(rail, amount)",
        "Show the quoted transfer fee before confirming",
    ),
    (
        "jobs/export_balances.py",
        "-for account in Account.objects.all():\n+for row in rows.iterator(chunk_size=5000):",
        "Aggregate balances in SQL to avoid N+1 queries in export",
    ),
    (
        "deploy/payments-api/deployment.yaml",
        "-  failureThreshold: 1\n+  failureThreshold: 3",
        "Relax payments-api liveness probe to stop restart loops",
    ),
    (
        "services/notify/webhooks.py",
        "-    delay = 2 ** attempt\n+    delay = min(2 ** attempt, 300)",
        "Cap webhook retry backoff at five minutes",
    ),
    (
        "services/transfers/iban.py",
        "+def iban_checksum_ok(value: str) -> bool:",
        "Validate IBAN mod-97 checksum before sending transfers",
    ),
]
