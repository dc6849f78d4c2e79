import pytest

from emoslm.corpora import CORPORA, prepare
from emoslm.errors import CorpusError

from .fixtures import make_emodb


def test_every_corpus_is_registered():
    assert list(CORPORA) == ["iemocap", "msp_podcast", "meld", "ravdess", "crema_d", "emodb", "esd", "csv"]


def test_prepare_by_name(tmp_path):
    root = make_emodb(tmp_path / "emodb")
    prepared = prepare("emodb", root, tmp_path / "out", num_jobs=2)
    assert len(prepared["all"]["supervisions"]) == 5
    assert (tmp_path / "out" / "emodb_supervisions_all.jsonl.gz").is_file()


def test_unknown_corpus_lists_the_known_ones():
    with pytest.raises(CorpusError, match="unknown corpus 'savee'.*iemocap, msp_podcast, meld"):
        prepare("savee", "/nowhere", None)


def test_unknown_option(tmp_path):
    with pytest.raises(CorpusError, match="keep_unlabeled"):
        prepare("emodb", tmp_path, None, keep_unlabeled=True)


@pytest.mark.parametrize("name", [n for n in CORPORA if n != "csv"])
def test_every_adapter_rejects_an_empty_directory(name, tmp_path):
    with pytest.raises(CorpusError):
        prepare(name, tmp_path)


@pytest.mark.parametrize("name", list(CORPORA))
def test_every_adapter_rejects_a_missing_directory(name, tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        prepare(name, tmp_path / "missing")
