"""Request mix: path templates, placeholder feeders, sensitive query values, top N."""

from __future__ import annotations

from loadorch.replay.mix import build_mix, is_sensitive, normalise_path
from loadorch.replay.sources import Hit

HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
UUID = "550e8400-e29b-41d4-a716-446655440000"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"


def test_path_segments_become_named_placeholders() -> None:
    assert normalise_path("/posts/123") == ("/posts/{post_id}", [("post_id", "123")], 0)
    assert normalise_path(f"/u/{HASH}") == ("/u/{u_hash}", [("u_hash", HASH)], 0)
    assert normalise_path(f"/users/{UUID}/posts/7/comments")[0] == "/users/{user_id}/posts/{post_id}/comments"
    assert normalise_path("/categories/5")[0] == "/categories/{category_id}"
    assert normalise_path("/42")[0] == "/{id}"
    assert normalise_path("/a/1/2")[0] == "/a/{a_id}/{id}"
    assert normalise_path("/v2/posts/latest")[0] == "/v2/posts/latest"


def test_sensitive_query_values_are_dropped_and_counted() -> None:
    template, values, sensitive = normalise_path(f"/feed?page=2&token=abc&sort=new&x={JWT}&who=a@b.io")
    assert template == "/feed?page=&sort=&token=&who=&x="
    assert values == [] and sensitive == 3
    template, values, sensitive = normalise_path(
        "/feed?page=2&api_key=zz&sort=new&flag", query_values="placeholder"
    )
    assert template == "/feed?api_key=&flag&page={page}&sort={sort}"
    assert values == [("page", "2"), ("sort", "new")] and sensitive == 1
    assert normalise_path("/feed?sort=new&page=2&sessionId=1", query_values="literal")[0] == (
        "/feed?page=2&sessionId=&sort=new"
    )
    assert is_sensitive("q", HASH) and is_sensitive("q", "QmFzZTY0ZW5jb2RlZFNlY3JldDEyMzQ1")
    assert not is_sensitive("q", "shoes") and not is_sensitive("page", "12")
    assert not is_sensitive("q", "supercalifragilisticexpialidocious")


def test_mix_weights_statuses_top_n_and_feeders() -> None:
    hits: list[Hit] = []
    for i in range(60):
        hits.append(Hit(i, "GET", f"/posts/{i % 7}", 200 if i % 5 else 404))
    hits += [Hit(0, "GET", "/feed?page=1", 200)] * 30
    hits += [Hit(0, "POST", "/posts", 201)] * 6
    hits += [Hit(0, "GET", f"/rare/{i}x", 200) for i in range(4)]  # 4 distinct rare templates
    mix = build_mix(hits, top_n=3)
    assert [(t.method, t.path_template, t.requests) for t in mix.templates] == [
        ("GET", "/posts/{post_id}", 60),
        ("GET", "/feed?page=", 30),
        ("POST", "/posts", 6),
    ]
    assert abs(sum(t.weight for t in mix.templates) - 1) < 1e-12
    assert mix.templates[0].weight == 60 / 96
    assert mix.templates[0].statuses == {200: 48, 404: 12}
    assert mix.dropped_share == 4 / 100 and mix.total_requests == 100
    assert [t.name for t in mix.templates] == ["get_posts_post_id", "get_feed", "post_posts"]
    assert sorted(mix.feeders) == ["post_id"] and sorted(mix.feeders["post_id"]) == [str(i) for i in range(7)]
    assert mix.feeder_csv("post_id").splitlines()[0] == "post_id"


def test_reservoir_is_bounded_and_counts_weigh() -> None:
    hits = (Hit(0, "GET", f"/items/{i}", 200) for i in range(50_000))
    mix = build_mix(hits, reservoir_size=100)
    assert len(mix.feeders["item_id"]) == 100 and mix.templates[0].requests == 50_000
    weighted = build_mix([Hit(0, "GET", "/a?token=x", 0, 5), Hit(0, "GET", "/b", 0, 15)])
    assert [(t.path_template, t.weight) for t in weighted.templates] == [("/b", 0.75), ("/a?token=", 0.25)]
    assert weighted.sensitive_dropped == 5
