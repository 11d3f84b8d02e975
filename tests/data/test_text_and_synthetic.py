"""Text helpers and the synthetic generator's planted structure."""

from __future__ import annotations

import numpy as np
import pytest

from ecomrec.data.synthetic import THEMES, synthetic
from ecomrec.data.text import clean_text, history_text


def test_clean_text() -> None:
    assert clean_text("  RED\tRETROSPOT   LUNCH BAG \n") == "RED RETROSPOT LUNCH BAG"
    assert clean_text(float("nan")) == "" and clean_text(None) == ""


def test_history_text_budget_keeps_whole_titles() -> None:
    titles = ["RED LUNCH BAG", "BLUE MUG", "GREEN TIN"]
    assert history_text(titles, max_chars=100) == "RED LUNCH BAG; BLUE MUG; GREEN TIN"
    assert history_text(titles, max_chars=23) == "RED LUNCH BAG; BLUE MUG"
    assert history_text(titles, max_chars=22) == "RED LUNCH BAG"
    assert history_text(titles, max_chars=5) == "RED L"  # the newest title is cut, not dropped
    assert history_text([], max_chars=5) == ""
    with pytest.raises(ValueError):
        history_text(titles, max_chars=0)


def test_synthetic_planted_structure() -> None:
    data = synthetic(n_users=100, n_items=40, n_clusters=4, noise=0.0, n_cold_items=4, seed=7)
    users = data.interactions["user"].to_numpy()
    items = data.interactions["item"].to_numpy()
    assert (users % 4 == items % 4).all()  # noise 0: every purchase inside the user's cluster
    assert not np.isin(np.arange(36, 40), items).any()  # cold items never bought
    for n, (text, category) in enumerate(zip(data.catalog["text"], data.catalog["category"])):
        assert category == THEMES[n % 4] and text.startswith(category)
    assert data.users.ids[5] == "u00005" and data.items.ids[12] == "i00012"
    noisy = synthetic(n_users=400, noise=0.2, seed=1)
    share = (noisy.interactions["user"] % 4 == noisy.interactions["item"] % 4).mean()
    assert 0.8 < share < 0.9  # 80 % planted + 20 % uniform of which a quarter lands in-cluster
