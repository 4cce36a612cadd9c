"""DetokenizerCalculator: token ids to text, incrementally and UTF-8 safe.

Two decoders give the same text: ``IncrementalDecoder`` calls the model's genai detokenizer
(two small inferences per step), ``ByteLevelStream`` looks token bytes up in a table built from
``tokenizer.json`` (byte-level BPE, as Qwen2 and GPT-2 style models use) and runs them through
an incremental UTF-8 decoder. The table is used only when it reproduces the genai detokenizer on
a sample of single ids and random sequences, checked once per model folder.
"""

from __future__ import annotations

import codecs
import json
import logging
import random
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from calculators.llm.common import (
    LLMNodeCalculator,
    LLMResources,
    OtherSequence,
    TextChunk,
    TokenChunk,
)
from ovgraph.framework.calculator import CalculatorContext, Input, NodeSpec, Output

logger = logging.getLogger(__name__)

_REPLACEMENT = "\ufffd"
_CHECK_SINGLE_IDS = 8192
_CHECK_SEQUENCES = 256


class IncrementalDecoder:
    """Decodes a growing id sequence into text deltas (the prefix/read offset method).

    Only a window of recent ids is decoded per step. A delta is held back while it ends in an
    incomplete UTF-8 sequence (U+FFFD), so a character split across tokens comes out whole; at the
    end whatever remains is flushed, so the deltas always add up to ``decode(all ids)``.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.emitted = ""

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return str(self.tokenizer.decode(ids, skip_special_tokens=self.skip))

    def add(self, new_ids: list[int]) -> str:
        """Append ids and return the text that became final."""
        if not new_ids:
            return ""
        self.ids.extend(new_ids)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        if len(text) > len(prefix) and not text.endswith(_REPLACEMENT) and text.startswith(prefix):
            delta = text[len(prefix) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            self.emitted += delta
            return delta
        return ""

    def flush(self) -> str:
        """Return the rest of the text once generation has ended."""
        full = self._decode(self.ids)
        if full.startswith(self.emitted):
            delta = full[len(self.emitted) :]
        else:  # a tokenizer whose windows do not concatenate: emit the window remainder
            delta = self._decode(self.ids[self.prefix_offset :])[
                len(self._decode(self.ids[self.prefix_offset : self.read_offset])) :
            ]
        self.emitted += delta
        return delta


def _utf8_length(lead: int) -> int:
    """Sequence length a byte announces by its high bits alone (1 for any other byte)."""
    if 0xC0 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF7:
        return 4
    return 1


def _genai_replace(exc: UnicodeError) -> tuple[str, int]:
    """UTF-8 error handler that replaces invalid bytes as genai's detokenizer does.

    Like ``"replace"``, except that a multi-byte sequence cut short (by a byte that is not a
    continuation byte, or by the end of the text) becomes one U+FFFD whatever its lead byte,
    where Python's decoder gives one per byte for leads it knows cannot start a valid
    sequence there (``E0 80``, ``ED A0``, ``F4 90``, ``F5``…``F7``).
    """
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    data, start = exc.object, exc.start
    need = _utf8_length(data[start])
    end = start + 1
    while end < len(data) and end - start < need and 0x80 <= data[end] <= 0xBF:
        end += 1
    return _REPLACEMENT, (end if end - start < need else exc.end)


codecs.register_error("ovgraph.genai_replace", _genai_replace)


def _decode_utf8(data: bytes) -> str:
    return data.decode("utf-8", "ovgraph.genai_replace")


def _incomplete_tail(data: bytes) -> int:
    """Where a trailing multi-byte sequence that still lacks bytes starts (``len`` if none)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if 0x80 <= byte <= 0xBF:
            continue
        return len(data) - back if _utf8_length(byte) > back else len(data)
    return len(data)


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-printable-character map, inverted (character → byte)."""
    printable = [
        *range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class ByteLevelTable:
    """Token id → bytes for a byte-level BPE ``tokenizer.json``, plus its special ids."""

    def __init__(self, pieces: list[bytes], special: frozenset[int]) -> None:
        self.pieces = pieces
        self.special = special

    @classmethod
    def from_tokenizer_json(cls, data: Mapping[str, Any]) -> ByteLevelTable | None:
        """Build the table, or None when the tokenizer is not plain byte-level BPE."""
        decoder = data.get("decoder") or {}
        model = data.get("model") or {}
        if decoder.get("type") != "ByteLevel" or model.get("type") != "BPE":
            return None
        alphabet = _byte_alphabet()
        vocab: dict[str, int] = model.get("vocab") or {}
        added = data.get("added_tokens") or []
        size = max([*vocab.values(), *(int(t["id"]) for t in added)], default=-1) + 1
        pieces = [b""] * size
        for token, index in vocab.items():
            try:
                pieces[index] = bytes(alphabet[ch] for ch in token)
            except KeyError:
                return None
        special = set()
        for token in added:
            pieces[int(token["id"])] = str(token["content"]).encode("utf-8")
            if token.get("special"):
                special.add(int(token["id"]))
        return cls(pieces, frozenset(special))

    def to_bytes(self, ids: Sequence[int], skip_special_tokens: bool) -> bytes:
        """The bytes of ``ids`` (ids outside the table decode to nothing, as in genai)."""
        pieces, size = self.pieces, len(self.pieces)
        skip = self.special if skip_special_tokens else ()
        return b"".join(pieces[i] for i in ids if 0 <= i < size and i not in skip)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """The whole text of ``ids``."""
        return _decode_utf8(self.to_bytes(ids, skip_special_tokens))

    def agrees_with(self, tokenizer: Any, seed: int = 0) -> bool:
        """Whether genai's detokenizer gives the same text on a sample of ids and sequences."""
        size = len(self.pieces)
        step = max(1, size // _CHECK_SINGLE_IDS)
        singles = sorted({*range(0, size, step), *self.special, size, size + 7})
        rng = random.Random(seed)
        sequences = [
            [rng.randrange(size) for _ in range(rng.randint(1, 12))]
            for _ in range(_CHECK_SEQUENCES)
        ]
        specials = sorted(self.special)
        if specials:
            for sequence in sequences[::8]:
                sequence.insert(rng.randrange(len(sequence) + 1), rng.choice(specials))
        by_length: dict[int, list[list[int]]] = {1: [[i] for i in singles]}
        for sequence in sequences:
            by_length.setdefault(len(sequence), []).append(sequence)
        for skip in (True, False):
            # One batch per length: genai pads shorter rows with the pad token.
            for batch in by_length.values():
                expected = tokenizer.decode(batch, skip_special_tokens=skip)
                for ids, text in zip(batch, expected):
                    if self.decode(ids, skip) != str(text):
                        logger.info("Byte-level table disagrees with genai on %s", ids)
                        return False
        return True


_tables: dict[str, ByteLevelTable | None] = {}
_tables_lock = threading.Lock()


def byte_level_table(models_dir: str | Path, tokenizer: Any) -> ByteLevelTable | None:
    """The checked table of a model folder (built once), or None to use genai's decode."""
    key = str(models_dir)
    with _tables_lock:
        if key in _tables:
            return _tables[key]
        table: ByteLevelTable | None = None
        try:
            data = json.loads((Path(models_dir) / "tokenizer.json").read_text(encoding="utf-8"))
            table = ByteLevelTable.from_tokenizer_json(data)
            if table is not None and not table.agrees_with(tokenizer):
                table = None
        except (OSError, ValueError, TypeError, KeyError, IndexError, RuntimeError):
            table = None
        _tables[key] = table
        return table


class ByteLevelStream:
    """Incremental decoding with a ``ByteLevelTable``: same deltas contract as the genai one.

    A trailing multi-byte sequence that still lacks bytes is held back until it is complete
    (or the stream ends); invalid bytes become U+FFFD as genai replaces them, so the deltas add
    up to ``ByteLevelTable.decode`` of all ids.
    """

    def __init__(self, table: ByteLevelTable, skip_special_tokens: bool = True) -> None:
        self.table = table
        self.skip = skip_special_tokens
        self.pending = b""

    def add(self, new_ids: list[int]) -> str:
        """Append ids and return the text that became final."""
        if not new_ids:
            return ""
        data = self.pending + self.table.to_bytes(new_ids, self.skip)
        cut = _incomplete_tail(data)
        self.pending = data[cut:]
        return _decode_utf8(data[:cut])

    def flush(self) -> str:
        """Return the rest of the text once generation has ended."""
        text, self.pending = _decode_utf8(self.pending), b""
        return text


class DetokenizerCalculator(LLMNodeCalculator):
    """Turns ``TOKENS`` chunks into ``TEXT`` chunks with the model's detokenizer.

    node {
      calculator: "DetokenizerCalculator"
      input_stream: "TOKENS:tokens"
      output_stream: "TEXT:text"
      node_options: {
        [type.googleapis.com/mediapipe.LLMCalculatorOptions]: { models_path: "./" }
      }
    }
    """

    IN = Input("TOKENS", TokenChunk)
    OUT = Output("TEXT", TextChunk)

    @classmethod
    def create_node_resources(cls, spec: NodeSpec, settings: Mapping[str, Any]) -> Any:
        """Load the servable, and build and check the byte-level table at load time."""
        resources = super().create_node_resources(spec, settings)
        servable = resources.servable
        byte_level_table(servable.models_dir, servable.tokenizer)
        return resources

    def open(self, cc: CalculatorContext) -> None:
        """No decoder until the first chunk says whether special tokens are skipped."""
        self.decoder: IncrementalDecoder | ByteLevelStream | None = None

    def process(self, cc: CalculatorContext) -> None:
        """Decode the new ids; flush on the last chunk."""
        chunk: TokenChunk = self.IN(cc).get()
        if self.decoder is None:
            resources: LLMResources = cc.resources
            servable = resources.servable
            skip = chunk.context.request.skip_special_tokens
            table = byte_level_table(servable.models_dir, servable.tokenizer)
            self.decoder = (
                ByteLevelStream(table, skip) if table is not None
                else IncrementalDecoder(servable.tokenizer, skip)
            )
        text = self.decoder.add(chunk.ids)
        if chunk.finished:
            text += self.decoder.flush()
        out = TextChunk(
            chunk.context, text, chunk.finished, chunk.finish_reason, chunk.usage, chunk.ids
        )
        skip = chunk.context.request.skip_special_tokens
        wanted = chunk.context.request.logprobs
        logprobs = chunk.logprobs
        if chunk.sequences:  # several sequences (n, best_of): ids is the best, sequences[0]
            logprobs = chunk.sequences[0][1]
            out.others = [self._other(cc, seq, skip, wanted) for seq in chunk.sequences[1:]]
        if logprobs is not None and wanted:
            out.token_logprobs = _token_logprobs(cc, chunk.ids, logprobs, skip)
        self.OUT(cc).send(out)

    @staticmethod
    def _other(
        cc: CalculatorContext,
        sequence: tuple[list[int], list[float] | None, str | None, float],
        skip: bool,
        with_logprobs: bool,
    ) -> OtherSequence:
        """A further choice, decoded whole (it arrives complete, on the last chunk)."""
        ids, logprobs, reason, _score = sequence
        servable = cc.resources.servable
        table = byte_level_table(servable.models_dir, servable.tokenizer)
        text = (
            table.decode(ids, skip) if table is not None
            else str(servable.tokenizer.decode(ids, skip_special_tokens=skip))
        )
        other = OtherSequence(list(ids), reason or "stop", logprobs, text)
        if with_logprobs and logprobs is not None:
            other.token_logprobs = _token_logprobs(cc, other.ids, logprobs, skip)
        return other


def _token_logprobs(
    cc: CalculatorContext, ids: list[int], logprobs: list[float], skip: bool
) -> list[tuple[bytes, float]]:
    """Each id's own bytes (byte-level table, else genai's decode) with its logprob."""
    if len(logprobs) != len(ids):
        raise RuntimeError(f"{len(logprobs)} logprobs for {len(ids)} generated tokens")
    servable = cc.resources.servable
    table = byte_level_table(servable.models_dir, servable.tokenizer)
    pieces = [
        table.to_bytes([i], skip) if table is not None
        else str(servable.tokenizer.decode([i], skip_special_tokens=skip)).encode()
        for i in ids
    ]
    return list(zip(pieces, logprobs, strict=True))
