"""Any corpus described by one flat table: the way in for data emoslm has no adapter for.

The table (``.csv``, ``.tsv`` or ``.jsonl``) has one row per utterance with at least the audio file
(``audio_path``, or ``path``, ``file``, ``wav``, ``audio``, ``filename``, ``audio_file``), the ``speaker`` (or
``speaker_id``, ``spk``) and the ``emotion`` (or ``label``); headers are matched in any case. Without an ``id``
column the ids are the audio files' stems, made unique. Optional columns are those of
:data:`emoslm.data.manifests.FLAT_COLUMNS` (``split``, ``gender``, ``text``, ``start``/``duration`` for a
segment of a longer file, ...) and any other column is kept as a supervision attribute. The table's own labels
are mapped to canonical ones by a label map (``--label-map map.yaml``; .yaml, .json or a two-column .csv). See
:func:`emoslm.data.manifests.import_table` for the details.

    emoslm prepare csv table.csv manifests/mine --label-map map.yaml [--set corpus=mine]
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
    label_map: Mapping[str, str] | str | Path | None = None,
    audio_root: Path | str | None = None,
    num_jobs: int = 1,
) -> PreparedCorpus:
    """Read a flat manifest into lhotse manifests, one split per value of its ``split`` column (default ``all``).

    ``label_map`` maps the table's own labels to canonical ones (a mapping, or a .yaml/.json/.csv file:
    :func:`emoslm.data.manifests.load_label_map`); ``audio_root`` resolves relative audio paths
    (default: the table's folder). Manifests are saved under the name ``corpus``. ``num_jobs`` is accepted for
    a uniform signature; the table is read in one pass.
    """
    path = Path(manifest_path).expanduser()
    if path.is_dir():
        raise CorpusError(f"csv: {path} is a directory; pass the manifest file itself (.csv, .tsv or .jsonl)")
    if not path.is_file():
        raise CorpusError(f"csv: manifest file {path} does not exist")
    if not isinstance(corpus, str) or not corpus or "_supervisions_" in corpus or "/" in corpus:
        raise CorpusError(f"csv: {corpus!r} cannot name a corpus's manifest files")
    if label_map is not None and not isinstance(label_map, (Mapping, str, Path)):
        raise CorpusError(f"csv: label_map must be a mapping or a file (.yaml, .json, .csv), got {label_map!r}")
    if audio_root is not None and (not isinstance(audio_root, (str, Path)) or not Path(audio_root).is_dir()):
        raise CorpusError(f"csv: audio_root {audio_root} is not a folder")
    prepared = import_table(path, corpus=corpus, label_map=label_map, audio_root=audio_root)
    validate_prepared(prepared)
    logger.info("%s: prepared %s from %s", corpus,
                ", ".join(f"{s}: {len(p['supervisions'])} utterances" for s, p in prepared.items()), path)
    if output_dir is not None:
        save_prepared(prepared, output_dir, corpus)
    return prepared
