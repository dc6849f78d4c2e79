"""Any corpus described by one flat table: the way in for data emoslm has no adapter for.

The table (``.csv``, ``.tsv`` or ``.jsonl``) has one row per utterance with at least ``id``, ``audio_path``,
``speaker`` and ``emotion``; optional columns are those of :data:`emoslm.data.manifests.FLAT_COLUMNS`
(``split``, ``gender``, ``text``, ``start``/``duration`` for a segment of a longer file, ...) and any other
column is kept as a supervision attribute. See :func:`emoslm.data.manifests.import_table` for the details.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from emoslm.data.manifests import (
    PreparedCorpus,
    import_table,
    save_prepared,
    validate_prepared,
)
from emoslm.errors import CorpusError

logger = logging.getLogger("emoslm.corpora")


def prepare_csv(
    manifest_path: Path | str,
    output_dir: Path | str | None = None,
    *,
    corpus: str = "custom",
    label_map: Mapping[str, str] | None = None,
    audio_root: Path | str | None = None,
    num_jobs: int = 1,
) -> PreparedCorpus:
    """Read a flat manifest into lhotse manifests, one split per value of its ``split`` column (default ``all``).

    ``label_map`` maps the table's own labels to canonical ones; ``audio_root`` resolves relative audio paths
    (default: the table's folder). Manifests are saved under the name ``corpus``. ``num_jobs`` is accepted for
    a uniform signature; the table is read in one pass.
    """
    path = Path(manifest_path).expanduser()
    if path.is_dir():
        raise CorpusError(f"csv: {path} is a directory; pass the manifest file itself (.csv, .tsv or .jsonl)")
    if not path.is_file():
        raise CorpusError(f"csv: manifest file {path} does not exist")
    if not corpus or "_supervisions_" in corpus or "/" in corpus:
        raise CorpusError(f"csv: {corpus!r} cannot name a corpus's manifest files")
    prepared = import_table(path, corpus=corpus, label_map=label_map, audio_root=audio_root)
    validate_prepared(prepared)
    logger.info("%s: prepared %s from %s", corpus,
                ", ".join(f"{s}: {len(p['supervisions'])} utterances" for s, p in prepared.items()), path)
    if output_dir is not None:
        save_prepared(prepared, output_dir, corpus)
    return prepared
