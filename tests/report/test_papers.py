"""The papers' numbers (stkit.report.papers): each with its source, verified flag and scale."""

from stkit.report import catalog as declared
from stkit.report import papers


def test_every_paper_number_has_source_flag_and_scale():
    for r in papers.REPORTED:
        assert r.source and isinstance(r.verified, bool) and r.text, r
        assert ("(unverified)" in r.label()) == (not r.verified)
        if r.value is not None and r.metric_key is not None:
            unit = declared.find(*r.metric_key).unit
            assert (unit in ("AUC", "AP") and 0 < r.value < 1) or (unit == "x" and r.value > 0), r
    by_key = {(r.method, r.metric_key[1]): r.value for r in papers.REPORTED_STNET if r.metric_key and r.source == papers.STNET_PAPER}
    assert by_key[("STNet", "val_ap50")] == 0.703 and by_key[("CVA-Net", "val_ap75")] == 0.385
    assert [r.value for r in papers.REPORTED_STERN[:2]] == [0.8422, 0.8567] and [r.verified for r in papers.REPORTED_STERN[:2]] == [True, False]


def test_speed_claim_says_what_the_abstract_leaves_unstated():
    speed = next(r for r in papers.REPORTED_STNET if r.metric_key == ("stnet", "shuffle_speedup"))
    assert "does not say against what" in speed.label() and "main.py" in speed.label()
    assert all(not r.unstated or r.unstated in r.label() for r in papers.REPORTED_STNET + papers.REPORTED_STERN)
