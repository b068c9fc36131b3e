"""The DataModule on the real survey data (shipped) and on made-up rows: subset sizes, batching, errors."""

import pytest
import torch
from conftest import paper_row, write_rows

from simlab.data import PromptTooLongError, SurveyDataModule
from simlab.data.batching import LengthGroupedBatchSampler

WVS_FILES = ["wvs7/sft_wvs_train.json", "wvs7/sft_wvs_valid.json", "wvs7/sft_wvs_test.json"]
WVS_SUBSETS = {
    "train": "C1-Q1", "valid": "C1-Q2", "test_1": "C1-Q3", "test_2": "C2-Q1", "test_3": "C2-Q2",
    "test_4": "C2-Q3", "test_5": "C3-Q1", "test_6": "C3-Q2", "test_7": "C3-Q3",
}
TESTS = ["C1-Q3", "C2-Q1", "C2-Q2", "C2-Q3", "C3-Q1", "C3-Q2", "C3-Q3"]


def test_real_subset_sizes(shared_data, tiny_tokenizer):
    dm = SurveyDataModule(
        tiny_tokenizer, WVS_FILES, WVS_SUBSETS, "C1-Q1", "C1-Q2", TESTS, root=str(shared_data), max_length=2048,
    )
    dm.setup()
    sizes = {name: len(rows) for name, rows in dm.rows.items()}
    assert sizes == {
        "C1-Q1": 6841, "C1-Q2": 1586, "C1-Q3": 2256, "C2-Q1": 1179, "C2-Q2": 271,
        "C2-Q3": 471, "C3-Q1": 1644, "C3-Q2": 385, "C3-Q3": 660,
    }
    assert len({row.country for row in dm.rows["C1-Q1"]}) == 46
    assert len({row.country for row in dm.rows["C2-Q1"]}) == 8
    assert len({row.question_id for row in dm.rows["C1-Q1"]}) == 150
    assert [len(loader.dataset) for loader in dm.test_dataloader()] == [sizes[t] for t in TESTS]


def _small_module(tmp_path, tokenizer, rows, **kwargs):
    write_rows(tmp_path / "rows.json", rows)
    options = dict(root=str(tmp_path), batch_size=2, eval_batch_size=3)
    options.update(kwargs)
    return SurveyDataModule(tokenizer, ["rows.json"], {"valid": "V", "train": "T"}, "T", "V", ["V"], **options)


def _made_up_rows():
    rows = []
    for i in range(7):
        rows.append(paper_row(id=str(i), input="word " * (i * 3) + "? \nHere are the options: \n", data_type="train"))
    rows.append(paper_row(id="99"))
    return rows


def test_batches_are_dynamically_padded_and_complete(tmp_path, tiny_tokenizer):
    dm = _small_module(tmp_path, tiny_tokenizer, _made_up_rows())
    dm.setup()
    seen = []
    for batch in dm.train_dataloader():
        lengths = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(lengths.max())  # padded to the batch's own longest prompt
        assert torch.equal(batch["answer_index"], lengths - 1)
        last = batch["input_ids"][torch.arange(len(lengths)), batch["answer_index"]]
        paren = tiny_tokenizer("be (", add_special_tokens=False)["input_ids"][-1]
        assert (last == paren).all()
        torch.testing.assert_close(batch["target"].sum(1), torch.ones(len(lengths)))
        seen += batch["row_index"].tolist()
    assert sorted(seen) == list(range(7))


def test_length_grouped_sampler():
    lengths = [5, 50, 7, 48, 6, 49, 8, 47]
    evaluation = list(LengthGroupedBatchSampler(lengths, 2, shuffle=False))
    assert evaluation[0] == [1, 5]  # longest first
    assert sorted(i for b in evaluation for i in b) == list(range(8))
    sampler = LengthGroupedBatchSampler(lengths, 2, shuffle=True, seed=3, group_factor=4)
    first = list(sampler)
    assert first == list(LengthGroupedBatchSampler(lengths, 2, shuffle=True, seed=3, group_factor=4))
    for batch in first:  # each batch comes from one length-sorted mega-batch: similar lengths
        assert max(lengths[i] for i in batch) - min(lengths[i] for i in batch) <= 43
    sampler.set_epoch(1)
    assert sorted(i for b in sampler for i in b) == list(range(8))


def test_too_long_prompt_is_an_error_naming_the_row(tmp_path, tiny_tokenizer):
    dm = _small_module(tmp_path, tiny_tokenizer, _made_up_rows(), max_length=40)
    with pytest.raises(PromptTooLongError, match=r"rows.json: row \d+ \(id \d+, Andorra\).*max_length=40"):
        dm.setup()


def test_one_prompt_too_long_error_class():
    """The DataModule and the Simulator raise the same class (catching one catches both)."""
    import simlab.data.datamodule
    import simlab.data.prompts
    import simlab.simulate

    assert simlab.simulate.PromptTooLongError is simlab.data.datamodule.PromptTooLongError is PromptTooLongError
    assert PromptTooLongError is simlab.data.prompts.PromptTooLongError and issubclass(PromptTooLongError, ValueError)


def test_limit_per_subset_is_a_seeded_fixed_sample(tmp_path, tiny_tokenizer):
    a = _small_module(tmp_path, tiny_tokenizer, _made_up_rows(), limit_per_subset=3, seed=1)
    b = _small_module(tmp_path, tiny_tokenizer, _made_up_rows(), limit_per_subset=3, seed=1)
    a.setup(), b.setup()
    assert [r.question_id for r in a.rows["T"]] == [r.question_id for r in b.rows["T"]]
    assert len(a.rows["T"]) == 3 and len(a.rows["V"]) == 1


def test_missing_subset_is_an_error(tmp_path, tiny_tokenizer):
    write_rows(tmp_path / "rows.json", [paper_row()])
    dm = SurveyDataModule(tiny_tokenizer, ["rows.json"], {"valid": "V"}, "T", "V", ["V"], root=str(tmp_path))
    with pytest.raises(ValueError, match="subset 'T' has no rows"):
        dm.setup()


def test_dropped_rows_are_logged_and_saved(tmp_path, tiny_tokenizer, caplog):
    rows = _made_up_rows() + [paper_row(id="bad", options_dist={"A": -1.0, "B": 1.0, "C": 1.0})]
    out = tmp_path / "invalid.jsonl"
    dm = _small_module(tmp_path, tiny_tokenizer, rows, drop_invalid=True, invalid_rows_file=str(out))
    with caplog.at_level("WARNING"):
        dm.setup()
    assert "dropped 1 invalid rows" in caplog.text and "bad" in caplog.text
    saved = out.read_text().splitlines()
    assert len(saved) == 1 and '"id": "bad"' in saved[0] and "negative" in saved[0]


def _rows_with_valid(n_valid=4):
    rows = _made_up_rows()[:-1]
    rows += [paper_row(id=str(100 + i)) for i in range(n_valid)]
    return rows


def test_limit_eval_per_subset_keeps_the_train_subset_whole(tmp_path, tiny_tokenizer):
    dm = _small_module(tmp_path, tiny_tokenizer, _rows_with_valid(), limit_eval_per_subset=2, seed=1)
    dm.setup()
    assert len(dm.rows["T"]) == 7 and len(dm.rows["V"]) == 2


def test_shuffle_options_eval_leaves_training_rows_in_their_order(tmp_path, tiny_tokenizer):
    dm = _small_module(tmp_path, tiny_tokenizer, _rows_with_valid(), shuffle_options="eval")
    dm.setup()
    assert all(row.option_order is None for row in dm.rows["T"])
    assert all(row.option_order is not None for row in dm.rows["V"])
    with pytest.raises(ValueError, match="shuffle_options must be false, true, 'eval'"):
        _small_module(tmp_path, tiny_tokenizer, _rows_with_valid(), shuffle_options="test")


def test_a_repeated_country_and_question_is_an_error_naming_both_rows(tmp_path, tiny_tokenizer):
    first = paper_row(data_type="train")
    other = paper_row(data_type="train", options_dist={"A": 10.0, "B": 10.0, "C": 80.0})
    dm = _small_module(tmp_path, tiny_tokenizer, [first, paper_row(), other])
    with pytest.raises(ValueError, match=r"rows.json: row 2: field 'id': subset T: country 'Andorra', question 164 "
                                         r"repeats .*rows.json: row 0 \(with a different distribution\)"):
        dm.setup()


@pytest.mark.parametrize("key", ["batch_size", "eval_batch_size", "max_length"])
def test_sizes_must_be_positive_and_name_the_config_key(tmp_path, tiny_tokenizer, key):
    with pytest.raises(ValueError, match=rf"data.{key} must be a positive integer, got 0"):
        _small_module(tmp_path, tiny_tokenizer, [paper_row()], **{key: 0})


def test_rows_are_checked_before_a_tokenizer_is_needed(tmp_path, tiny_tokenizer):
    """run.py reads and checks the data before it loads a model: a bad root or row fails in seconds."""
    dm = _small_module(tmp_path, None, [paper_row(data_type="train"), paper_row()])
    dm.load_rows()
    assert {s: len(r) for s, r in dm.rows.items()} == {"T": 1, "V": 1} and not dm.datasets
    dm.set_tokenizer(tiny_tokenizer)
    dm.setup()
    assert len(dm.datasets["V"]) == 1
    missing = SurveyDataModule(None, ["nope.json"], {"valid": "V"}, None, "V", ["V"], root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"data files not found under .*: \['nope.json'\]"):
        missing.load_rows()


def test_resumed_sampler_skips_exactly_the_batches_already_trained():
    lengths = [5, 9, 2, 7, 7, 3, 8, 1, 4, 6, 2, 9, 5]
    full = LengthGroupedBatchSampler(lengths, batch_size=2, shuffle=True, seed=3, group_factor=2)
    full.set_epoch(2)
    epoch_two = list(full)
    resumed = LengthGroupedBatchSampler(lengths, batch_size=2, shuffle=True, seed=3, group_factor=2)
    resumed.resume_at(2, 4)
    assert len(resumed) == len(full)  # Lightning counts the epoch's batches from the full length
    assert list(resumed) == epoch_two[4:]
    resumed.set_epoch(3)
    full.set_epoch(3)
    assert list(resumed) == list(full)  # the skip applies once, to the resumed epoch only
