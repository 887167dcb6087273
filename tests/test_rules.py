"""The rules as data: text that cannot be stored is refused at validation, with the reason (issue 16, item 4)."""

from __future__ import annotations

import json

import pytest

from mixer.rules import Rules


@pytest.mark.parametrize(
    "document",
    [
        '{"words": ["\\ud800"]}',
        '{"words": ["ok", "a\\udfffb"]}',
        '{"accounts": ["x:\\ud83d"]}',
        '{"profanity_allow": ["\\udc00"]}',
        '{"chats": {"\\ud800": {"words": ["x"]}}}',
        '{"chats": {"edchat": {"accounts": ["\\udfff"]}}}',
    ],
)
def test_a_lone_surrogate_anywhere_is_a_value_error_naming_it(document: str) -> None:
    with pytest.raises(ValueError, match="not valid Unicode"):
        Rules.from_dict(json.loads(document))


def test_a_proper_surrogate_pair_is_an_ordinary_character() -> None:
    rules = Rules.from_dict(json.loads('{"words": ["\\ud83d\\ude00"]}'))
    assert rules.words == ("\U0001f600",)
    assert Rules.from_json(rules.to_json()) == rules
