"""scripts/copy_curve.py's renaming: the one piece of logic of that diagnostic script."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "copy_curve", Path(__file__).resolve().parents[1] / "scripts" / "copy_curve.py")
copy_curve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(copy_curve)

ENTITIES = [{"type": "city", "name": n} for n in ("Kik", "Kikford", "Lonbury")] + \
           [{"type": "person", "name": n} for n in ("Ann Lee", "Bo Tran", "Cy Ma")]


def test_renaming_is_one_same_type_permutation_per_chat():
    chat = [{"role": "user", "content": "Where was Ann Lee born?"},
            {"role": "assistant", "content": '{"query": "Ann Lee"}'},
            {"role": "tool", "content": "Ann Lee was born in Kikford. Bo Tran lives in Kik."},
            {"role": "assistant", "content": "<answer>Kikford</answer>"}]
    rename = copy_curve.renamer(ENTITIES, seed=3)
    seen_maps = set()
    for _ in range(20):
        out = rename(chat)
        assert [m["role"] for m in out] == [m["role"] for m in chat]
        person = out[0]["content"].removeprefix("Where was ").removesuffix(" born?")
        city = out[3]["content"].removeprefix("<answer>").removesuffix("</answer>")
        assert person in {"Ann Lee", "Bo Tran", "Cy Ma"} and city in {"Kik", "Kikford", "Lonbury"}
        # the same name is replaced the same way throughout the chat
        assert out[1]["content"] == f'{{"query": "{person}"}}'
        assert out[2]["content"].startswith(f"{person} was born in {city}. ")
        # "Kik" inside "Kikford" is not a name of its own
        other = out[2]["content"].split(". ")[1]
        assert other.split(" lives in ")[0] != person and other.split(" lives in ")[1] != city + "."
        seen_maps.add((person, city))
    assert len(seen_maps) > 1  # a new permutation per chat
