"""The committed sample catalog is exactly the generator's output, and every product fits the contract."""

from __future__ import annotations

from decimal import Decimal

from sbw_clickstream.contract import validate_event
from sbw_ops import catalog


def test_committed_csv_equals_generator_output() -> None:
    committed = catalog.SAMPLE_CSV.read_text(encoding="utf-8")
    assert committed == catalog.to_csv(catalog.generate()), "run: python -m sbw_ops.catalog --write"


def test_generator_is_deterministic_and_seed_dependent() -> None:
    assert catalog.generate(50, seed=7) == catalog.generate(50, seed=7)
    assert catalog.generate(50, seed=7) != catalog.generate(50, seed=8)


def test_catalog_shape() -> None:
    products = catalog.load_csv()
    assert len(products) == catalog.DEFAULT_COUNT
    assert len({p.product_id for p in products}) == len(products)
    assert len({p.url_path for p in products}) == len(products)
    assert len({p.category for p in products}) >= 8
    assert len({p.brand for p in products}) >= 20
    discounted = [p for p in products if p.discount_price is not None]
    assert 0 < len(discounted) < len(products)
    for product in products:
        assert product.price > 0
        assert product.discount_price is None or product.discount_price <= product.price
        assert product.price == product.price.quantize(Decimal("0.01"))
        assert product.stock >= 0
        assert product.url_path.startswith("/products/")


def test_every_product_context_is_valid_under_the_contract() -> None:
    for product in catalog.load_csv():
        event = {
            "event_timestamp": "2024-06-01T10:00:00+07:00",
            "event_name": "product_view",
            "client_id": "c-1",
            "session_id": "s-1",
            **product.context(),
        }
        assert validate_event(event) == [], product


def test_check_mode_detects_a_stale_file(tmp_path) -> None:
    stale = tmp_path / "products.csv"
    stale.write_text(catalog.to_csv(catalog.generate(3)), encoding="utf-8")
    assert catalog.main(["--count", "4", "--output", str(stale), "--check"]) == 1
    assert catalog.main(["--count", "4", "--output", str(stale), "--write"]) == 0
    assert catalog.main(["--count", "4", "--output", str(stale), "--check"]) == 0


def test_discount_above_price_from_a_database_row_is_dropped() -> None:
    row = {
        "product_id": 7,
        "name": "X",
        "category": "C",
        "brand": "B",
        "price": Decimal("10.00"),
        "discount_price": Decimal("12.00"),
        "url_path": "/products/x-7",
        "stock": 3,
    }
    product = catalog.product_from_mapping(row)
    assert product.product_id == "7"
    assert product.discount_price is None
