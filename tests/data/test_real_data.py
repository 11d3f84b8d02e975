"""Integration: the real Online Retail folder loads, and the cleaning report adds up."""

from __future__ import annotations

import pytest

from ecomrec.datasets import online_retail

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(real_data_path):
    return online_retail(real_data_path)


def test_cleaning_report_adds_up(real) -> None:
    report = real.report
    assert report.files == 271
    assert report.raw_rows == report.kept_rows + sum(report.dropped.values())
    assert report.kept_rows == len(real)
    # every rule fired on the real data except those that cannot (no empty codes; returns are
    # cancellations and cancelled rows are gone by then)
    for rule in ("missing_user", "cancelled", "non_product", "duplicate"):
        assert report.dropped[rule] > 0, rule


def test_clean_data_is_products_bought_by_customers(real) -> None:
    assert (real.interactions["quantity"] > 0).all()
    assert "POST" not in real.items and "85123A" in real.items
    assert real.start.strftime("%Y-%m-%d") == "2010-12-01" and real.end.strftime("%Y-%m-%d") == "2011-10-31"
    heart = real.items.index(["85123A"])[0]
    assert real.catalog["text"][heart] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert (real.catalog["text"] != "").all()


def test_the_catalog_comes_from_the_log_so_october_lists_only_what_sold_before(real) -> None:
    import numpy as np
    import pandas as pd

    from ecomrec.data.split import make_split

    assert real.catalog_from_log  # Online Retail has no product table
    split = make_split(real, "2011-10-01")
    first_sold = real.interactions.groupby("item")["timestamp"].min()
    unknowable = first_sold.index[first_sold >= pd.Timestamp("2011-10-01")].to_numpy()
    assert len(unknowable) > 50  # items first sold in October: the protocol hides them from every method
    assert np.isin(unknowable, split.listed).sum() == 0 and len(split.listed) + len(unknowable) == real.n_items
    assert split.targets_all[:, unknowable].nnz > 0  # and they are bought there: misses for all


def test_the_dunnhumby_sample_loads_with_its_whole_catalog(dunnhumby_path) -> None:
    import numpy as np

    from ecomrec.datasets import dunnhumby_sample

    shop = dunnhumby_sample(dunnhumby_path)
    assert (shop.n_users, len(shop), shop.report.kept_rows) == (2358, 67025, 67025)  # the folder's README
    assert int((shop.item_popularity() > 0).sum()) == 19575
    assert shop.n_items >= 92331 and shop.listed_mask().all()  # every product, bought or not
    assert not shop.catalog_from_log and (shop.catalog["category"].fillna("") != "").mean() > 0.9
    never_sold = np.flatnonzero(shop.item_popularity() == 0)
    assert len(never_sold) > 70000 and (shop.catalog["text"].iloc[never_sold] != "").mean() > 0.5
