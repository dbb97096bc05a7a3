"""The policy file: every mistake reported with its file, line and key; the example parses."""

from pathlib import Path

import pytest

from analysis.pricing.table import PriceTable
from analysis.simulate.engine import PolicyEngine
from analysis.simulate.policy import PolicyError, load_policy, parse_policy
from analysis.simulate.pricer import Pricer

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
name = "tight"

[cache.exact]
ttl = "30m"
scope = "team"

[[routing]]
name = "small-to-mini"
model = ["gpt-4o", "gpt-4o-2024-*"]
max_input_tokens = 2000
to = "gpt-4o-mini"

[[budget]]
name = "team-daily"
scope = "team"
window = "day"
limit_usd = 50
action = "downgrade"
to = "gpt-4o-mini"
"""


def error_of(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policy.toml")
    return caught.value


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_good_file_reads_into_policies():
    policy = parse_policy(GOOD, "policy.toml")
    assert policy.name == "tight"
    assert policy.exact_cache.ttl_seconds == 1800 and policy.exact_cache.scope == "team"
    assert policy.exact_cache.rules.allow_sampling is False
    rule = policy.routing[0]
    assert rule.to == "gpt-4o-mini" and rule.match.max_input_tokens == 2000
    assert dict(rule.match.text)["model"] == ("gpt-4o", "gpt-4o-2024-*")
    assert policy.budgets[0].action == "downgrade" and policy.budgets[0].limit_usd == 50.0
    assert policy.names == ["exact-cache", "small-to-mini", "team-daily"]


def test_wrong_type_names_line_and_key():
    text = GOOD.replace('to = "gpt-4o-mini"\n\n[[budget]]', "to = 5\n\n[[budget]]")
    error = error_of(text)
    assert str(error) == f'policy.toml:{line_of(text, "to = 5")}: [[routing]] "to": expected a model name'


def test_unknown_key_is_an_error_with_its_line():
    text = GOOD.replace("max_input_tokens = 2000", "max_input_tokens = 2000\nmax_imput_tokens = 3")
    error = error_of(text)
    assert (error.line, error.where, error.message) == (
        line_of(text, "max_imput_tokens"),
        '[[routing]] "max_imput_tokens"',
        "unknown key",
    )


def test_unknown_key_in_second_array_entry_points_at_that_entry():
    text = GOOD + '\n[[budget]]\nname = "key-hourly"\nwindow = "hour"\nlimit_usd = 1\nscope = "keys"\n'
    error = error_of(text)
    assert error.line == line_of(text, 'scope = "keys"')
    assert "expected one of global, key_id, team, feature, user" in error.message


def test_syntax_error_has_the_parser_line():
    text = GOOD.replace('scope = "team"\n\n[[routing]]', 'scope = = "team"\n\n[[routing]]')
    error = error_of(text)
    assert error.line == line_of(text, "scope = =")
    assert error.message.startswith("TOML syntax:")


@pytest.mark.parametrize(
    ("replace", "by", "fragment", "message"),
    [
        ('ttl = "30m"', 'ttl = "half an hour"', "ttl =", "expected a duration"),
        ('window = "day"', 'window = "week"', "window =", "expected one of hour, day, month"),
        ("limit_usd = 50", "limit_usd = -1", "limit_usd", "expected a number >= 0.0"),
        ('action = "downgrade"\nto = "gpt-4o-mini"', 'action = "downgrade"', "action =", 'a downgrade needs "to"'),
        (
            "max_input_tokens = 2000",
            'max_input_tokens = 2000\nsystem_prompt_regex = "("',
            "system_prompt_regex",
            "not a valid regular expression",
        ),
        (
            "max_input_tokens = 2000",
            "max_input_tokens = 2000\nmin_input_tokens = 5000",
            "max_input_tokens",
            "is below min_input_tokens",
        ),
        ('name = "team-daily"', 'name = "small-to-mini"', 'name = "small-to-mini"', "is used twice"),
    ],
)
def test_value_errors(replace, by, fragment, message):
    text = GOOD.replace(replace, by)
    error = error_of(text)
    assert message in error.message
    assert error.line == [i for i, line in enumerate(text.splitlines(), 1) if fragment in line][-1]


def test_missing_required_key_points_at_the_table_header():
    text = GOOD.replace('name = "team-daily"\n', "")
    error = error_of(text)
    assert error.line == line_of(text, "[[budget]]")
    assert error.message == 'missing "name"'


def test_unknown_table_is_reported():
    error = error_of(GOOD + '\n[[routes]]\nname = "x"\nto = "gpt-4o-mini"\n')
    assert error.where == '"routes"' and error.message == "unknown key"
    assert error.line == line_of(GOOD + "\n[[routes]]\n", "[[routes]]")


def test_routing_target_without_price_is_reported_at_its_line():
    text = GOOD.replace('to = "gpt-4o-mini"\n\n[[budget]]', 'to = "gpt-9-imaginary"\n\n[[budget]]')
    policy = parse_policy(text, "policy.toml")
    with pytest.raises(PolicyError) as caught:
        PolicyEngine(policy, Pricer(PriceTable.load()))
    assert caught.value.line == line_of(text, "gpt-9-imaginary")
    assert "has no price in price table" in caught.value.message


def test_example_policy_file_parses_and_uses_every_kind_of_policy():
    policy = load_policy(ROOT / "examples" / "policy.toml")
    assert policy.exact_cache and policy.semantic_cache
    assert policy.routing and policy.batch and policy.budgets and policy.rate_limits
    PolicyEngine(policy, Pricer(PriceTable.load()))  # every target model has a price


def test_unreadable_file(tmp_path):
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "missing.toml")
    assert "cannot read" in str(caught.value)
