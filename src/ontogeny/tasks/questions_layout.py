"""The slot layout of question formation's language (questions_gen.py has the grammar): every word position of the
largest sentence in word order, which slots each of the 30 templates holds, and who agrees with whom."""

from __future__ import annotations

import numpy as np

SLOTS = ("s_the", "s_N",
         "p_P", "p_the", "p_N",  # subject PP
         "r_that", "r_Aux", "r_V", "r_the", "r_N",  # subject RC
         "r2_that", "r2_Aux", "r2_V", "r2_the", "r2_N",  # RC on the subject RC's object (center embedding)
         "m_Aux", "m_V", "o_the", "o_N",  # main clause
         "op_P", "op_the", "op_N",  # object PP
         "or_that", "or_Aux", "or_V", "or_the", "or_N",  # object RC
         "dot")
SLOT = {name: i for i, name in enumerate(SLOTS)}
VERB_OBJECT = {"r_V": "r_the", "r2_V": "r2_the", "m_V": "o_the", "or_V": "or_the"}  # a verb is transitive iff
AUX_SLOTS = ("r_Aux", "r2_Aux", "m_Aux")  # the auxiliaries that can precede or be the main one, in word order
VERB_SUBJECT = {"r_V": "s_N", "r2_V": "r_N", "m_V": "s_N", "or_V": "o_N"}  # tense: whom each verb agrees with
AUX_SUBJECT = {"r_Aux": "s_N", "r2_Aux": "r_N", "m_Aux": "s_N", "or_Aux": "o_N"}  # agreement: whom each agrees with

RC = ("r_that", "r_Aux", "r_V")
SUBJECTS = {  # subject option -> its slots, with the depth of its relative clause
    "none": ((), 0),
    "pp": (("p_P", "p_the", "p_N"), 0),
    "rc-intr": (RC, 1),
    "rc-tr": (RC + ("r_the", "r_N"), 1),
    "rc2-intr": (RC + ("r_the", "r_N", "r2_that", "r2_Aux", "r2_V"), 2),
    "rc2-tr": (RC + ("r_the", "r_N", "r2_that", "r2_Aux", "r2_V", "r2_the", "r2_N"), 2),
}
MAINS = {
    "intr": ("m_Aux", "m_V"),
    "tr": ("m_Aux", "m_V", "o_the", "o_N"),
    "tr-pp": ("m_Aux", "m_V", "o_the", "o_N", "op_P", "op_the", "op_N"),
    "tr-rc-intr": ("m_Aux", "m_V", "o_the", "o_N", "or_that", "or_Aux", "or_V"),
    "tr-rc-tr": ("m_Aux", "m_V", "o_the", "o_N", "or_that", "or_Aux", "or_V", "or_the", "or_N"),
}


def _layouts() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return each template's slot presence [n_templates, n_slots], subject RC depth [n_templates] and text."""
    present, depth, text = [], [], []
    for subject_slots, rc_depth in SUBJECTS.values():
        for main_slots in MAINS.values():
            names = {"s_the", "s_N", "dot", *subject_slots, *main_slots}
            present.append([name in names for name in SLOTS])
            depth.append(rc_depth)
            category = {"the": "Det", "dot": "."}
            text.append(" ".join(category.get(s.split("_")[-1], s.split("_")[-1]) for s in SLOTS if s in names))
    return np.array(present), np.array(depth, dtype=np.int64), text


PRESENT, DEPTH, TEXT = _layouts()
assert len(set(TEXT)) == len(TEXT), "template texts must be distinct"
PRESENT_TENSE = PRESENT & ~np.array([name.endswith("_Aux") for name in SLOTS])  # no auxiliaries
TEXT_TENSE = [" ".join(w for w in text.split() if w != "Aux") for text in TEXT]
assert len(set(TEXT_TENSE)) == len(TEXT_TENSE), "tense template texts must be distinct"
BEFORE_MAIN_NOUNS = np.array([SLOT[name] for name in ("s_N", "p_N", "r_N", "r2_N")])  # in word order
# the noun the linear rule agrees with: the last one before the main verb (s_N when nothing intervenes)
LINEAR_NOUN = BEFORE_MAIN_NOUNS[len(BEFORE_MAIN_NOUNS) - 1 - np.argmax(PRESENT[:, BEFORE_MAIN_NOUNS[::-1]], 1)]
