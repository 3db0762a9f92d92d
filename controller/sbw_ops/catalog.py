"""The shop's sample product catalog: generated deterministically, committed as a CSV.

`roles/oltp_schema/files/sample_products.csv` is this module's output (a test checks that the
committed file equals it); the `oltp_schema` role loads it into `clickstream_web.products` and the
`traffic` generator reads it (or the database) to build product views.

Regenerate with ``python -m sbw_ops.catalog --write`` (or ``--check`` to compare).
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

CSV_COLUMNS: tuple[str, ...] = (
    "product_id",
    "name",
    "category",
    "brand",
    "price",
    "discount_price",
    "url_path",
    "stock",
)
DEFAULT_SEED = 20240601
DEFAULT_COUNT = 300
FIRST_PRODUCT_ID = 1001
REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CSV = REPO_ROOT / "roles" / "oltp_schema" / "files" / "sample_products.csv"

# category -> (brands, nouns, (min price, max price))
_CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[int, int]]] = {
    "Electronics": (
        ("Voltex", "Nimbus", "Sonora", "Krypton"),
        ("Wireless Earbuds", "Bluetooth Speaker", "Smartwatch", "USB-C Charger", "Power Bank", "Headphones"),
        (9, 450),
    ),
    "Computers": (
        ("Lumio", "Bytecraft", "Orion"),
        ("Mechanical Keyboard", "Wireless Mouse", "27in Monitor", "Laptop Stand", "External SSD", "Webcam"),
        (15, 900),
    ),
    "Fashion": (
        ("Urban Thread", "Maison Lin", "Northpeak"),
        ("Linen Shirt", "Denim Jacket", "Chino Trousers", "Wool Sweater", "Rain Coat", "Leather Belt"),
        (12, 220),
    ),
    "Shoes": (
        ("Stride", "Terra", "Koa"),
        ("Running Shoes", "Leather Sneakers", "Hiking Boots", "Sandals", "Loafers"),
        (25, 260),
    ),
    "Home & Kitchen": (
        ("Casa Verde", "Ferro", "Hearth & Co"),
        ("Chef Knife", "Cast Iron Pan", "Coffee Grinder", "Glass Teapot", "Bamboo Cutting Board", "Blender"),
        (8, 320),
    ),
    "Beauty": (
        ("Aurelia", "Pure Lotus", "Dewdrop"),
        ("Face Serum", "Moisturizer", "Sunscreen SPF50", "Lip Balm", "Clay Mask", "Hair Oil"),
        (4, 90),
    ),
    "Sports": (
        ("Peakform", "Riptide", "Apex"),
        ("Yoga Mat", "Dumbbell Set", "Cycling Helmet", "Jump Rope", "Water Bottle", "Tennis Racket"),
        (6, 350),
    ),
    "Books": (
        ("Lantern Press", "Blue Heron", "Atlas House"),
        ("Cookbook", "Travel Guide", "Mystery Novel", "Data Science Handbook", "Poetry Collection"),
        (7, 60),
    ),
    "Toys": (
        ("Playnest", "Brickly", "Tumble"),
        ("Building Blocks", "Puzzle 1000pc", "Plush Bear", "RC Car", "Board Game"),
        (6, 140),
    ),
    "Grocery": (
        ("Harvest Lane", "Kopi Kita", "Green Basket"),
        ("Arabica Coffee Beans", "Jasmine Rice 5kg", "Green Tea", "Dark Chocolate", "Olive Oil", "Granola"),
        (2, 45),
    ),
}
_ADJECTIVES: tuple[str, ...] = (
    "Classic",
    "Pro",
    "Lite",
    "Essential",
    "Premium",
    "Eco",
    "Compact",
    "Deluxe",
    "Everyday",
    "Signature",
)
_COLOURS: tuple[str, ...] = ("Black", "White", "Navy", "Sage", "Sand", "Red", "Grey", "Teal")


@dataclass(frozen=True, slots=True)
class Product:
    """One catalog product, as in `clickstream_web.products` and in the events' product context."""

    product_id: str
    name: str
    category: str
    brand: str
    price: Decimal
    discount_price: Decimal | None
    url_path: str
    stock: int

    def csv_row(self) -> list[str]:
        return [
            self.product_id,
            self.name,
            self.category,
            self.brand,
            f"{self.price:.2f}",
            "" if self.discount_price is None else f"{self.discount_price:.2f}",
            self.url_path,
            str(self.stock),
        ]

    def context(self) -> dict[str, object]:
        """The event's `context_product_*` fields for this product."""
        return {
            "context_product_id": self.product_id,
            "context_product_name": self.name,
            "context_product_category": self.category,
            "context_product_brand": self.brand,
            "context_product_price": float(self.price),
            "context_product_discount_price": (
                None if self.discount_price is None else float(self.discount_price)
            ),
            "context_product_url_path": self.url_path,
        }


def _pick(rng: random.Random, items: Sequence[str]) -> str:
    # rng.random() only: its sequence is fixed for a seed on every CPython version.
    return items[int(rng.random() * len(items))]


def slugify(text: str) -> str:
    """`Voltex Pro Wireless Earbuds` -> `voltex-pro-wireless-earbuds`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def generate(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> list[Product]:
    """`count` products spread over every category, the same list for the same seed."""
    rng = random.Random(seed)
    categories = list(_CATEGORIES)
    products: list[Product] = []
    seen_names: set[str] = set()
    for index in range(count):
        category = categories[index % len(categories)]
        brands, nouns, (low, high) = _CATEGORIES[category]
        while True:
            brand = _pick(rng, brands)
            name = f"{brand} {_pick(rng, _ADJECTIVES)} {_pick(rng, nouns)}"
            if rng.random() < 0.35:
                name += f" ({_pick(rng, _COLOURS)})"
            if name not in seen_names:
                break
        seen_names.add(name)
        # Prices skewed towards the low end, ending in .99/.49/.00 like a real shop.
        raw = low + (high - low) * rng.random() ** 2
        cents = (Decimal("0.99"), Decimal("0.49"), Decimal("0.00"))[int(rng.random() * 3)]
        price = Decimal(int(raw)) + cents
        if price <= 0:
            price = Decimal("0.99")
        discount: Decimal | None = None
        if rng.random() < 0.3:
            off = (5, 10, 15, 20, 25, 30, 40)[int(rng.random() * 7)]
            discount = (price * (100 - off) / 100).quantize(Decimal("0.01"))
        stock = 0 if rng.random() < 0.05 else int(rng.random() * 500) + 1
        product_id = str(FIRST_PRODUCT_ID + index)
        products.append(
            Product(
                product_id=product_id,
                name=name,
                category=category,
                brand=brand,
                price=price,
                discount_price=discount,
                url_path=f"/products/{slugify(name)}-{product_id}",
                stock=stock,
            )
        )
    return products


def to_csv(products: Iterable[Product]) -> str:
    """The catalog as CSV text (header + one row per product, `\\n` line ends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for product in products:
        writer.writerow(product.csv_row())
    return out.getvalue()


def _decimal_or_none(text: str | None) -> Decimal | None:
    if text is None or str(text).strip() == "":
        return None
    return Decimal(str(text))


def product_from_mapping(row: dict[str, object]) -> Product:
    """A product from a CSV row or a database row (keys = CSV_COLUMNS; extra keys ignored)."""
    price = _decimal_or_none(str(row["price"]))
    if price is None:
        raise ValueError(f"product {row.get('product_id')!r} has no price")
    discount = _decimal_or_none(None if row.get("discount_price") is None else str(row["discount_price"]))
    if discount is not None and discount > price:
        discount = None  # the contract forbids discount > price: drop a bad discount, keep the product
    return Product(
        product_id=str(row["product_id"]),
        name=str(row["name"]),
        category=str(row["category"]),
        brand=str(row["brand"]),
        price=price,
        discount_price=discount,
        url_path=str(row["url_path"]),
        stock=int(str(row.get("stock") or 0)),
    )


def load_csv(path: Path = SAMPLE_CSV) -> list[Product]:
    """Products of a catalog CSV (the committed sample by default)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [product_from_mapping(row) for row in csv.DictReader(handle)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sbw_ops.catalog", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--output", type=Path, default=SAMPLE_CSV)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the CSV to --output")
    mode.add_argument("--check", action="store_true", help="exit 1 when --output differs from the generator")
    args = parser.parse_args(argv)
    text = to_csv(generate(args.count, args.seed))
    if args.write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output} ({args.count} products)")
        return 0
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} differs from the generator: run python -m sbw_ops.catalog --write")
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
