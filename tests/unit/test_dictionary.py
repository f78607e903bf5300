"""Semantic dictionary: build, read-only load, hashes and digest, CLI, SVDMap/CAFMap mappings.

Uses the real all-MiniLM-L6-v2 weights (loaded once for the module) on a small action list.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest

from fedvida.cli import main
from fedvida.config import load_config
from fedvida.errors import ConfigError, InputError, ProblemLog
from fedvida.resources import audioset_labels
from fedvida.semantics import (
    ArtifactError,
    SemanticDictionary,
    SentenceEmbedder,
    build_dictionary,
    captions_to_audio_labels,
    load_sentence_embedder,
    normalise_action,
    read_categories_file,
    resolve_actions,
    svdmap_agreement,
    svdmap_similarity,
    verify_artifact,
)

pytestmark = pytest.mark.slow

ACTIONS = sorted(["barking", "applauding", "drumming", "typing", "raining", "adult+female+singing"])
LABELS = [name for _, name in audioset_labels()]
MINILM_SHA256_HEAD, MINILM_SHA256_TAIL = "53aa5117", "28d9db"


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return load_sentence_embedder("all-MiniLM-L6-v2")


def _build(embedder: SentenceEmbedder, out: Path, top_k: int = 5) -> SemanticDictionary:
    return build_dictionary(
        ACTIONS,
        out,
        embedder=embedder,
        action_template="the sound of {action}",
        audio_template="the sound of {label}",
        top_k=top_k,
    )


@pytest.fixture(scope="module")
def built(embedder: SentenceEmbedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dict") / "dictionary"
    _build(embedder, out)
    return out


@pytest.fixture()
def copy(built: Path, tmp_path: Path) -> Path:
    """A private copy of the artifact that a test may tamper with."""
    target = tmp_path / "copy"
    target.mkdir()
    for f in built.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def _flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_embedder_is_cached_and_normalised(embedder: SentenceEmbedder) -> None:
    again = load_sentence_embedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    emb = embedder.encode(["A man is eating food.", "A man is eating a piece of bread."])

    assert again is embedder
    assert emb.shape == (2, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert 0.6 < float(emb[0] @ emb[1]) < 0.9
    memo = embedder.encode_memo(["the sound of Bark", "the sound of Rain"])
    np.testing.assert_array_equal(memo, embedder.encode(["the sound of Bark", "the sound of Rain"]))
    assert embedder.encode_memo(["the sound of Bark", "the sound of Rain"]) is memo
    assert not memo.flags.writeable
    assert embedder.weights_sha256.startswith(MINILM_SHA256_HEAD)
    assert embedder.weights_sha256.endswith(MINILM_SHA256_TAIL)


def test_unknown_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no-such-model"):
        load_sentence_embedder(str(tmp_path / "no-such-model"))


def test_build_and_load_round_trip(built: Path) -> None:
    d = SemanticDictionary.load(built)
    manifest = json.loads((built / "manifest.json").read_text())

    assert d.actions == ACTIONS
    assert d.action_texts[0] == "the sound of adult female singing"
    assert d.audio_labels == LABELS
    assert d.similarity.shape == (len(ACTIONS), 527)
    assert d.action_embeddings.shape == (len(ACTIONS), 384)
    assert d.audio_embeddings.shape == (527, 384)
    expected_sim = np.asarray(d.action_embeddings) @ np.asarray(d.audio_embeddings).T
    np.testing.assert_allclose(d.similarity, expected_sim, atol=1e-5)
    order = np.argsort(-np.asarray(d.similarity), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(d.topk_indices, order)
    assert d.weights_sha256 == manifest["model"]["weights_sha256"]
    assert manifest["model"]["name"] == "all-MiniLM-L6-v2"
    assert manifest["templates"] == {
        "action": "the sound of {action}", "audio": "the sound of {label}"
    }
    assert set(manifest["files"]) == {
        "labels.json", "action_embeddings.npy", "audio_embeddings.npy", "similarity.npy",
        "topk_indices.npy", "topk_scores.npy",
    }
    assert "created_at" in manifest and len(d.digest) == 64
    # the entries make sense: the right sounds come first
    assert {lab for lab, _ in d.topk("barking")} & {"Bark", "Dog"}
    assert {lab for lab, _ in d.topk("applauding")} & {"Applause", "Clapping"}
    assert d.topk("raining", 1)[0][0] in {"Rain", "Raindrop", "Rain on surface"}
    assert len(d.topk("typing", 20)) == 20  # beyond the stored k, from the full matrix


def test_lookup_by_normalised_name_and_unknown_action(built: Path) -> None:
    d = SemanticDictionary.load(built)

    assert d.index("adult female singing") == d.index("adult+female+singing")
    assert "adult_female_singing" in d
    with pytest.raises(InputError, match="'juggling' is not in the dictionary"):
        d.topk("juggling")


def test_arrays_are_read_only_memmaps(built: Path) -> None:
    d = SemanticDictionary.load(built)

    for arr in (d.similarity, d.action_embeddings, d.audio_embeddings, d.topk_scores):
        assert isinstance(arr, np.memmap)
        with pytest.raises(ValueError):
            arr[0, 0] = 1.0
    with pytest.raises(ValueError):
        d.topk_indices[0, 0] = 3


def test_verify_then_tampered_byte_is_refused_naming_the_file(copy: Path) -> None:
    verify_artifact(copy)
    SemanticDictionary.load(copy)  # now cached for this process

    _flip_byte(copy / "similarity.npy")

    with pytest.raises(ArtifactError, match=r"similarity\.npy: SHA-256 mismatch"):
        verify_artifact(copy)
    with pytest.raises(ArtifactError, match=r"similarity\.npy"):
        SemanticDictionary.load(copy)


def test_missing_extra_and_edited_manifest_are_refused(copy: Path) -> None:
    (copy / "notes.txt").write_text("extra")
    with pytest.raises(ArtifactError, match=r"notes\.txt: not listed"):
        verify_artifact(copy)
    (copy / "notes.txt").unlink()

    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["top_k"] = 3  # content field changed without rebuilding: digest no longer matches
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="digest does not match"):
        verify_artifact(copy)

    (copy / "topk_scores.npy").unlink()
    with pytest.raises(ArtifactError, match=r"topk_scores\.npy: missing"):
        SemanticDictionary.load(copy)


def test_expected_digest_checked_and_cached(built: Path) -> None:
    d = SemanticDictionary.load(built)

    assert SemanticDictionary.load(built, d.digest) is d  # cached: same instance, no re-hash
    with pytest.raises(ArtifactError, match="is not the expected"):
        SemanticDictionary.load(built, "0" * 64)
    SemanticDictionary.forget(built)
    fresh = SemanticDictionary.load(built, d.digest.upper())
    assert fresh is not d and fresh.digest == d.digest


def test_digest_is_stable_across_builds_and_rebuild_replaces(
    embedder: SentenceEmbedder, built: Path, copy: Path
) -> None:
    first = json.loads((built / "manifest.json").read_text())
    _flip_byte(copy / "similarity.npy")  # an older, damaged artifact at the output path

    again = _build(embedder, copy)  # rebuilding in place replaces it
    manifest = json.loads((copy / "manifest.json").read_text())

    assert again.digest == first["digest"]
    assert manifest["files"] == first["files"]
    verify_artifact(copy, first["digest"])
    assert not [p for p in copy.parent.iterdir() if p.name.startswith(".copy.")]  # no leftovers


def test_build_refuses_to_overwrite_a_foreign_directory(
    embedder: SentenceEmbedder, tmp_path: Path
) -> None:
    (tmp_path / "mine.txt").write_text("not a dictionary")
    with pytest.raises(InputError, match="non-empty directory"):
        _build(embedder, tmp_path)
    assert (tmp_path / "mine.txt").is_file()


def test_entry_line_format(built: Path) -> None:
    d = SemanticDictionary.load(built)
    line = d.entry_line("barking", 3)

    assert re.fullmatch(r"barking -> [^,]+(?:, [^,]+)? -?\d\.\d\d(?:, .+ -?\d\.\d\d){2}", line)
    assert line.count(" 0.") == 3


def test_categories_file_parsing(tmp_path: Path) -> None:
    path = tmp_path / "moments_categories.txt"
    path.write_text("name,index\nraining,2\nbarking,0\n\nbad,x\nbarking,5\n,3\ntyping,1\n")
    log = ProblemLog()

    names = read_categories_file(path, log)

    assert names == ["barking", "typing", "raining"]  # by index
    assert log.counts() == {"bad_row": 2, "duplicate": 1}
    assert normalise_action("adult+female+singing") == "adult female singing"
    assert normalise_action("Playing_Video-games") == "playing video games"
    cfg = load_config(None, [f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(InputError, match="moments_categories.txt"):
        resolve_actions(cfg)
    assert len(resolve_actions(cfg, all_mit_v1=True)[0]) == 339


def test_config_validates_templates() -> None:
    with pytest.raises(ConfigError, match="action_template"):
        load_config(None, ["dictionary.action_template=someone {verb}"])
    with pytest.raises(ConfigError, match="top_k"):
        load_config(None, ["dictionary.top_k=0"])


def test_cli_build_show_verify(
    embedder: SentenceEmbedder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cats = tmp_path / "moments_categories.txt"
    cats.write_text("barking,0\ntyping,1\ndrumming,2\nnot a row,x\n")
    out = tmp_path / "dict"

    assert main(["dictionary", "build", "--categories", str(cats), "--out", str(out)]) == 0
    built_out = capsys.readouterr().out
    digest = SemanticDictionary.load(out).digest
    assert "bad_row=1" in built_out and f"digest {digest}\n" in built_out

    assert main(["dictionary", "show", "--dir", str(out), "--action", "barking"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[1] == f"digest {digest}"
    assert re.fullmatch(r"barking -> .+ \d\.\d\d(, .+ \d\.\d\d){4}", shown[2]) and len(shown) == 3

    assert main(["dictionary", "show", "--set", f"dictionary.out={out}"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2 + 3  # all actions

    assert main(["dictionary", "verify", str(out), "--digest", digest]) == 0
    assert capsys.readouterr().out.startswith(f"OK {out}")
    assert main(["dictionary", "verify", str(out), "--digest", "ab" * 32]) == 1
    assert "is not the expected" in capsys.readouterr().out

    _flip_byte(out / "action_embeddings.npy")
    assert main(["dictionary", "verify", str(out)]) == 1
    assert "action_embeddings.npy: SHA-256 mismatch" in capsys.readouterr().out
    assert main(["dictionary", "show", "--dir", str(out)]) == 2  # one-line error, exit 2
    assert "action_embeddings.npy" in capsys.readouterr().err


def test_captions_to_audio_labels(embedder: SentenceEmbedder, built: Path) -> None:
    d = SemanticDictionary.load(built)
    captions = ["a dog barking loudly in a yard", "heavy rain falling on the roof", "  "]

    idx, scores = captions_to_audio_labels(captions, d, embedder, k=3)

    assert idx.shape == (3, 3) and scores.shape == (3, 3)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    assert {LABELS[i] for i in idx[0]} & {"Bark", "Dog", "Bow-wow"}
    assert {LABELS[i] for i in idx[1]} & {"Rain", "Rain on surface", "Raindrop"}
    assert np.all(np.diff(scores[:2], axis=1) <= 0)  # descending
    assert np.all(scores[2] == 0.0)  # blank caption
    empty_idx, _ = captions_to_audio_labels([], d, embedder)
    assert empty_idx.shape == (0, 3)


def test_captions_refuse_an_embedder_from_another_model(
    embedder: SentenceEmbedder, built: Path
) -> None:
    d = SemanticDictionary.load(built)
    impostor = SentenceEmbedder("other", embedder.path, embedder.model, "f" * 64)

    with pytest.raises(ArtifactError, match="is not the one the dictionary"):
        captions_to_audio_labels(["a dog barking"], d, impostor)


def test_svdmap_peaked_scores_agree_with_barking(built: Path) -> None:
    d = SemanticDictionary.load(built)
    scores = np.zeros((3, 527), dtype=np.float32)
    scores[0, LABELS.index("Bark")] = 0.9
    scores[0, LABELS.index("Dog")] = 0.8
    scores[0, LABELS.index("Speech")] = 0.1
    scores[1, LABELS.index("Applause")] = 0.9
    scores[1, LABELS.index("Clapping")] = 0.7

    sim = svdmap_similarity(scores, d)
    agree = svdmap_agreement(scores, d)

    assert sim.shape == (3, len(ACTIONS)) and agree.shape == (3,)
    assert d.actions[int(sim[0].argmax())] == "barking"
    assert d.actions[int(sim[1].argmax())] == "applauding"
    assert agree[0] > 0.5 and agree[2] == 0.0  # an all-zero score vector agrees with nothing
    np.testing.assert_allclose(agree, sim.max(axis=1))
    # restricted to candidates (e.g. the classifier's video-only top-2), per clip
    bark, typ = d.index("barking"), d.index("typing")
    cand = np.array([[typ, bark], [typ, bark], [typ, bark]])
    assert svdmap_agreement(scores, d, cand)[0] == pytest.approx(float(sim[0, bark]))
    assert svdmap_agreement(scores, d, cand)[1] < agree[1]
    # a chosen action list orders the columns (e.g. a dataset's classes)
    sub = svdmap_similarity(scores, d, actions=["typing", "barking"])
    np.testing.assert_allclose(sub, sim[:, [typ, bark]])


def test_svdmap_cannot_take_a_true_label(built: Path) -> None:
    d = SemanticDictionary.load(built)
    names = [p.lower() for p in inspect.signature(svdmap_agreement).parameters]
    scores = np.ones((4, 527), dtype=np.float32)

    assert names == ["scores", "dictionary", "candidate_actions", "actions", "k"]
    assert not any(w in n for n in names for w in ("label", "target", "true", "truth", "y_"))
    with pytest.raises(TypeError):
        svdmap_agreement(scores, d, labels=np.zeros(4, dtype=np.int64))  # type: ignore[call-arg]
    with pytest.raises(InputError, match=r"\(N, c\)"):
        svdmap_agreement(scores, d, np.zeros(4, dtype=np.int64))  # a label vector (N,)
    with pytest.raises(InputError, match="shape"):
        svdmap_similarity(np.ones((4, 521)), d)
