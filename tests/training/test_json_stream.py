import io
import json

import pytest

from training.json_stream import JsonReader

DOCS = [
    [],
    [1, 22, 333, -4.5e10, True, False, None],
    [{"a": "x" * 50, "b": [1, {"c": "\u00e9\ud83d\ude00"}], "d": "esc \" \\ \n \u0001 \\/"}],
    [{"n": i, "text": f"message {i} " * (i % 7)} for i in range(200)],
    ["\ud83d\ude00" * 30, 12345678901234567890, ""],
]


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 16])
@pytest.mark.parametrize("doc", DOCS)
def test_arrays_match_json_loads_at_any_chunk_size(doc, chunk):
    for text in (json.dumps(doc), json.dumps(doc, indent=3), json.dumps(doc, ensure_ascii=False)):
        reader = JsonReader(io.StringIO(text), chunk_chars=chunk)
        assert list(reader.iter_array()) == json.loads(text)
        assert reader.at_end()


@pytest.mark.parametrize("chunk", [2, 5, 1 << 16])
def test_an_object_with_a_streamed_array(chunk):
    doc = {"guild": {"id": "1"}, "channel": {"id": "2", "name": "x"}, "messages": [{"id": str(i)} for i in range(50)],
           "messageCount": 50}
    reader = JsonReader(io.StringIO(json.dumps(doc, indent=2)), chunk_chars=chunk)
    seen = {}
    for key in reader.iter_object():
        seen[key] = list(reader.iter_array()) if key == "messages" else reader.read_value()
    assert seen == doc


@pytest.mark.parametrize(
    "text",
    ['[{"a": 1} {"b": 2}]', '[{"a": 1},', '[{"a": tru}]', '[1, 2', '{"a" 1}', '[{"a": "unterminated]', "[1,]"],
)
def test_malformed_json_raises_naming_the_file(text):
    reader = JsonReader(io.StringIO(text), name="day.json", chunk_chars=4)
    with pytest.raises(json.JSONDecodeError, match="day.json"):
        list(reader.iter_array())


def test_an_error_early_in_a_big_file_does_not_read_the_rest():
    class Counting(io.StringIO):
        read_chars = 0

        def read(self, n=-1):
            data = super().read(n)
            Counting.read_chars += len(data)
            return data

    text = '[{"a": 1} {"b": 2}' + ", 1" * 1_000_000 + "]"
    with pytest.raises(json.JSONDecodeError):
        list(JsonReader(Counting(text), chunk_chars=1024).iter_array())
    assert Counting.read_chars < 10_000


def test_a_value_over_the_limit_is_refused():
    text = '["' + "x" * 5000 + '"]'
    with pytest.raises(json.JSONDecodeError, match="longer than"):
        list(JsonReader(io.StringIO(text), chunk_chars=100, max_value_chars=1000).iter_array())


def test_one_big_value_is_read_in_few_rounds():
    class Counting(io.StringIO):
        reads = 0

        def read(self, n=-1):
            Counting.reads += 1
            return super().read(n)

    text = json.dumps([{"text": "y" * 2_000_000}])
    assert len(list(JsonReader(Counting(text), chunk_chars=1000).iter_array())[0]["text"]) == 2_000_000
    assert Counting.reads < 40  # the buffer grows geometrically, not a chunk at a time
