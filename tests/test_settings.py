"""Loading settings from mixer.toml and MIXER_* variables: values, errors with file/line/key, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mixer.config import BUNDLED_CONFIG, PALETTE, find_config, load_settings, render_settings
from mixer.ingest.hashtags import normalize_hashtag
from mixer.settings import DEMO_RECORDING, ChatSettings, ConfigError, Settings


def write(tmp_path: Path, text: str, name: str = "mixer.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env or {})
    return info.value


def test_bundled_sample_loads_with_its_chats() -> None:
    settings = load_settings(BUNDLED_CONFIG, {})
    assert settings.event_name == "#chatmixer night"
    assert settings.event_hashtag == "chatmixer"
    assert settings.chat_tags == ("pstweetchat", "powershell", "pshsummit", "devops", "chatmixer")
    assert settings.chat("pshsummit") == ChatSettings("pshsummit", "PowerShell Summit", "#81c784")
    assert len({c.colour for c in settings.chats}) == 5
    assert settings.chat("pstweetchat").schedule == "first Fri 13:00-14:00 America/New_York"  # type: ignore[union-attr]
    assert settings.redis_url == ""
    assert settings.demo_file == str(DEMO_RECORDING)


def test_bundled_sample_sets_the_dataclass_defaults() -> None:
    settings = load_settings(BUNDLED_CONFIG, {})
    assert dataclasses.replace(settings, chats=(), source="defaults") == Settings()


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), {})
    assert dataclasses.replace(settings, source="defaults") == Settings()


def test_env_overrides_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 8000\nhost = "0.0.0.0"\n[merge]\nwindow_ms = 100\n')
    env = {"MIXER_SERVER_PORT": "9000", "MIXER_MERGE_WINDOW_MS": "250", "MIXER_REDIS_PREFIX": "ev1"}
    settings = load_settings(path, env)
    assert (settings.port, settings.host, settings.window_ms, settings.key_prefix) == (9000, "0.0.0.0", 250, "ev1")
    assert settings.source == f"{path} + env MIXER_REDIS_PREFIX, MIXER_SERVER_PORT, MIXER_MERGE_WINDOW_MS"


def test_env_strings_parse_to_the_fields_type(tmp_path: Path) -> None:
    env = {"MIXER_DEMO_SPEED": "2", "MIXER_EVENT_NAME": "Friday chat", "MIXER_REDIS_URL": "redis://db:6379/1"}
    settings = load_settings(write(tmp_path, ""), env)
    assert settings.demo_speed == 2.0 and isinstance(settings.demo_speed, float)
    assert (settings.event_name, settings.redis_url) == ("Friday chat", "redis://db:6379/1")


def test_unknown_mixer_variables_are_ignored(tmp_path: Path) -> None:
    env = {"MIXER_TEST_REDIS_URL": "redis://x", "MIXER_CONFIG": "elsewhere.toml", "MIXER_WHATEVER": "1"}
    settings = load_settings(write(tmp_path, ""), env)
    assert settings.source == str(tmp_path / "mixer.toml")


def test_bad_port_names_file_line_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, '# demo\n[event]\nname = "x"\n\n[server]\nhost = "::"\nport = "abc"\n')
    err = load_error(Path("mixer.toml"))
    assert (err.file, err.line, err.key) == ("mixer.toml", 7, "server.port")
    assert str(err) == "mixer.toml:7: server.port: must be an integer from 1 to 65535, got 'abc'"


@pytest.mark.parametrize(
    ("line", "key", "got"),
    [
        ("port = 0", "server.port", "got 0"),
        ("port = 80.0", "server.port", "got 80.0"),
        ("port = true", "server.port", "got True"),
        ("cutoff_seconds = -1", "server.cutoff_seconds", "got -1"),
        ("cutoff_seconds = nan", "server.cutoff_seconds", "got nan"),
        ("backlog_bytes = 0", "server.backlog_bytes", "got 0"),
        ("stats_seconds = 0", "server.stats_seconds", "got 0"),
        ("stats_seconds = 7200", "server.stats_seconds", "got 7200"),
        ("host = 5", "server.host", "got 5"),
    ],
)
def test_wrong_type_or_range_is_rejected(tmp_path: Path, line: str, key: str, got: str) -> None:
    err = load_error(write(tmp_path, f"[server]\n{line}\n"))
    assert (err.line, err.key) == (2, key)
    assert err.reason.endswith(got)


def test_int_is_accepted_where_a_float_is_expected(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[demo]\nspeed = 0\nmax_gap = 3\n"), {})
    assert (settings.demo_speed, settings.demo_max_gap) == (0.0, 3.0)


def test_unknown_key_is_reported_with_suggestion(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "[server]\nhost = 'h'\nprot = 80\n"))
    assert (err.line, err.key) == (3, "server.prot")
    assert err.reason == "unknown key 'prot' (did you mean 'port'?)"


def test_unknown_section_is_reported_with_suggestion(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "[event]\nname = 'x'\n\n[sever]\nport = 80\n"))
    assert (err.line, err.key, err.reason) == (4, "sever", "unknown section 'sever' (did you mean 'server'?)")


def test_key_outside_any_section_is_reported(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "# top\nport = 80\n"))
    assert (err.line, err.key, err.reason) == (2, "port", "unknown top-level key 'port'; keys belong in a [section]")


def test_unknown_chat_key_is_reported_with_suggestion(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "[[chats]]\ntag = 'a'\n\n[[chats]]\ntag = 'b'\ncolor = '#fff'\n"))
    assert str(err).endswith(":6: chats[1].color: unknown key 'color' (did you mean 'colour'?)")


def test_duplicate_chat_tag_is_reported(tmp_path: Path) -> None:
    text = "[[chats]]\ntag = 'smbiz'\n\n[[chats]]\ntag = 'edchat'\n\n[[chats]]\ntag = '#SMBiz'\n"
    err = load_error(write(tmp_path, text))
    assert (err.line, err.key) == (8, "chats[2].tag")
    assert err.reason == "duplicate tag 'smbiz', first used by chats[0] at line 2"


def test_a_chat_tag_is_read_as_a_posts_hashtag_is(tmp_path: Path) -> None:
    # full width and a decomposed accent: the chats that posts tagged #SMBIZ and #café land in
    text = "[[chats]]\ntag = '\uff03\uff33\uff2d\uff22\uff29\uff3a'\n\n[[chats]]\ntag = 'cafe\u0301'\n"
    settings = load_settings(write(tmp_path, text), {})
    posts_chats = (normalize_hashtag("#SMBIZ"), normalize_hashtag("#caf\u00e9"))
    assert settings.chat_tags == posts_chats == ("smbiz", "caf\u00e9")
    err = load_error(write(tmp_path, text + "\n[[chats]]\ntag = 'smbiz'\n"))
    assert err.reason == "duplicate tag 'smbiz', first used by chats[0] at line 2"


def test_origins_are_read_as_browsers_send_them_and_urls_are_whole(tmp_path: Path) -> None:
    text = "[server]\norigins = ['https://Blog.Example:443', 'http://x.example:80/', 'https://y.example:8443']\n"
    assert load_settings(write(tmp_path, text), {}).origins == (
        "https://blog.example", "http://x.example", "https://y.example:8443"
    )  # fmt: skip
    for key, value in (
        ("server.origins", "['https://c.example/embed']"),  # a page, not an origin: no browser sends it
        ("server.origins", "['blog.example']"),
        ("bluesky.appview", "'https://api.bsky.app is great'"),
        ("bluesky.endpoint", "'wss://x y'"),
        ("mastodon.instances", "['https://m.social/ path']"),
    ):
        section, name = key.split(".")
        err = load_error(write(tmp_path, f"[{section}]\n{name} = {value}\n"))
        assert (err.line, err.key) == (2, key), (key, err)


@pytest.mark.parametrize("tag", ["", "#", "small biz", "small#biz", "x" * 101])
def test_bad_chat_tag_is_rejected(tmp_path: Path, tag: str) -> None:
    err = load_error(write(tmp_path, f"[[chats]]\ntitle = 'T'\ntag = {tag!r}\n"))
    assert (err.line, err.key) == (3, "chats[0].tag")


def test_missing_chat_tag_points_at_its_table(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "[[chats]]\ntag = 'a'\n[[chats]]\ntitle = 'B'\n"))
    assert (err.line, err.key, err.reason) == (3, "chats[1].tag", "is required (the chat's hashtag)")


def test_chat_tags_and_hashtag_are_normalised(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, "[event]\nhashtag = '#ChatMixer'\n[[chats]]\ntag = ' #PSTweetChat '\n"), {}
    )
    assert (settings.event_hashtag, settings.chat_tags) == ("chatmixer", ("pstweetchat",))


def test_chat_defaults_title_and_palette_colour_and_expands_short_colour(tmp_path: Path) -> None:
    text = "[[chats]]\ntag = 'a'\n[[chats]]\ntag = 'b'\ncolour = '#F0a'\n[[chats]]\ntag = 'c'\n"
    settings = load_settings(write(tmp_path, text), {})
    assert settings.chats == (
        ChatSettings("a", "#a", PALETTE[0]),
        ChatSettings("b", "#b", "#ff00aa"),
        ChatSettings("c", "#c", PALETTE[2]),
    )


@pytest.mark.parametrize("colour", ["red", "#ff00", "ff0000", "#ggg", ""])
def test_bad_colour_is_rejected(tmp_path: Path, colour: str) -> None:
    err = load_error(write(tmp_path, f"[[chats]]\ntag = 'a'\ncolour = {colour!r}\n"))
    assert (err.line, err.key) == (3, "chats[0].colour")
    assert "'#rgb' or '#rrggbb'" in err.reason


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "[server]\nhost = '::'\nport 80\n"))
    assert (err.line, err.key) == (3, "")
    assert err.reason.startswith("invalid TOML: ")
    assert str(err).startswith(f"{tmp_path / 'mixer.toml'}:3: invalid TOML: ")


def test_multiline_string_does_not_mislead_the_line_locator(tmp_path: Path) -> None:
    text = '[event]\nname = """\n[server]\nport = 1\n"""\n[server]\nport = -5\n'
    err = load_error(write(tmp_path, text))
    assert (err.line, err.key) == (7, "server.port")


def test_relative_demo_file_resolves_against_config_dir(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    (sub / "rec").mkdir(parents=True)
    (sub / "rec" / "chat.jsonl").write_text("")
    settings = load_settings(write(sub, "[demo]\nfile = 'rec/chat.jsonl'\n"), {})
    assert settings.demo_file == str((sub / "rec" / "chat.jsonl").resolve())


def test_bad_env_value_names_variable(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "[server]\nport = 8000\n"), {"MIXER_SERVER_PORT": "abc"})
    assert (err.file, err.line, err.key) == ("environment", None, "MIXER_SERVER_PORT")
    assert str(err) == "environment: MIXER_SERVER_PORT: must be an integer from 1 to 65535, got 'abc'"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MIXER_MERGE_WINDOW_MS", "1.5"),
        ("MIXER_DEMO_SPEED", "-1"),
        ("MIXER_DEMO_SPEED", "inf"),
        ("MIXER_REDIS_URL", "x"),
    ],
)
def test_bad_env_values_are_rejected(tmp_path: Path, name: str, value: str) -> None:
    assert load_error(write(tmp_path, ""), {name: value}).key == name


def test_chats_env_replaces_list() -> None:
    settings = load_settings(BUNDLED_CONFIG, {"MIXER_CHATS": "smbiz, #EdChat"})
    assert settings.chats == (
        ChatSettings("smbiz", "#smbiz", PALETTE[0]),
        ChatSettings("edchat", "#edchat", PALETTE[1]),
    )
    assert settings.source.endswith(" + env MIXER_CHATS")


@pytest.mark.parametrize("value", ["", " , ", "a,b,A", "small biz"])
def test_bad_chats_env_is_rejected(tmp_path: Path, value: str) -> None:
    err = load_error(write(tmp_path, ""), {"MIXER_CHATS": value})
    assert (err.file, err.key) == ("environment", "MIXER_CHATS")


def test_render_round_trips(tmp_path: Path) -> None:
    text = (
        "[event]\nname = 'Quotes \" back\\\\slash \\t tab and ünïcode 🎉'\n"
        "[[chats]]\ntag = 'A'\ntitle = 'Line\\nbreak'\n[[chats]]\ntag = 'b'\ncolour = '#abc'\n"
        "[[chats]]\ntag = 'c'\nsources = ['x', 'Mastodon']\n[[chats]]\ntag = 'd'\nsources = []\n"
        "[demo]\nfile = 'x.jsonl'\nspeed = 1e-5\n"
    )
    env = {"MIXER_SERVER_PORT": "9000", "MIXER_SERVER_CUTOFF_SECONDS": "0.1"}
    (tmp_path / "x.jsonl").write_text("")
    no_profiles = load_settings(write(tmp_path, "profiles = []\n", "none.toml"), {})
    assert no_profiles.profiles == ()
    for settings in (
        load_settings(BUNDLED_CONFIG, {}),
        load_settings(write(tmp_path, text), env),
        Settings(),
        no_profiles,
    ):
        rendered = render_settings(settings)
        assert rendered.startswith(f"# chatmixer settings in effect, from: {settings.source}\n")
        again = load_settings(write(tmp_path, rendered, "rendered.toml"), {})
        assert dataclasses.replace(again, source=settings.source) == settings


@pytest.mark.parametrize(
    ("sources", "reason"),
    [
        ("['mastodon', 'facebook']", "got 'facebook' (the webhook and replays take any chat)"),
        ("['x', 'X']", "which names one twice"),
        ("'x'", "must be a list of distinct live sources among 'mastodon', 'bluesky', 'x'"),
    ],
)
def test_a_chats_sources_name_live_followers_once_each(tmp_path: Path, sources: str, reason: str) -> None:
    err = load_error(write(tmp_path, f"[[chats]]\ntag = 'a'\n[[chats]]\ntag = 'b'\nsources = {sources}\n"))
    assert (err.line, err.key) == (5, "chats[1].sources")
    assert reason in err.reason


def test_a_chat_without_sources_is_followed_by_every_live_source_one_with_them_by_those() -> None:
    chats = (
        ChatSettings("a", "a", "#ffffff"),
        ChatSettings("b", "b", "#ffffff", sources=("x",)),
        ChatSettings("c", "c", "#ffffff", sources=()),
    )
    settings = Settings(chats=chats)
    assert [settings.tags_for(s) for s in ("mastodon", "bluesky", "x")] == [("a",), ("a",), ("a", "b")]


@pytest.mark.parametrize(
    ("text", "line", "key", "reason"),
    [
        ("[[profiles]]\nname = 'w'\n\nrate = -1\n", 4, "profiles[0].rate", "'rate' must be posts per second"),
        ("[[profiles]]\nname = 'w'\nburst = 0\n", 3, "profiles[0].burst", "burst"),
        ("[[profiles]]\nname = 'w'\n[[profiles]]\nname = 'w'\n", 4, "profiles[1].name", "duplicate name 'w'"),
        (
            "[[chats]]\ntag = 'smbiz'\n[[profiles]]\nname = 'w'\nweights = { smbz = 2 }\n",
            5,
            "profiles[0].weights",
            "'smbz' is not a chat of this file's [[chats]]",
        ),
    ],
)
def test_a_bad_profile_is_reported_at_its_own_key(tmp_path: Path, text: str, line: int, key: str, reason: str) -> None:
    err = load_error(write(tmp_path, text))
    assert (err.line, err.key) == (line, key)
    assert reason in err.reason


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        find_config(str(tmp_path / "nope.toml"), {"MIXER_CONFIG": str(BUNDLED_CONFIG)})
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: no such config file"


def test_missing_config_named_by_env_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        find_config(None, {"MIXER_CONFIG": str(tmp_path / "nope.toml")})
    assert (info.value.file, info.value.key) == ("environment", "MIXER_CONFIG")


def test_find_config_prefers_explicit_then_env_then_local_then_bundled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    explicit, named = write(tmp_path, "", "a.toml"), write(tmp_path, "", "b.toml")
    assert find_config(None, {}) == BUNDLED_CONFIG
    local = write(tmp_path, "")
    assert find_config(None, {}) == Path("mixer.toml") and local.is_file()
    assert find_config(None, {"MIXER_CONFIG": str(named)}) == named
    assert find_config(str(explicit), {"MIXER_CONFIG": str(named)}) == explicit


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "mixer.toml"
    path.write_bytes(b"[event]\nname = '\xff'\n")
    assert load_error(path).line == 2
    assert load_error(tmp_path / "missing.toml").reason.startswith("cannot read: ")


def test_sources_are_read_from_lists_and_booleans(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[mastodon]\ninstances = ["https://mastodon.social/", "https://hachyderm.io"]\n'
        '[bluesky]\nenabled = true\n[x]\nbearer_token = "t0k"\n[webhook]\ntoken = "hook-0123456789abcdef"\n',
    )
    settings = load_settings(path, {})
    assert settings.mastodon_instances == ("https://mastodon.social", "https://hachyderm.io")
    assert settings.bluesky_enabled is True
    assert (settings.x_bearer_token, settings.webhook_token) == ("t0k", "hook-0123456789abcdef")


def test_sources_come_from_the_environment_too(tmp_path: Path) -> None:
    env = {"MIXER_MASTODON_INSTANCES": "https://a.example, https://b.example", "MIXER_BLUESKY_ENABLED": "yes"}
    settings = load_settings(write(tmp_path, ""), env)
    assert settings.mastodon_instances == ("https://a.example", "https://b.example")
    assert settings.bluesky_enabled is True
    assert load_error(write(tmp_path, ""), {"MIXER_BLUESKY_ENABLED": "maybe"}).key == "MIXER_BLUESKY_ENABLED"


def test_a_bad_instance_url_names_its_line(tmp_path: Path) -> None:
    error = load_error(write(tmp_path, '[event]\nname = "n"\n[mastodon]\ninstances = ["mastodon.social"]\n'))
    assert (error.line, error.key) == (4, "mastodon.instances")


def test_instance_addresses_are_read_as_one_follower_names_them(tmp_path: Path) -> None:
    text = '[mastodon]\ninstances = ["https://Mastodon.Social:443/", "http://LocalHost:80", "https://Hachyderm.io:8443/"]\n'
    settings = load_settings(write(tmp_path, text), {})
    assert settings.mastodon_instances == ("https://mastodon.social", "http://localhost", "https://hachyderm.io:8443")
    again = load_settings(write(tmp_path, render_settings(settings)), {})
    assert again.mastodon_instances == settings.mastodon_instances  # `mixer config > mixer.toml` loads back the same


def test_one_instance_written_twice_in_any_spelling_is_refused_naming_both(tmp_path: Path) -> None:
    text = '[event]\nname = "n"\n\n[mastodon]\ninstances = [\n "https://mastodon.social",\n "https://Mastodon.Social/",\n]\n'
    error = load_error(write(tmp_path, text))
    assert (error.file.endswith("mixer.toml"), error.line, error.key) == (True, 5, "mastodon.instances")
    assert error.reason.endswith(
        "which names the instance https://mastodon.social twice ('https://mastodon.social' and"
        " 'https://Mastodon.Social/'): one instance is followed once, give it once"
    )
    env = {"MIXER_MASTODON_INSTANCES": "https://a.example,https://A.EXAMPLE:443"}
    error = load_error(write(tmp_path, ""), env)
    assert (error.file, error.line, error.key) == ("environment", None, "MIXER_MASTODON_INSTANCES")
    assert "names the instance https://a.example twice" in error.reason


def test_a_profile_link_with_an_at_sign_is_rendered_as_it_is_and_loads_back(tmp_path: Path) -> None:
    # it was written 'https://***@chatmixer' ("credentials not shown"), and `mixer config > mixer.toml` kept that
    settings = load_settings(write(tmp_path, '[event]\nlink = "https://mastodon.social/@chatmixer"\n'), {})
    rendered = render_settings(settings)
    assert 'link = "https://mastodon.social/@chatmixer"\n' in rendered
    assert load_settings(write(tmp_path, rendered), {}).event_link == "https://mastodon.social/@chatmixer"


def test_rendered_settings_never_show_secrets(tmp_path: Path) -> None:
    env = {"MIXER_WEBHOOK_TOKEN": "h00k-0123456789abcdef"}
    settings = load_settings(write(tmp_path, '[x]\nbearer_token = "s3cret"\n'), env)
    rendered = render_settings(settings)
    assert "s3cret" not in rendered and "h00k" not in rendered
    assert "MIXER_X_BEARER_TOKEN" in rendered
