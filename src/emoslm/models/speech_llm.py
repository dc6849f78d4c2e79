"""The shell every speech LM shares: an optional speech encoder, adapters, and an LLM backbone.

Like torchtune's ``DeepFusionModel(encoder, decoder, encoder_trainable=..., decoder_trainable=...)``, a
:class:`SpeechLLM` is composed of parts built elsewhere and knows nothing of how a paper lays out its input
sequence. It owns what is the same for every paper:

- which parts train: a frozen part's weights get no gradient and it stays in eval mode through ``train()``
  (no dropout). The LLM is special: its :class:`~emoslm.models.llm.LLMSpec` mode already says which of its
  weights train (all, LoRA's, none), so ``llm_trainable`` only says whether that applies and whether it follows
  ``train()``;
- checkpoints: an HF-style folder (``config.json`` + ``model.safetensors``, :mod:`emoslm.models.io`) holding
  every part's weights except the ones :func:`~emoslm.models.llm.load_backbone` rebuilds: a pretrained LLM's
  (the package's). The LLM is saved whole when it is a random ``tiny-*`` preset or trained fully, and LoRA's
  ``lora_`` weights are always saved. A frozen encoder *is* saved: it may have been trained in an earlier
  stage (paper 003's stage 2 freezes the encoder stage 1 trained);
- the device, the tokenizer, token embeddings from the LLM's own table, and running the encoder.

A paper's model holds one (``model.speech_llm``) and keeps its input layout, loss and generation. It registers
the same parts under the same names itself, so its parameter names and checkpoint keys are the shell's
(``llm.*``, ``qformer.*``, ...) and those of the checkpoints written before the shell existed; see
:meth:`SpeechLLM.attach`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from emoslm.errors import CheckpointError
from emoslm.models.io import CONFIG_NAME, WEIGHTS_NAME, load_weights_into, save_weights
from emoslm.models.llm import Backbone

ENCODER, LLM = "encoder", "llm"


class SpeechLLM(nn.Module):
    """``encoder`` (optional) -> ``adapters`` -> the LLM of ``backbone``, each part trainable or frozen.

    ``adapters``: the parts between the encoder's outputs and the LLM, by name (the name is the attribute and
    the checkpoint key prefix). A value may be an ``nn.Parameter`` (a learned scale, say) or ``None`` (an
    optional part this configuration leaves out: skipped). Adapters start trainable; the encoder and the LLM
    as ``encoder_trainable`` and ``llm_trainable`` say. A trainable LLM trains as its LLMSpec mode says (full:
    every weight; lora: the LoRA weights; frozen: none, gradients still flow through it to the adapters) and
    follows ``train()``/``eval()``; a frozen LLM has no trainable weight and stays in eval mode.
    """

    def __init__(self, backbone: Backbone, adapters: Mapping[str, nn.Module | nn.Parameter | None],
                 encoder: nn.Module | None = None, *, encoder_trainable: bool = False, llm_trainable: bool = False):
        super().__init__()
        for reserved in (ENCODER, LLM):
            if reserved in adapters:
                raise ValueError(f"{reserved!r} names the {reserved} part, not an adapter")
        self.backbone = backbone  # a plain dataclass: registered below through its model
        names = []
        if encoder is not None:
            self.encoder = encoder
            names.append(ENCODER)
        for name, part in adapters.items():
            if hasattr(self, name):
                raise ValueError(f"adapter name {name!r} is taken by an attribute of SpeechLLM")
            if part is not None:
                setattr(self, name, part)  # registers a module or a parameter
                names.append(name)
        self.llm = backbone.model  # registered: part of state_dict(), train()/eval() and .to()
        names.append(LLM)
        #: the parts in registration order
        self.part_names: tuple[str, ...] = tuple(names)
        self._trainable: dict[str, bool] = {}
        flags = dict.fromkeys(names, True)
        flags[LLM] = llm_trainable
        if encoder is not None:
            flags[ENCODER] = encoder_trainable
        for name, flag in flags.items():
            self._set_requires_grad(name, flag)
        # trainable parts keep the mode they were built in (the LLM: eval, as load_backbone returns it) until the
        # owner's train()/eval(); frozen ones are in eval mode from the start
        self._frozen_to_eval()

    # ------------------------------------------------------------------------------------ parts

    def part(self, name: str) -> nn.Module | nn.Parameter:
        """The part called ``name`` (KeyError naming the parts there are)."""
        if name not in self.part_names:
            raise KeyError(f"no part {name!r} (parts: {', '.join(self.part_names)})")
        return getattr(self, name)

    @property
    def trainable(self) -> dict[str, bool]:
        """Whether each part trains, by name (a copy: change it with :meth:`set_trainable`)."""
        return dict(self._trainable)

    def set_trainable(self, **flags: bool) -> "SpeechLLM":
        """Make the named parts trainable (they take this shell's train/eval mode) or frozen (eval mode); the
        other parts keep their flag."""
        for name, flag in flags.items():
            self._set_requires_grad(name, flag)
            part = self.part(name)
            if isinstance(part, nn.Module):
                part.train(self.training and flag)
        return self

    def _set_requires_grad(self, name: str, flag: bool) -> None:
        part = self.part(name)
        if name == LLM:
            mode = self.backbone.spec.mode
            for pname, p in part.named_parameters():
                # what load_backbone set for the mode (peft froze all but the lora_ weights), or nothing
                p.requires_grad_(flag and (mode == "full" or (mode == "lora" and "lora_" in pname)))
        elif isinstance(part, nn.Parameter):
            part.requires_grad_(flag)
        else:
            for p in part.parameters():
                p.requires_grad_(flag)
        self._trainable[name] = bool(flag)

    def train(self, mode: bool = True) -> "SpeechLLM":
        super().train(mode)
        self._frozen_to_eval()
        return self

    def _frozen_to_eval(self) -> None:
        for name, trains in self._trainable.items():
            part = getattr(self, name)
            if not trains and isinstance(part, nn.Module):
                part.eval()  # frozen: no dropout

    def attach(self, owner: nn.Module, name: str = "speech_llm") -> "SpeechLLM":
        """Make this shell ``owner.<name>`` without registering it as a submodule of ``owner``.

        ``owner`` (a paper's model) registers the same parts under the same names itself, in the order its
        constructor builds them, so that its parameter names, parameter order and checkpoint keys stay flat;
        registering the shell as well would list every weight twice. ``owner.train()`` must hand over to
        ``self.train()`` (the shell is not among its children). Raises ValueError when ``owner`` and the shell do
        not hold the same weights: one the shell does not know would be left out of the checkpoints.
        """
        own, ours = set(owner.state_dict()), set(self.state_dict())
        if own != ours:
            raise ValueError(f"{type(owner).__name__} and its SpeechLLM hold different weights: only in the model "
                             f"{sorted(own - ours)[:5]}, only in the SpeechLLM {sorted(ours - own)[:5]}")
        object.__setattr__(owner, name, self)  # bypasses nn.Module.__setattr__, which would register it
        return self

    # ------------------------------------------------------------------------------------ running

    @property
    def device(self) -> torch.device:
        """Where the LLM's input embeddings are: token ids and embedded sequences go there."""
        return self.backbone.base_model.get_input_embeddings().weight.device

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    def embed(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Token ids -> embeddings ``[..., hidden]`` from the LLM's own input embedding table."""
        return self.backbone.embed(torch.as_tensor(ids, dtype=torch.long, device=self.device))

    def encode(self, *inputs: Any, **kwargs: Any) -> Any:
        """The speech encoder's output; a frozen encoder runs without autograd (nothing to keep for backward)."""
        if ENCODER not in self.part_names:
            raise RuntimeError("this SpeechLLM has no speech encoder: its inputs are encoder outputs already")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._trainable[ENCODER]):
            return self.encoder(*inputs, **kwargs)

    # ------------------------------------------------------------------------------------ checkpoints

    def saved_state(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint holds: all but a pretrained LLM's, which load_backbone rebuilds (module
        docstring). Copies, so that later training steps do not change them."""
        spec = self.backbone.spec
        whole_llm = spec.name.startswith("tiny-") or spec.mode == "full"
        prefix = LLM + "."
        return {n: t.detach().clone().contiguous() for n, t in self.state_dict().items()
                if whole_llm or not n.startswith(prefix) or "lora_" in n}

    def save_pretrained(self, path: str | Path, config: Mapping[str, Any]) -> Path:
        """Write ``config`` (the owner's JSON-ready config, with its ``_class``) and :meth:`saved_state`."""
        return save_weights(path, dict(config), self.saved_state())

    def load_weights(self, path: str | Path, kind: str, optional: tuple[str, ...] = ()) -> "SpeechLLM":
        """Load a checkpoint folder's weights into the parts. The LLM's may be absent (the package's stay), and
        so may those under the ``optional`` prefixes (a part added later); anything else missing or unexpected
        is a ValueError listing them. No weights file: FileNotFoundError naming ``kind`` ("an E-chat")."""
        load_weights_into(self, path, kind, (LLM + ".", *optional))
        return self


def checkpoint_config(path: str | Path, kind: str) -> dict[str, Any]:
    """``path/config.json`` of a checkpoint folder, after checking that its weights file is there too (before
    the caller spends time building the model): FileNotFoundError naming the missing file and ``kind``."""
    path = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name} is missing: not {kind} checkpoint")
    return json.loads((path / CONFIG_NAME).read_text())
