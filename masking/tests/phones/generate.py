#!/usr/bin/env python3
"""Writes faker_phones.tsv, the phone corpus of tests/phones.rs (committed, so the tests need
no Python): phone numbers as Faker's phone providers write them for the countries callers
come from, and near misses (dates, times, amounts, order ids, ...) that must stay unmasked.

    pip install faker==40.63.0 && python3 masking/tests/phones/generate.py

Deterministic: a fixed seed per locale. Columns: locale, kind (`phone` or `near_miss`), value.
"""

import pathlib

from faker import Faker

SEED = 0xCA11
N_PHONES = 300
N_NEAR_MISSES = 60
LOCALES = [
    "en_US", "en_CA", "en_GB", "de_DE", "fr_FR", "it_IT", "es_ES", "nl_NL", "pl_PL",
    "en_IN", "en_AU",
]


def near_misses(fake: Faker):
    """Number-like values a careless phone detector would take."""
    makers = [
        lambda: fake.date(pattern="%Y-%m-%d"),
        lambda: fake.date(pattern="%d.%m.%Y"),
        lambda: fake.date(pattern="%d/%m/%Y"),
        lambda: fake.date(pattern="%m/%d/%Y"),
        lambda: fake.iso8601(),
        lambda: fake.date_time().strftime("%Y-%m-%d %H:%M:%S"),
        lambda: fake.time(),
        lambda: str(fake.unix_time()).split(".")[0],
        lambda: str(int(fake.unix_time() * 1000)),
        lambda: fake.pricetag(),
        lambda: f"{fake.pyfloat(left_digits=7, right_digits=2, positive=True):,.2f}",
        lambda: f"{fake.random_int(1000000, 999999999):,}".replace(",", " "),
        lambda: fake.ean13(),
        lambda: fake.isbn13(),
        lambda: fake.isbn10(),
        lambda: fake.postcode(),
        lambda: fake.numerify("ORD-########"),
        lambda: fake.numerify("ORD-%%%%%%%%-######"),
        lambda: fake.numerify("INV-20##-######"),
        lambda: fake.uuid4(),
        lambda: fake.numerify("v#.##.###"),
        lambda: f"{fake.latitude()}, {fake.longitude()}",
        lambda: fake.numerify("#### #### ####"),
    ]
    for i in range(N_NEAR_MISSES):
        yield makers[i % len(makers)]()


def main():
    out = pathlib.Path(__file__).with_name("faker_phones.tsv")
    lines = []
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(SEED)
        for _ in range(N_PHONES):
            lines.append(f"{locale}\tphone\t{fake.phone_number()}")
        for value in near_misses(fake):
            lines.append(f"{locale}\tnear_miss\t{value}")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} lines to {out}")


if __name__ == "__main__":
    main()
