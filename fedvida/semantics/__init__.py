"""The semantic dictionary (actions x AudioSet labels), a read-only global artifact, and the
CAFMap / SVDMap mappings built on it. See ``docs/semantics.md``."""

from fedvida.semantics.artifact import ArtifactError, verify_artifact
from fedvida.semantics.build import TEMPLATE_PRESETS, build_dictionary, embed_labels
from fedvida.semantics.dictionary import SemanticDictionary
from fedvida.semantics.embedder import SentenceEmbedder, load_sentence_embedder
from fedvida.semantics.labels import normalise_action, read_categories_file, resolve_actions
from fedvida.semantics.mapping import (
    captions_to_audio_labels,
    dictionary_entries,
    svdmap_agreement,
    svdmap_similarity,
)

__all__ = [
    "TEMPLATE_PRESETS",
    "ArtifactError",
    "SemanticDictionary",
    "SentenceEmbedder",
    "build_dictionary",
    "captions_to_audio_labels",
    "dictionary_entries",
    "embed_labels",
    "load_sentence_embedder",
    "normalise_action",
    "read_categories_file",
    "resolve_actions",
    "svdmap_agreement",
    "svdmap_similarity",
    "verify_artifact",
]
