"""Attachments with alt text from each platform's documented media objects (tests/fixtures/media, x-v2).

Mastodon ``media_attachments``, X v1.1 ``extended_entities.media`` and v2 ``includes.media``, Bluesky embeds in
record and view form: kind, URL, preview, alt and size reach the Post, and ``media`` stays their URLs.
"""

from __future__ import annotations

import json
from typing import Any

from mixer.codec import pack_post, unpack_post
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.recorded import parse_record
from mixer.ingest.sources.bluesky import attachments, parse_jetstream
from mixer.ingest.sources.mastodon import parse_status
from mixer.ingest.sources.x_stream import STREAM_QUERY
from mixer.ingest.sources.x_v1 import parse_v1
from mixer.ingest.sources.x_v2 import parse_v2
from mixer.models import Attachment, Post
from tests.helpers import FIXTURES

EVERY_TAG = ChatMatcher(None)
NOW = 1_800_000_000_000
MEDIA = FIXTURES / "media"
BSKY_DID = "did:plc:q235v55g5unth4zjjdpacfdr"
BSKY_IMAGE = "bafkreibbxyzqd5nnwmnzogrpsvihmdlxqgzxgdyybfnqo5tgztbtzmfhti"
BSKY_VIDEO = "bafkreiclsqxkpt3tvkmsnhcdh4wkc5ibrgezyfvgw6xwaq6x6t2n2kqfhe"


def load(name: str) -> Any:
    return json.loads((MEDIA / name).read_text())


def only_post(events: list[Any]) -> Post:
    found = [e for e in events if isinstance(e, Post)]
    assert found, events
    return found[-1]


def survives_json_and_msgpack(post: Post) -> None:
    assert Post.from_dict(json.loads(json.dumps(post.to_dict()))) == post
    assert unpack_post("1-0", pack_post(post)).attachments == post.attachments


def test_mastodon_media_attachments_give_kind_url_preview_description_and_original_size() -> None:
    post = only_post(parse_status(load("mastodon_status.json"), EVERY_TAG, NOW))
    base = "https://files.mastodon.social/media_attachments/files/022"
    assert post.attachments == (
        Attachment(
            "image",
            f"{base}/345/792/original/57859aede991da25.jpeg",
            f"{base}/345/792/small/57859aede991da25.jpeg",
            "test media description",
            640,
            480,
        ),
        Attachment(
            "video",
            f"{base}/546/306/original/dab9a597f68b9745.mp4",
            f"{base}/546/306/small/dab9a597f68b9745.png",
            None,
            1280,
            720,
        ),
        Attachment(
            "audio", "https://files.mastodon.social/media_attachments/files/021/130/559/original/4fc2a6bce1e8a4cb.mp3"
        ),
    )
    assert post.media == tuple(a.url for a in post.attachments)
    assert post.to_dict()["attachments"][0] == {
        "kind": "image",
        "url": f"{base}/345/792/original/57859aede991da25.jpeg",
        "preview": f"{base}/345/792/small/57859aede991da25.jpeg",
        "alt": "test media description",
        "width": 640,
        "height": 480,
    }
    assert post.to_dict()["attachments"][2] == {"kind": "audio", "url": post.media[2]}  # nothing unknown is sent
    survives_json_and_msgpack(post)


def test_a_mastodon_boost_carries_the_originals_attachments() -> None:
    original = load("mastodon_status.json")
    boost = {**original, "id": "9", "uri": original["uri"] + "/activity", "reblog": original, "media_attachments": []}
    first, second = parse_status(boost, EVERY_TAG, NOW)
    assert isinstance(second, Post) and second.boost_of == first.key  # type: ignore[union-attr]
    assert second.attachments == first.attachments and len(second.attachments) == 3  # type: ignore[union-attr]


def test_a_mastodon_attachment_that_is_not_http_is_dropped_and_the_rest_kept() -> None:
    status = load("mastodon_status.json")
    status["media_attachments"][0]["url"] = "javascript:alert(1)"
    status["media_attachments"][1]["preview_url"] = "data:image/png;base64,AAAA"
    post = only_post(parse_status(status, EVERY_TAG, NOW))
    assert [a.kind for a in post.attachments] == ["video", "audio"]
    assert post.attachments[0].preview_url is None and post.attachments[0].width == 1280
    assert not any(url.startswith(("javascript:", "data:")) for url in post.media)


def test_x_v1_extended_entities_give_the_photo_with_its_ext_alt_text_and_size() -> None:
    post = only_post(parse_v1(load("x_v1_status.json"), EVERY_TAG, NOW))
    assert post.attachments == (
        Attachment(
            "image",
            "https://pbs.twimg.com/media/CntPOHGUAAAinkH.jpg",
            None,
            "A black and white photo of a dog lying on a rug",
            1024,
            857,
        ),
    )
    assert post.media == ("https://pbs.twimg.com/media/CntPOHGUAAAinkH.jpg",)
    survives_json_and_msgpack(post)


def test_x_v1_animated_gif_is_a_gifv_whose_preview_is_its_still_and_a_retweet_carries_it() -> None:
    status = load("x_v1_status.json")
    media = status["extended_entities"]["media"][0]
    media.update(type="animated_gif", ext_alt_text=None)
    media["original_info"] = {"width": 498, "height": 280}
    retweet = {**status, "id_str": "755284472208031799", "retweeted_status": status}
    original, post = parse_v1(retweet, EVERY_TAG, NOW)
    expected = Attachment("gifv", media["media_url_https"], media["media_url_https"], None, 498, 280)
    assert original.attachments == post.attachments == (expected,)  # type: ignore[union-attr]


def test_x_v2_includes_media_give_the_real_alt_text_and_size() -> None:
    line = (FIXTURES / "x-v2" / "brexit.jsonl").read_text().splitlines()[0]
    events = parse_v2(json.loads(line), EVERY_TAG, NOW)
    original, retweet = (p for p in events if isinstance(p, Post) and any(a.alt for a in p.attachments))
    assert retweet.boost_of == original.key and retweet.attachments == original.attachments
    assert original.attachments == (
        Attachment(
            "image",
            "https://pbs.twimg.com/media/E_5xtEhVIAInx_o.jpg",
            None,
            "A long email from Green Energy - please request full text if required.",
            854,
            1757,
        ),
        Attachment("image", "https://pbs.twimg.com/media/E_5xtbNVQAQGNb4.jpg", width=841, height=1778),
        Attachment("image", "https://pbs.twimg.com/media/E_5xty_VgBAr1Is.jpg", width=1080, height=2160),
    )
    survives_json_and_msgpack(original)


def test_x_v2_video_is_its_preview_image_with_kind_video() -> None:
    message = json.loads((FIXTURES / "x-v2" / "media_tweet.jsonl").read_text().splitlines()[0])
    post = only_post(parse_v2(message, EVERY_TAG, NOW))
    still = "https://pbs.twimg.com/ext_tw_video_thumb/1558552952549277696/pu/img/7VaQu-AvReI8RHkv.jpg"
    assert [(a.kind, a.url, a.preview_url) for a in post.attachments] == [("video", still, still)]
    assert post.media == (still,)


def test_the_x_stream_asks_for_the_media_fields_the_parser_reads() -> None:
    assert set(STREAM_QUERY["media.fields"].split(",")) >= {"url", "preview_image_url", "alt_text", "width", "height"}


def test_bluesky_record_embeds_give_cdn_images_and_video_with_alt_and_aspect_ratio() -> None:
    lines = (MEDIA / "bluesky_jetstream.jsonl").read_text().splitlines()
    images, video = (only_post(parse_jetstream(json.loads(line), EVERY_TAG, NOW)) for line in lines)
    cdn = "https://cdn.bsky.app/img"
    assert images.chats == ("smbiz",)
    assert images.attachments == (
        Attachment(
            "image",
            f"{cdn}/feed_fullsize/plain/{BSKY_DID}/{BSKY_IMAGE}@jpeg",
            f"{cdn}/feed_thumbnail/plain/{BSKY_DID}/{BSKY_IMAGE}@jpeg",
            "Six people around a table with laptops and coffee cups",
            2000,
            1500,
        ),
        Attachment(  # an empty alt is no alt
            "image",
            f"{cdn}/feed_fullsize/plain/{BSKY_DID}/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy@jpeg",
            f"{cdn}/feed_thumbnail/plain/{BSKY_DID}/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy@jpeg",
        ),
    )
    watch = f"https://video.bsky.app/watch/{BSKY_DID}/{BSKY_VIDEO}"
    assert video.quote_of is not None  # a quote with media: the video is the quoting post's own
    assert video.attachments == (
        Attachment(
            "video", f"{watch}/playlist.m3u8", f"{watch}/thumbnail.jpg", "A host waving at the camera", 1080, 1920
        ),
    )
    survives_json_and_msgpack(images)
    survives_json_and_msgpack(video)


def test_bluesky_view_embeds_give_the_appviews_urls_alt_and_aspect_ratio() -> None:
    views = load("bluesky_views.json")
    (image,) = attachments(BSKY_DID, views["images"])
    assert (image["kind"], image["alt"], image["width"], image["height"]) == (
        "image",
        "Six people around a table with laptops and coffee cups",
        2000,
        1500,
    )
    assert image["url"] == views["images"]["images"][0]["fullsize"]
    assert image["preview"] == views["images"]["images"][0]["thumb"]
    (video,) = attachments(BSKY_DID, views["recordWithMedia"])
    media = views["recordWithMedia"]["media"]
    assert (video["kind"], video["url"], video["preview"], video["alt"]) == (
        "video",
        media["playlist"],
        media["thumbnail"],
        "A host waving at the camera",
    )


def test_a_recorded_platform_payload_keeps_its_attachments_through_parse_record() -> None:
    (post,) = parse_record(load("x_v1_status.json"), EVERY_TAG, NOW)
    assert isinstance(post, Post) and post.attachments[0].alt == "A black and white photo of a dog lying on a rug"
    (again,) = parse_record(post.to_dict(), EVERY_TAG, NOW)  # a normalised line, as `mixer normalize` prints it
    assert again == post
