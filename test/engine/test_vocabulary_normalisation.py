"""Class names are normalised before the duplicate check (NFKC, invisible characters removed, whitespace
collapsed), and names the model's tokenizer reads as the same tokens are duplicates, for both methods."""
import pytest

from ovss_ros.engine.vocabulary import VocabularyError, normalize_name, normalize_vocabulary, refuse_same_tokens
from ovss_ros.engine.segmenter import Segmenter

VOCAB = ["red circle", "plain green", "dog"]


@pytest.mark.parametrize("raw,name", [
    ("plain\u200b green", "plain green"), ("\ufeffdog", "dog"), ("red\u00adcircle", "redcircle"),
    ("\uff44\uff4f\uff47", "dog"), ("red\t\ncircle", "red circle"), ("\u2003dog\u00a0cat ", "dog cat"),
    ("tr\u200dee", "tree"), ("\ufb01sh", "fish"),
])
def test_names_are_normalised(raw, name):
    assert normalize_name(raw) == name


def test_names_equal_after_normalisation_are_one_line_duplicates():
    with pytest.raises(VocabularyError) as err:
        normalize_vocabulary(["plain green", "plain\u200b green"], 10, 64)
    assert str(err.value) == r"duplicate class name 'plain green' (written 'plain\u200b green'; same as 'plain green')"
    with pytest.raises(VocabularyError, match=r"^duplicate class name 'Dog' \(same as 'dog'\)$"):
        normalize_vocabulary(["dog", " Dog "], 10, 64)
    with pytest.raises(VocabularyError, match="control"):    # not whitespace, not invisible: refused by name
        normalize_vocabulary(["dog\x00"], 10, 64)
    assert normalize_vocabulary(["\uff44og", "cat\u200b"], 10, 64) == ("dog", "cat")


def test_same_tokens_are_duplicates():
    refuse_same_tokens(["a", "b"], [[1, 2], [1, 3]])
    with pytest.raises(VocabularyError, match=r"^duplicate class name 'b' \(same as 'a' for the model's tokenizer\)$"):
        refuse_same_tokens(["a", "b"], [[1, 2], [1, 2]])


@pytest.fixture(scope="module")
def segmenters(tiny_blip_dir, tiny_pgseg_dir):
    out = {}
    for method, folder in (("pnp_ovss", tiny_blip_dir), ("pgseg", tiny_pgseg_dir)):
        seg = Segmenter.from_pretrained(str(folder), preset="tiny", device="cpu")
        seg.set_vocabulary(VOCAB)
        out[method] = seg
    return out


@pytest.mark.parametrize("method", ["pnp_ovss", "pgseg"])
def test_both_methods_refuse_normalised_duplicates_and_keep_the_vocabulary(segmenters, method):
    seg = segmenters[method]
    for vocab in (["plain green", "plain\u200b green"], ["dog", "\uff44\uff4f\uff47"], ["dog", "\ufeffDOG"]):
        with pytest.raises(VocabularyError, match=r"^duplicate class name '[^\n]*\)$"):
            seg.set_vocabulary(vocab)
        assert seg.vocabulary == tuple(VOCAB)
    assert seg.set_vocabulary(["red\u200b circle", "\uff44og"]) == ("red circle", "dog")   # normalised, kept
    seg.set_vocabulary(VOCAB)


@pytest.mark.parametrize("method,pair", [
    ("pnp_ovss", ["green", "gr\u00e9en"]),              # BERT (uncased) strips accents: both are 'green'
    ("pgseg", ["red-circle", "red - circle"]),          # CLIP splits punctuation: same tokens
])
def test_names_the_tokenizer_reads_alike_are_duplicates(segmenters, method, pair):
    seg = segmenters[method]
    with pytest.raises(VocabularyError) as err:
        seg.set_vocabulary(pair)
    assert str(err.value) == f"duplicate class name {pair[1]!r} (same as {pair[0]!r} for the model's tokenizer)"
    assert seg.vocabulary == tuple(VOCAB)



@pytest.mark.parametrize("method,pair", [("pnp_ovss", ["green", "gr\u00e9en"]), ("pgseg", ["red-circle", "red - circle"])])
def test_the_checkers_without_weights_refuse_them_too(tiny_blip_dir, tiny_pgseg_dir, method, pair):
    """What the node holds from configure on (config and tokenizer only)."""
    from ovss_ros.pnp_ovss.config import make_config
    from ovss_ros.pnp_ovss.model_check import ModelCheck
    from ovss_ros.pgseg.config import make_pgseg_config
    from ovss_ros.pgseg.loading import PGSegCheck

    if method == "pnp_ovss":
        checker, cfg = ModelCheck.from_pretrained(str(tiny_blip_dir), local_files_only=True), make_config("tiny")
    else:
        checker, cfg = PGSegCheck.from_pretrained(str(tiny_pgseg_dir), local_files_only=True), make_pgseg_config("tiny")
    with pytest.raises(VocabularyError, match="for the model's tokenizer"):
        checker.check_vocabulary(pair, cfg)
    assert checker.check_vocabulary(["red circle", "plain\u200b green"], cfg) == ("red circle", "plain green")


def test_present_classes_are_looked_up_normalised():
    from ovss_ros.engine.segmenter import resolve_present

    assert resolve_present(VOCAB, ["PLAIN\u200b  green", "\uff44og", 0]) == [0, 1, 2]
    with pytest.raises(VocabularyError, match="not in the vocabulary"):
        resolve_present(VOCAB, ["plain blue"])
