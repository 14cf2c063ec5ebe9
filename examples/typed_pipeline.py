"""A typed pipeline: mypy follows the item type through every operator (``Dataset[T]``).

Orders and customers as plain dataclasses; revenue per country, the top countries, and the
customers without an order. ``mypy --strict examples/typed_pipeline.py`` checks it (the test
suite does: tests/integration/test_typed_example.py), so a function that does not fit the
items (``orders.map(str.upper)``) is an error before anything runs.

    python examples/typed_pipeline.py            # prints the report
    python examples/typed_pipeline.py --json     # last line: JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import operator

import adrizzle


@dataclasses.dataclass(frozen=True)
class Order:
    customer: int
    cents: int


@dataclasses.dataclass(frozen=True)
class Customer:
    id: int
    country: str


def make_orders(n: int) -> list[Order]:
    return [Order(customer=(i * 7) % 40, cents=100 + (i * 37) % 900) for i in range(n)]


def make_customers() -> list[Customer]:
    return [Customer(i, ("DE", "FR", "JP", "BR", "US")[i % 5]) for i in range(50)]


def by_customer(order: Order) -> tuple[int, int]:
    return (order.customer, order.cents)


def country_of(customer: Customer) -> tuple[int, str]:
    return (customer.id, customer.country)


def revenue_key(pair: tuple[int, tuple[int, str]]) -> tuple[str, int]:
    _customer, (cents, country) = pair
    return (country, cents)


def report(engine: adrizzle.LocalEngine, n: int) -> dict[str, object]:
    orders: adrizzle.SyncDataset[Order] = engine.parallelize(make_orders(n), partitions=4)
    customers = engine.parallelize(make_customers(), partitions=2)
    spent = orders.map(by_customer).reduce_by_key(operator.add)  # SyncDataset[tuple[int, int]]
    joined = spent.join(customers.map(country_of))  # SyncDataset[tuple[int, tuple[int, str]]]
    per_country = joined.map(revenue_key).reduce_by_key(operator.add)
    top: list[tuple[str, int]] = per_country.sort_by(lambda kv: -kv[1]).take(3)
    quiet = customers.map(country_of).left_outer_join(spent)
    without_orders: list[int] = sorted(quiet.filter(lambda kv: kv[1][1] is None).keys().collect())
    return {"top": top, "without_orders": without_orders, "orders": orders.count()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print only a JSON summary")
    args = parser.parse_args()
    with adrizzle.LocalEngine(workers=2, cores=1) as engine:
        result = report(engine, args.orders)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>15}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
