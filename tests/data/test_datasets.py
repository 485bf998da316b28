"""The real datasets' facts (stkit.data.datasets): a paper-size run without them stops, saying how to get them."""

import pytest

from stkit.data import datasets


def test_missing_real_data_names_dataset_request_and_command(tmp_path):
    assert datasets.require_data("chexpert", tmp_path / "none", "quick") is None  # synthetic sizes need nothing
    with pytest.raises(datasets.MissingDataError) as err:
        datasets.require_datasets(tmp_path / "none", "paper")
    text = str(err.value)
    for d in datasets.DATASETS.values():
        assert d.name in text and d.request in text and d.prepare.split(" --")[0] in text
    assert str((tmp_path / "none").resolve()) in text
    (tmp_path / "d" / "buv").mkdir(parents=True)
    (tmp_path / "d" / "buv" / "imagenet_vid_val.json").write_text("{}")
    assert datasets.require_data("buv", tmp_path / "d") == tmp_path / "d" / "buv" / "imagenet_vid_val.json"
    with pytest.raises(datasets.MissingDataError, match="CheXpert"):
        datasets.require_datasets(tmp_path / "d", "paper")
