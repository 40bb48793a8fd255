"""SFT (spec section 5): ChatML ids and the label mask exactly as `finetune.py`.

`finetune.py` tokenizes piece by piece: the system block, then per turn
`<|im_start|>ROLE`, `\\n`, VALUE, `<|im_end|>`, `\\n`. Supervised labels:
every `<|im_start|>`, every `<|im_end|>` and the `\\n` after it, and the whole
assistant VALUE; everything else is IGNORE (-100).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from formats.tasks import SYSTEM_MESSAGE

__all__ = ["IGNORE", "ROLES", "check_conversation", "sft_ids_and_labels"]

IGNORE = -100
ROLES = ("user", "assistant")


def check_conversation(conversations: Sequence[Mapping[str, str]]) -> None:
    """First turn user, turns alternate, last assistant, no other `from` (ValueError otherwise)."""
    if not conversations:
        raise ValueError("conversation is empty")
    for i, turn in enumerate(conversations):
        want = ROLES[i % 2]
        got = turn.get("from")
        if got != want:
            raise ValueError(f"turn {i}: from {got!r}, expected {want!r} (user first, alternating)")
        if not isinstance(turn.get("value"), str):
            raise ValueError(f"turn {i}: value {turn.get('value')!r} is not a string")
    if conversations[-1]["from"] != "assistant":
        raise ValueError(f"last turn is from {conversations[-1]['from']!r}, expected 'assistant'")


def sft_ids_and_labels(
    conversations: Sequence[Mapping[str, str]],
    tokenizer,
    image_pads: Sequence[int] | None = None,
    system: str = SYSTEM_MESSAGE,
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a conversation, position by position as finetune.py builds them.

    `image_pads`: Qwen2 formats, pads per image in order of appearance; None for Qwen-VL.
    """
    check_conversation(conversations)
    im_start, im_end = tokenizer.im_start_id, tokenizer.im_end_id
    nl = tokenizer.encode_text("\n")
    pads = list(image_pads) if image_pads is not None else None

    def enc(text: str) -> list[int]:
        if pads is None:
            return tokenizer.encode(text)
        n = text.count("<|image_pad|>")
        mine, pads[:n] = pads[:n], []
        return tokenizer.encode(text, mine)

    sys_ids = [im_start] + enc("system") + nl + enc(system) + [im_end] + nl
    ids = list(sys_ids)
    labels = [im_start] + [IGNORE] * (len(sys_ids) - 3) + [im_end] + nl
    for turn in conversations:
        role = enc(turn["from"])
        value = enc(turn["value"])
        ids += [im_start] + role + nl + value + [im_end] + nl
        if turn["from"] == "user":
            labels += [im_start] + [IGNORE] * (len(role) + len(nl) + len(value)) + [im_end] + nl
        else:
            labels += [im_start] + [IGNORE] * (len(role) + len(nl)) + value + [im_end] + nl
    if pads:
        raise ValueError(f"{len(pads)} image sizes left over: the conversation has fewer images")
    return ids, labels
