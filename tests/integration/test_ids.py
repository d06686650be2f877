"""Item ids, the chunk format in Redis, and the result line format."""

import json

from harness import assert_exactly_once, check, id_key, read_jsonl, stream_lines

# (input line, expected id); None marks an empty line (skipped but counted).
ID_CASES = [
    ('{"id":"abc","x":1}', "abc"),
    ('{"id":42}', 42),
    ("[1,2,3]", 3),
    ("17", 4),
    ('{"x":"no id"}', 5),
    ("", None),
    ('{"id":[1.5]}', 7),
    ('{"id":null}', 8),
    ('{"id":{"a":1}}', 9),
    ('"a string"', 10),
    ("true", 11),
    ('{"id":-3,"y":[]}', -3),
    ('{"id":"0042"}', "0042"),
    ("null", 14),
    ('{"id":true}', 15),
    ('{"id":["x"]}', 16),
    (json.dumps({"id": "uni", "s": "h\u00e9llo \u2713 \"q\" \\ \n\t/", "f": 0.5, "neg": -7,
                 "nested": {"a": [1, {"b": None}], "e": {}}}, ensure_ascii=False), "uni"),
    ('{"id":"", "empty id": "is still a string"}', ""),
]


def _process(ctx):
    """Run a worker (echo) and a collector to completion; return the collect output (parsed, raw lines)."""
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty")
    out = ctx.path("results.jsonl")
    ctx.run("collect", "--queue", ctx.queue, "--out", out, "--until-done", redis="flag")
    worker.wait(15, expect_rc=0)
    return read_jsonl(out), out.read_text(encoding="utf-8").splitlines()


def _enqueue_id_cases(ctx):
    lines = [line for line, _ in ID_CASES]
    ctx.run("enqueue", "--queue", ctx.queue, "--chunk-size", 5, ctx.write_jsonl("items.jsonl", lines))
    return {id_key(i): json.loads(line) for line, i in ID_CASES if i is not None}


def test_ids_in_result_lines(ctx):
    expected = _enqueue_id_cases(ctx)
    results, raw_lines = _process(ctx)
    assert_exactly_once(results, [i for _, i in ID_CASES if i is not None], "collect output")
    texts = {id_key(i): line for line, i in ID_CASES if i is not None}
    for r, raw in zip(results, raw_lines):
        text = texts[id_key(r["id"])]
        check('"result":' + text in raw, f"item text {text!r} is not byte for byte in the result line {raw!r}")
    for r in results:
        check(r.get("ok") is True and r.get("result") == expected[id_key(r["id"])],
              f"result line for id {r['id']!r}: {r}")
        check(isinstance(r.get("attempts"), int) and r["attempts"] >= 1 and isinstance(r.get("ms"), int)
              and r["ms"] >= 0, f"result line needs integer attempts >= 1 and ms >= 0: {r}")


def test_chunk_format(ctx):
    # {"v":1,"chunk":"<chunk id>","items":[{"id":<id>,"item":"<the item's JSON text>"}, ...]}
    _enqueue_id_cases(ctx)
    expected = {id_key(i): line for line, i in ID_CASES if i is not None}
    chunks = ctx.pending_chunks()
    check(len(chunks) == ctx.stat("enqueued_chunks"),
          f"{len(chunks)} pending chunks, stats enqueued_chunks={ctx.stat('enqueued_chunks')}")
    texts = {}
    for ch in chunks:
        check(set(ch) == {"v", "chunk", "items"} and ch["v"] == 1 and isinstance(ch["chunk"], str) and ch["chunk"],
              f"chunk does not match {{\"v\":1,\"chunk\":...,\"items\":[...]}}: {json.dumps(ch)[:200]}")
        check(0 < len(ch["items"]) <= 5, f"chunk {ch['chunk']} has {len(ch['items'])} items, --chunk-size 5")
        for it in ch["items"]:
            check(set(it) == {"id", "item"} and isinstance(it["item"], str),
                  f"chunk item is not {{\"id\":..., \"item\":\"<JSON text>\"}}: {it}")
            texts[id_key(it["id"])] = it["item"]
    check(len({ch["chunk"] for ch in chunks}) == len(chunks), "chunk ids are not unique")
    check(texts.keys() == expected.keys(), f"ids in chunks {sorted(texts)}, expected {sorted(expected)}")
    for key, line in expected.items():
        check(texts[key] == line, f"id {key}: chunk item text {texts[key]!r} is not the input line {line!r}")


def test_large_integers_exact(ctx):
    # Ids and item values beyond 2^53 must survive unchanged (no round trip through double).
    lines = ['{"id":12345678901234567,"v":1}',
             '{"id":"big","n":9007199254740993,"m":-9223372036854775808,"x":9223372036854775807}']
    ctx.run("enqueue", "--queue", ctx.queue, ctx.write_jsonl("items.jsonl", lines))
    results, _ = _process(ctx)
    assert_exactly_once(results, [12345678901234567, "big"], "collect output")
    for r in results:
        if r["id"] == "big":
            check(r.get("result") == json.loads(lines[1]), f"big integers changed: {r.get('result')}")


def test_hand_built_chunk_per_contract(ctx):
    # A producer other than `chunkd enqueue` LPUSHes a chunk as the README documents it; the item text
    # reaches the result byte for byte, and an item whose text is not JSON fails alone.
    items = [("h1", '{"a": 1.1, "b":[1 ,2], "s":"\\u00e9"}'), (2, '[2, "two"]'), ("h3", '"three"'),
             (4, "null"), ("bad", "{not json")]
    chunk = {"v": 1, "chunk": "hand-built-1", "items": [{"id": i, "item": text} for i, text in items]}
    ctx.r.execute("LPUSH", ctx.key("pending"), json.dumps(chunk))
    ctx.r.execute("SET", ctx.key("sealed"), "1")  # the contract: a producer seals the queue when its input is in
    worker = ctx.spawn("worker", "--queue", ctx.queue, "--handler", "echo", "--exit-when-empty")
    worker.wait(15, expect_rc=0)
    check(ctx.stat("dead_chunks") == 0, f"hand-built chunk went to dead: {ctx.dead_entries()}")

    raw_lines = stream_lines(ctx.r, ctx.key("results"))
    results = [json.loads(line) for line in raw_lines]
    assert_exactly_once(results, [i for i, _ in items], "results stream")
    by_id = {id_key(r["id"]): (r, raw) for r, raw in zip(results, raw_lines)}
    for item_id, text in items:
        r, raw = by_id[id_key(item_id)]
        if item_id == "bad":
            check(r.get("ok") is False and isinstance(r.get("error"), str) and r["error"],
                  f"item with non-JSON text: expected ok=false with an error, got {r}")
            continue
        check(r.get("ok") is True and r.get("result") == json.loads(text), f"result for id {item_id!r}: {r}")
        check('"result":' + text in raw, f"id {item_id!r}: item text {text!r} not byte for byte in {raw!r}")
    dead = ctx.dead_entries()
    check([d.get("id") for d in dead] == ["bad"], f"dead entries {dead}, expected the one bad item")
