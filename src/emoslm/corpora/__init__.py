"""Corpus adapters, one module per corpus, in the style of lhotse's recipes.

Each ``prepare_<corpus>(corpus_dir, output_dir=None, *, num_jobs=1, **options)`` reads a corpus in its released
layout and returns ``{split: {"recordings": RecordingSet, "supervisions": SupervisionSet}}`` whose supervisions
carry canonical ``emotion``, the corpus's own ``emotion_orig``, a corpus-prefixed ``speaker`` and whatever else
the corpus tells (see :mod:`emoslm.data.manifests`). With ``output_dir`` the manifests are also written there
under lhotse's names. Corpus knowledge lives in these modules only; tasks read the manifests.

>>> from emoslm.corpora import prepare
>>> prepared = prepare("iemocap", "/data/IEMOCAP_full_release", "manifests/iemocap")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from emoslm.corpora.crema_d import prepare_crema_d
from emoslm.corpora.csv_corpus import prepare_csv
from emoslm.corpora.emodb import prepare_emodb
from emoslm.corpora.esd import prepare_esd
from emoslm.corpora.iemocap import prepare_iemocap
from emoslm.corpora.meld import prepare_meld
from emoslm.corpora.msp_podcast import prepare_msp_podcast
from emoslm.corpora.ravdess import prepare_ravdess
from emoslm.data.manifests import PreparedCorpus
from emoslm.errors import CorpusError

#: Corpus name -> its prepare function. For "csv" the path is the manifest file, not a directory.
CORPORA: dict[str, Callable[..., PreparedCorpus]] = {
    "iemocap": prepare_iemocap,
    "msp_podcast": prepare_msp_podcast,
    "meld": prepare_meld,
    "ravdess": prepare_ravdess,
    "crema_d": prepare_crema_d,
    "emodb": prepare_emodb,
    "esd": prepare_esd,
    "csv": prepare_csv,
}


def prepare(name: str, corpus_dir: Path | str, output_dir: Path | str | None = None, **opts: Any) -> PreparedCorpus:
    """Prepare corpus ``name`` (a key of :data:`CORPORA`) found at ``corpus_dir``; see each adapter's options."""
    try:
        fn = CORPORA[name]
    except KeyError:
        raise CorpusError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}") from None
    accepted = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise CorpusError(f"corpus {name!r} has no option(s) {', '.join(unknown)}; its options: {', '.join(accepted)}")
    return fn(corpus_dir, output_dir, **opts)


__all__ = [
    "CORPORA", "prepare", "prepare_crema_d", "prepare_csv", "prepare_emodb", "prepare_esd", "prepare_iemocap",
    "prepare_meld", "prepare_msp_podcast", "prepare_ravdess",
]
