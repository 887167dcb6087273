from __future__ import annotations

import json
import unicodedata
from dataclasses import replace
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.merge.moderation import _VIEW, Hit, Moderator, Verdict, _view, profanity_words
from mixer.models import Author, Post
from mixer.rules import ChatRules, Rules, account_key, fold
from tests.helpers import make_post


def post(
    text: str = "hello",
    chats: tuple[str, ...] = ("smbiz",),
    source: str = "x",
    handle: str = "alice",
    name: str = "Alice",
) -> Post:
    return make_post("k1", chats, text=text).replace(source=source, author=Author(handle=handle, name=name))


def judge(p: Post, rules: Rules) -> Verdict:
    return Moderator(rules).judge(p)


def blocked_by(rules: Rules, text: str) -> str | None:
    verdict = judge(post(text), rules)
    return verdict.hits[0].entry if verdict.action == "block" else None


SPAM = Rules(words=("spam", "buy now"))
PROFANE = Rules(profanity=True)


def test_a_post_no_rule_matches_is_shown_unchanged() -> None:
    p = post("Chatting #PowerShell this Friday", chats=("pstweetchat", "powershell"))
    verdict = judge(p, Rules(words=("spam",), accounts=("x:spammer",), profanity=True))
    assert (verdict.action, verdict.post, verdict.hits, verdict.reason) == ("show", p, (), "")


def test_approval_mode_holds_every_post_that_is_not_blocked() -> None:
    rules = Rules(words=("spam",), approval=True)
    assert judge(post("hello"), rules).action == "hold"
    assert judge(post("hello"), rules).post == post("hello")
    assert judge(post("spam"), rules).action == "block"


def test_a_global_word_blocks_the_post_and_is_named_in_the_reason() -> None:
    verdict = judge(post("Great SPAM offer!", chats=("smbiz", "edchat")), SPAM)
    assert verdict.action == "block"
    assert verdict.post is None
    assert verdict.hits == (Hit("word", "spam"),)
    assert verdict.reason == "blocked word 'spam'"


@pytest.mark.parametrize("text", ["spamming", "antispam", "spam2", "s p a m", "sp-am", "spa.m"])
def test_a_word_matches_only_as_a_whole_word(text: str) -> None:
    assert blocked_by(SPAM, text) is None


def test_underscore_and_hashtag_and_mention_marks_are_word_boundaries() -> None:
    for text in ("#spam", "@spam", "spam_filter", "(spam)", "spam's", "«spam»"):
        assert blocked_by(SPAM, text) == "spam", text


@pytest.mark.parametrize(
    "text",
    [
        "SPAM",
        "Spam",
        "\uff53\uff50\uff41\uff4d",  # full width
        "\U0001d42c\U0001d429\U0001d41a\U0001d426",  # mathematical bold
        "spa\u0301m",  # combining accent
        "sp\u00e4m",  # precomposed accent
        "sp\u200bam",  # zero-width space
        "sp\u00adam",  # soft hyphen
    ],
)
def test_word_matching_ignores_case_width_accents_and_invisible_characters(text: str) -> None:
    assert blocked_by(SPAM, f"what {text} is this") == "spam"


# Default_Ignorable_Code_Point, Unicode 15.1 DerivedCoreProperties.txt (U+034F is in the accents' block)
DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip


def test_every_default_ignorable_character_is_read_as_nothing() -> None:
    moderator = Moderator(SPAM)
    missed = [
        f"U+{code:04X}"
        for low, high in DEFAULT_IGNORABLE
        for code in range(low, high + 1)
        if moderator.judge(post(f"what sp{chr(code)}am is this")).action != "block"
    ]
    assert missed == []


def test_unicode_words_match_case_insensitively() -> None:
    rules = Rules(words=("Straße", "ΣΟΦΙΑΣ", "İstanbul"))
    assert blocked_by(rules, "die STRASSE ist voll") == "Straße"
    assert blocked_by(rules, "η σοφιας") == "ΣΟΦΙΑΣ"
    assert blocked_by(rules, "welcome to istanbul!") == "İstanbul"


@pytest.mark.parametrize("text", ["spaaaam", "sppppam", "5pam", "$pam", "sp@m", "SP4M", "spaaam!!!"])
def test_stretched_letters_and_leetspeak_are_caught(text: str) -> None:
    assert blocked_by(SPAM, text) == "spam"


@pytest.mark.parametrize(
    ("word", "text"),
    [
        ("spam", "spaam"),  # a letter written twice is another word ("anus" / "annus")
        ("ass", "as"),  # a doubled letter must stay doubled
        ("ass", "455"),  # a number that reads as a word is still a number
        ("ass", "@ss"),  # '@' first starts a mention
        ("spam", "s.p.a.m"),  # spaced-out letters are not caught (documented)
    ],
)
def test_near_misses_are_not_blocked(word: str, text: str) -> None:
    assert blocked_by(Rules(words=(word,)), text) is None


def test_a_phrase_matches_across_spaces_and_punctuation() -> None:
    for text in ("buy now!", "BUY   NOW", "buy-now", "buy_now", "buy\nnow", "buy... now", "buuuy n0w"):
        assert blocked_by(SPAM, text) == "buy now", text
    for text in ("buy nowhere", "buyer now", "buy", "now buy"):
        assert blocked_by(SPAM, text) is None, text


def test_a_word_in_a_script_without_spaces_matches_inside_a_sentence() -> None:
    rules = Rules(words=("日本",))
    assert blocked_by(rules, "日本語を勉強しています") == "日本"
    assert blocked_by(rules, "中国語") is None


def test_a_symbol_entry_matches_anywhere() -> None:
    assert blocked_by(Rules(words=("🖕",)), "ok🖕🏻") == "🖕"


def test_a_word_in_the_authors_display_name_blocks_the_post() -> None:
    verdict = judge(post("hello", name="SPAM KING"), SPAM)
    assert verdict.action == "block"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("\u202ekcuf siht\u202c said the troll", "Troll"),  # a browser draws "this fuck said the troll"
        ("\u202emaps", "Troll"),  # an override runs to the end of the text when no PDF closes it
        ("first line\n\u202eyub\u202c \u202ewon\u202c", "Troll"),  # each run reversed alone: "buy now"
        ("hello", "\u202eGNIK MAPS"),  # the display name is drawn too: "SPAM KING"
        ("\u05e9\u05dc\u05d5\u05dd \u202emaps\u202c \u05e2\u05d5\u05dc\u05dd", "Troll"),  # inside RTL text
        ("\u202dspam\u202c", "Troll"),  # a left-to-right override on Latin letters changes nothing
    ],
)
def test_a_word_written_backwards_under_a_direction_override_is_read_as_the_screen_draws_it(
    text: str, name: str
) -> None:
    rules = Rules(words=("spam", "buy now"), profanity=True)
    assert judge(post(text, name=name), rules).action == "block"


def test_a_direction_override_does_not_block_a_text_that_reads_clean_either_way() -> None:
    assert judge(post("\u202eolleh\u202c world", name="Troll"), Rules(words=("spam",), profanity=True)).action == "show"
    # the override's run ends at its PDF: what follows is read in order ("maps" after it stays "maps")
    assert judge(post("\u202ekool\u202c maps here"), SPAM).action == "show"


def test_a_phrase_never_spans_the_end_of_the_text_and_the_start_of_the_name() -> None:
    # The demo's "... (pass 5)" by "m t k" read as 's&m' (the profanity list): "5" reads as "s", then the name's "m".
    assert judge(post("what a night it's", name="M Smith"), PROFANE).action == "show"
    assert judge(post("time to buy", name="Now Then"), SPAM).action == "show"
    assert judge(post("time to buy\x00now"), SPAM).action == "block"  # a NUL in the text is still a gap
    assert judge(post("hi", name="buy now"), SPAM).action == "block"
    assert judge(post("spam", name="Alice"), SPAM).action == "block"


def test_an_account_blocked_with_its_source_blocks_only_on_that_network() -> None:
    rules = Rules(accounts=("x:Spammer",))
    assert judge(post(source="x", handle="spammer"), rules).hits == (Hit("account", "x:spammer"),)
    assert judge(post(source="x", handle="@SPAMMER"), rules).action == "block"
    assert judge(post(source="mastodon", handle="spammer"), rules).action == "show"


def test_a_bluesky_did_entry_blocks_the_account_after_its_handle_is_resolved() -> None:
    did = "did:plc:q235v55g5unth4zjjdpacfdr"
    unresolved = post(source="bluesky", handle=did).replace(key=f"bluesky:at://{did}/app.bsky.feed.post/3k")
    resolved = unresolved.replace(author=Author(handle="someone.bsky.social", name="Someone"))
    for entry in (f"bluesky:{did}", did):
        for p in (unresolved, resolved):
            assert judge(p, Rules(accounts=(entry,))).hits == (Hit("account", entry),)
        in_chat = Rules(chats={"smbiz": ChatRules(accounts=(entry,))})
        assert judge(resolved.replace(chats=("smbiz", "edchat")), in_chat).post == resolved.replace(chats=("edchat",))
    assert judge(resolved, Rules(accounts=("bluesky:did:plc:other",))).action == "show"
    assert judge(resolved, Rules(accounts=(f"x:{did}",))).action == "show"  # the did is Bluesky's


def test_a_bare_handle_blocks_on_every_network() -> None:
    rules = Rules(accounts=("@troll",))
    for source in ("x", "mastodon", "bluesky", "webhook", "replay"):
        assert judge(post(source=source, handle="Troll"), rules).hits == (Hit("account", "troll"),)
    assert judge(post(handle="trolley"), rules).action == "show"


def test_mastodon_and_bluesky_accounts_are_matched_whole() -> None:
    rules = Rules(accounts=("mastodon:bad@host.social", "bluesky:did:plc:abc123", "did:plc:xyz"))
    assert judge(post(source="mastodon", handle="Bad@Host.Social"), rules).action == "block"
    assert judge(post(source="mastodon", handle="bad@other.social"), rules).action == "show"
    assert judge(post(source="bluesky", handle="did:plc:abc123"), rules).action == "block"
    assert judge(post(source="bluesky", handle="did:plc:xyz"), rules).action == "block"


def test_account_entries_are_normalised() -> None:
    assert account_key("  @Spammer ") == "spammer"
    assert account_key("X:@Spammer") == "x:spammer"
    assert account_key("did:plc:ABC") == "did:plc:abc"
    assert Rules(accounts=("X:Spammer", "x:spammer")).accounts == ("x:spammer",)
    for entry in (":spammer", "::", "::0"):  # ":x" would be stored as "x" and read back as another entry
        with pytest.raises(ValueError, match="needs a source name before it"):
            account_key(entry)


def test_a_chat_rule_narrows_the_post_to_its_other_chats() -> None:
    rules = Rules(chats={"smbiz": ChatRules(words=("crypto",))})
    p = post("crypto tips", chats=("smbiz", "edchat"))
    verdict = judge(p, rules)
    assert verdict.action == "show"
    assert verdict.post == p.with_chats(("edchat",))
    assert verdict.hits == (Hit("word", "crypto", "smbiz"),)
    assert verdict.reason == "blocked word 'crypto' in chat #smbiz"


def test_a_post_every_chat_blocks_is_blocked_with_every_reason() -> None:
    rules = Rules(chats={"smbiz": ChatRules(words=("crypto",)), "edchat": ChatRules(accounts=("alice",))})
    verdict = judge(post("crypto tips", chats=("smbiz", "edchat")), rules)
    assert verdict.action == "block"
    assert verdict.hits == (Hit("word", "crypto", "smbiz"), Hit("account", "alice", "edchat"))


def test_chat_rules_leave_posts_of_other_chats_alone() -> None:
    rules = Rules(chats={"smbiz": ChatRules(words=("crypto",), accounts=("alice",))})
    p = post("crypto tips", chats=("edchat",))
    assert judge(p, rules) == judge(p, Rules())


def test_a_narrowed_post_is_held_in_approval_mode() -> None:
    rules = Rules(chats={"smbiz": ChatRules(words=("crypto",))}, approval=True)
    verdict = judge(post("crypto", chats=("smbiz", "edchat")), rules)
    assert (verdict.action, verdict.post and verdict.post.chats) == ("hold", ("edchat",))


def test_a_global_rule_wins_over_chat_rules() -> None:
    rules = Rules(words=("spam",), chats={"smbiz": ChatRules(words=("crypto",))})
    assert judge(post("crypto spam", chats=("smbiz", "edchat")), rules).hits == (Hit("word", "spam"),)


def test_the_profanity_filter_is_off_by_default() -> None:
    assert judge(post("what the fuck"), Rules()).action == "show"


@pytest.mark.parametrize(
    ("text", "entry"),
    [("what the fuck", "fuck"), ("FUUUUCK", "fuck"), ("sh1t happens", "shit"), ("you a$$hole", "asshole")],
)
def test_the_profanity_filter_blocks_the_package_list_and_names_the_word(text: str, entry: str) -> None:
    assert judge(post(text), PROFANE).hits == (Hit("profanity", entry),)


@pytest.mark.parametrize(
    "text",
    [
        "I'm tied up in meetings",
        "the girl on stage",
        "a big black dog",
        "this sucks",
        "graduated summa cum laude",
        "sharpen the garden hoe",
        "BS in Computer Science",
        "reporting on rape trials",
        "natural hair: kinky curls",
        "Analysis of class assignments",
        "Sizes: S, M, L",
        "It's M. Night Shyamalan's best film",
        "Saw a blue tit at the feeder",
        "Wheat smut showing up in the north field",
        "The MF DOOM tribute was great",
        "Moby Dick is my favorite novel",
    ],
)
def test_the_bundled_exceptions_keep_ordinary_chat_words_visible(text: str) -> None:
    assert judge(post(text), PROFANE).action == "show"


def test_profanity_allow_lets_a_listed_word_through() -> None:
    assert judge(post("damn it"), Rules(words=("damn",))).action == "block"
    assert judge(post("oh bollocks"), PROFANE).action == "block"
    assert judge(post("oh bollocks"), Rules(profanity=True, profanity_allow=("Bollocks",))).action == "show"


def test_the_profanity_list_is_glin_profanitys_english_list_less_the_exceptions() -> None:
    from glin_profanity.data.dictionary import dictionary

    package = dictionary.get_words("english")
    words = profanity_words()
    assert 200 < len(words) < len(package)
    assert set(words) <= set(package)
    assert "fuck" in words
    assert not {"testbad01", "sucks", "tied up", "hoe"} & set(words)
    assert "bollocks" not in profanity_words(["BOLLOCKS"])


def test_rules_round_trip_through_json() -> None:
    rules = Rules(
        words=("spam", "buy now"),
        accounts=("x:spammer", "troll"),
        chats={"#SMBiz": ChatRules(words=("crypto",), accounts=("mastodon:bad@host",))},
        profanity=True,
        profanity_allow=("damn",),
        approval=True,
    )
    assert Rules.from_json(rules.to_json()) == rules
    assert Rules.from_dict(json.loads(json.dumps(rules.to_dict()))) == rules
    assert rules.to_dict()["chats"] == {"smbiz": {"words": ["crypto"], "accounts": ["mastodon:bad@host"]}}
    assert Rules.from_dict({}) == Rules()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "rules are a JSON object"),
        ({"word": ["x"]}, "unknown key(s) 'word'"),
        ({"words": "spam"}, "'words' must be a list of strings"),
        ({"words": ["ok", 3]}, "'words' must be a list of strings"),
        ({"words": ["  "]}, "'words' holds an empty entry"),
        ({"words": ["\u200b"]}, "is empty once folded"),
        ({"words": ["a\x07b"]}, "control character"),
        ({"words": ["x" * 101]}, "longer than 100"),
        ({"accounts": ["two words"]}, "bad account 'two words'"),
        ({"accounts": ["x:"]}, "bad account 'x:'"),
        ({"accounts": ["bad source!:me"]}, "bad account"),
        ({"chats": ["smbiz"]}, "'chats' must be an object"),
        ({"chats": {"sm biz": {}}}, "bad chat tag 'sm biz'"),
        ({"chats": {"smbiz": {"words": ["x"], "users": []}}}, "unknown key(s) 'users' in chats.smbiz"),
        ({"chats": {"smbiz": {"words": [""]}}}, "'chats.smbiz.words' holds an empty entry"),
        ({"chats": {"smbiz": []}}, "chats.smbiz must be an object"),
        ({"profanity": "yes"}, "'profanity' must be true or false"),
        ({"approval": 1}, "'approval' must be true or false"),
        ({"profanity_allow": [None]}, "'profanity_allow' must be a list of strings"),
    ],
)
def test_bad_rules_are_refused_with_a_reason(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Rules.from_dict(data)


def test_bad_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Rules.from_json("{not json")


def test_too_many_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 10000"):
        Rules(words=tuple(f"w{i}" for i in range(10_001)))


@pytest.mark.timeout(20)  # a backtracking pattern takes minutes on these; the linear one takes milliseconds
def test_hostile_text_is_judged_in_linear_time() -> None:
    rules = Rules(words=("buy now", "vuvu", "sh!t"), chats={"smbiz": ChatRules(words=("crypto",))}, profanity=True)
    n = 200_000
    for text in ("alabam" + "@" * n, "fu" + "*u" * n, "q" + "*" * n, "v" * n, "b" + "a@" * n, "god" + " -" * n + "x"):
        assert judge(post(text), rules).action in ("show", "block")


# ---- properties ----

WORD = st.text(alphabet="bcdfg", min_size=1, max_size=8)  # no vowels, so no leetspeak reading of the text
CLEAN = st.text(alphabet="hjkmnpqrvwxyz #@!.,-_'\n0123456789\u00e9\u200b\uff48", max_size=80)
CHATS = st.lists(st.sampled_from(["smbiz", "edchat", "journchat"]), min_size=1, max_size=3, unique=True)


ANY_TEXT = st.text(max_size=200)


def posts(text: st.SearchStrategy[str] = ANY_TEXT) -> st.SearchStrategy[Post]:
    return st.builds(
        Post,
        key=st.just("k"),
        source=st.sampled_from(["x", "mastodon", "bluesky", "webhook", "X", ""]),
        chats=CHATS.map(tuple),
        author=st.builds(Author, handle=st.text(max_size=20), name=st.text(max_size=20)),
        text=text,
        url=st.just(""),
        created=st.just(0),
        at=st.just(0),
    )


ENTRY = st.text(min_size=1, max_size=30).filter(lambda s: "".join(fold(s).split()) != "" and s.strip() == s)


def _safe_rules(data: Any) -> Rules | None:
    try:
        return Rules.from_dict(data)
    except ValueError:
        return None


RULES_DATA = st.fixed_dictionaries(
    {},
    optional={
        "words": st.lists(st.one_of(ENTRY, WORD), max_size=5),
        "accounts": st.lists(st.from_regex(r"[a-zA-Z0-9:@._ -]{1,12}", fullmatch=True), max_size=3),
        "chats": st.dictionaries(
            st.sampled_from(["smbiz", "edchat"]),
            st.fixed_dictionaries({}, optional={"words": st.lists(ENTRY, max_size=3)}),
            max_size=2,
        ),
        "profanity": st.booleans(),
        "approval": st.booleans(),
    },
)


@settings(max_examples=300, deadline=None)
@given(p=posts(), rules_data=RULES_DATA, draw=st.data())
def test_judge_never_raises_and_keeps_its_promises(p: Post, rules_data: Any, draw: st.DataObject) -> None:
    rules = _safe_rules(rules_data)
    if rules is None:
        return
    entries = [*rules.words, *(w for r in rules.chats.values() for w in r.words)]
    if entries:  # mix the rules' own words into the text, so blocks and narrowing happen
        pieces = draw.draw(st.lists(st.one_of(st.sampled_from(entries), st.text(max_size=10)), max_size=6))
        p = p.replace(text=" ".join(pieces))
    verdict = judge(p, rules)
    if verdict.action == "block":
        assert verdict.post is None and verdict.hits
    else:
        assert verdict.post is not None
        assert verdict.action == ("hold" if rules.approval else "show")
        assert set(verdict.post.chats) <= set(p.chats) and verdict.post.chats
        assert len(verdict.hits) == len(p.chats) - len(verdict.post.chats)
    assert Rules.from_dict(rules.to_dict()) == rules


@settings(max_examples=300, deadline=None)
@given(
    p=posts(CLEAN),
    words=st.lists(WORD, max_size=6),
    chat_words=st.lists(WORD, max_size=3),
    handles=st.lists(st.text(alphabet="bcdfg", min_size=1, max_size=6), max_size=3),
    approval=st.booleans(),
)
def test_a_post_in_no_blocked_list_is_always_shown(
    p: Post, words: list[str], chat_words: list[str], handles: list[str], approval: bool
) -> None:
    p = p.replace(author=Author(handle="hjk", name="Hjk"))
    rules = Rules(
        words=tuple(words),
        accounts=tuple(handles),
        chats={"smbiz": ChatRules(words=tuple(chat_words), accounts=tuple(f"x:{h}" for h in handles))},
        approval=approval,
    )
    verdict = judge(p, rules)
    assert (verdict.action, verdict.post, verdict.hits) == ("hold" if approval else "show", p, ())


def _bold(s: str) -> str:
    return "".join(chr(0x1D41A + ord(c) - ord("a")) for c in s)


def _wide(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) for c in s)


VARIANTS = [
    str.upper,
    str.title,
    _bold,
    _wide,
    lambda s: "".join(c + "\u0301" for c in s),
    lambda s: unicodedata.normalize("NFC", "".join(c + "\u0308" for c in s)),
    lambda s: "\u200b".join(s),
]


@settings(max_examples=300, deadline=None)
@given(
    word=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10),
    variant=st.sampled_from(VARIANTS),
    before=CLEAN,
    after=CLEAN,
    in_chat=st.booleans(),
)
def test_blocking_is_case_and_unicode_insensitive(
    word: str, variant: Any, before: str, after: str, in_chat: bool
) -> None:
    rules = Rules(chats={"smbiz": ChatRules(words=(word.upper(),))}) if in_chat else Rules(words=(word,))
    verdict = judge(post(f"{before} {variant(word)} {after}", chats=("smbiz",)), rules)
    assert verdict.action == "block"
    assert verdict.hits[0].entry in (word, word.upper())


ENTRY_TEXT = st.text(alphabet="abcio\u00e9\u00df\u03c3\u0436@!$|*'-_.01345 ", min_size=1, max_size=12)


@settings(max_examples=500, deadline=None)
@given(entry=ENTRY_TEXT, before=CLEAN, after=CLEAN)
def test_an_entry_written_out_in_a_post_is_always_found(entry: str, before: str, after: str) -> None:
    try:
        rules = Rules(words=(entry,))
    except ValueError:
        return
    assert judge(post(f"{before} {entry} {after}"), rules).action == "block"


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60))
def test_the_view_of_any_text_is_the_character_tables_reading(text: str) -> None:
    assert _view(text) == text.translate(_VIEW)  # _view works on UTF-8 bytes; lone surrogates included


def test_a_verdict_is_built_compared_and_frozen() -> None:
    p, hit = post(), Hit("word", "spam", "smbiz")
    verdict = Verdict("hold", p, (hit,))
    assert (verdict.action, verdict.post, verdict.hits) == ("hold", p, (hit,))
    assert (
        verdict
        == Verdict(action="hold", post=p, hits=(hit,))
        == msgspec.structs.replace(Verdict("show", p), action="hold", hits=(hit,))
    )
    assert Verdict("block", None).hits == () and hash(Verdict("block", None)) == hash(Verdict("block", None, ()))
    assert repr(verdict) == f"Verdict(action='hold', post={p!r}, hits=({hit!r},))"
    with pytest.raises(AttributeError):
        verdict.action = "show"  # type: ignore[misc]


@settings(max_examples=300, deadline=None)
@given(p=posts(), rules_data=RULES_DATA, draw=st.data())
def test_rules_without_chat_rules_judge_as_the_per_chat_path_does(
    p: Post, rules_data: Any, draw: st.DataObject
) -> None:
    rules = _safe_rules({**rules_data, "chats": {}})
    if rules is None:
        return
    if rules.words:
        pieces = draw.draw(st.lists(st.one_of(st.sampled_from(rules.words), st.text(max_size=10)), max_size=6))
        p = p.replace(text=" ".join(pieces))
    # A chat no post is in, with an account rule only: the per-chat loop runs, the text matchers stay the same
    looped = replace(rules, chats={"unused": ChatRules(accounts=("x:nobody",))})
    fast, plain = judge(p, rules), judge(p, looped)
    assert (fast.action, fast.post, fast.hits) == (plain.action, plain.post, plain.hits)
