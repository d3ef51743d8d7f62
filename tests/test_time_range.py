"""``--split START:END`` with ISO times that hold colons of their own."""

import pytest

from factorgym.agents.policy_backtest import time_range
from factorgym.errors import ConfigError


@pytest.mark.parametrize("text, expected", [
    ("2021-01-01:2021-02-01", ("2021-01-01", "2021-02-01")),
    ("2021-01-01T12:00:2021-02-01", ("2021-01-01T12:00", "2021-02-01")),
    ("2021-01-01:2021-02-01T06:30", ("2021-01-01", "2021-02-01T06:30")),
    ("2021-01-01T12:00Z:2021-02-01T00:00Z", ("2021-01-01T12:00Z", "2021-02-01T00:00Z")),
    ("2021-01-01T12:00:", ("2021-01-01T12:00", None)),
    (":2021-02-01T00:00", (None, "2021-02-01T00:00")),
    (":", (None, None)),
    ("1609459200000:1612137600000", ("1609459200000", "1612137600000")),
])
def test_time_range_cuts_at_the_colon_between_two_times(text, expected):
    assert time_range(text) == expected


@pytest.mark.parametrize("text", ["2021-01-01:soon", "yesterday:2021-02-01"])
def test_time_range_rejects_what_is_not_two_times(text):
    with pytest.raises(ConfigError, match="START:END"):
        time_range(text)
