"""When calls happen: the month, the shape of a day, and random arrivals that follow them.

All times are UTC. The company sits in Central Europe (UTC+2 in October until the 25th, then
UTC+1), so office hours are about 07:00-16:00 UTC; the customer-facing bot follows its customers
into the evening; batch jobs run at night.
"""

import math
import random
from datetime import UTC, date, datetime, timedelta

START = date(2026, 10, 1)  # a Thursday
DAYS = 30

# Relative weight of each UTC hour 0..23.
HOUR_PROFILES = {
    "office": [0, 0, 0, 0, 0, 0.2, 1, 4, 8, 10, 10, 7, 6, 9, 10, 9, 6, 3, 1.5, 0.8, 0.4, 0.2, 0, 0],
    "customers": [1, 0.6, 0.4, 0.3, 0.4, 1, 2.5, 4.5, 6, 7, 7.5, 7, 7, 7, 6.5, 6.5, 6.5, 7, 7.5, 7.5, 6.5, 5, 3.5, 2],
    "nightly": [0, 0, 10, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "always": [2, 2, 2, 2, 2, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 4, 4, 3, 3, 3, 2, 2],
}


def days() -> list[date]:
    return [START + timedelta(days=i) for i in range(DAYS)]


def is_weekend(day: date) -> bool:
    return day.weekday() >= 5


def day_start(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def arrivals(rng: random.Random, day: date, mean: float, profile: str, scheduled: bool = False) -> list[float]:
    """Sorted unix times of events on `day`, spread by the hour profile: a Poisson number of them,
    or exactly `mean` (rounded) for a scheduled job."""
    weights = HOUR_PROFILES[profile]
    n = round(mean) if scheduled else poisson(rng, mean)
    hours = rng.choices(range(24), weights=weights, k=n)
    base = day_start(day)
    return sorted(round(base + hour * 3600 + rng.random() * 3600, 3) for hour in hours)
