"""Question-formation generator: hand-decoded examples, the split contract read back from the words, the knobs'
shares, the rule scorer and the knob checks."""


import numpy as np
import pytest

from ontogeny.tasks.questions_gen import PAD, SPECIALS, QuestionGrammar, render, sample
from ontogeny.tasks.questions_templates import training_templates
from ontogeny.tasks.rule_score import HIERARCHICAL_LABEL_SHARE, member_rule, rule_scores

SMALL = QuestionGrammar(n_nouns=4, n_verbs=4, n_auxiliaries=3, n_prepositions=2)
MIXED = QuestionGrammar(complexity=0.3, disambiguating=0.25, quest_share=0.5)
AGREE = QuestionGrammar(complexity=0.3, disambiguating=0.25, agreement=True)


def read_back(grammar: QuestionGrammar, examples, s: int) -> dict:
    """Parse example s from its words alone: declarative, marker, output, and the auxiliaries (an RC's auxiliary
    always follows "that", so the main one is the first auxiliary that does not)."""
    words = grammar.words()
    sequence = [words[t] for t in examples.tokens[s, : examples.lengths[s]]]
    marker = next(i for i, w in enumerate(sequence) if w in ("decl", "quest"))
    declarative, output = sequence[1:marker], sequence[marker + 1 : -1]
    auxiliaries = set(words[grammar.first_auxiliary : grammar.first_preposition])
    aux_at = [i for i, w in enumerate(declarative) if w in auxiliaries]
    main = next(i for i in aux_at if declarative[i - 1] != "that")
    categories = {"the": "Det", "that": "that", ".": "."}
    for w in words[grammar.first_noun : grammar.first_verb]:
        categories[w] = "N"
    for w in words[grammar.first_verb : grammar.first_auxiliary]:
        categories[w] = "V"
    for w in auxiliaries:
        categories[w] = "Aux"
    for w in words[grammar.first_preposition :]:
        categories[w] = "P"
    return {"sequence": sequence, "marker": marker, "declarative": declarative, "output": output,
            "main": main, "first": aux_at[0], "rc_depth": declarative[:main].count("that"),
            "template": " ".join(categories[w] for w in declarative), "tail": sequence[-1]}


def test_hand_decoded_examples():
    train = sample(SMALL, "train", 40, seed=3)
    assert render(SMALL, train.tokens[7]) == ("<bos> the yak by the yak can admire the newt that will walk . decl "
                                              "the yak by the yak can admire the newt that will walk . <eos>")
    assert train.kind[7] == "decl" and train.template[7] == 8 and not train.subject_rc[7]
    assert SMALL.templates()[8] == "Det N P Det N Aux V Det N that Aux V ."
    assert render(SMALL, train.tokens[0]) == "<bos> the walrus can walk . quest can the walrus walk ? <eos>"
    assert (train.output_start[0], train.lengths[0], train.main_aux_position[0]) == (7, 13, 2)
    assert train.first_aux_position[0] == 2 and SMALL.words()[train.main_aux[0]] == "can"
    assert (train.tokens[0, 13:] == PAD).all()

    gen = sample(SMALL, "gen", 5, seed=3)
    assert render(SMALL, gen.tokens[1]) == ("<bos> the newt that will swim could see the yak . quest could the newt "
                                            "that will swim see the yak ? <eos>")
    words = SMALL.words()
    assert (words[gen.main_aux[1]], words[gen.first_aux[1]]) == ("could", "will")
    assert (gen.main_aux_position[1], gen.first_aux_position[1], gen.output_start[1]) == (5, 3, 12)
    assert gen.subject_rc[1] and not gen.center_embedded[1]
    # the linear rule fronts "will" instead: a different question from the hierarchical one
    output = [words[t] for t in gen.tokens[1, gen.output_start[1] : gen.lengths[1] - 1]]
    linear = ["will", "the", "newt", "that", "swim", "could", "see", "the", "yak", "?"]
    assert output == ["could", "the", "newt", "that", "will", "swim", "see", "the", "yak", "?"] and output != linear
    assert rule_scores(np.array([gen.tokens[1, gen.output_start[1]]]), gen.main_aux[1:2],
                       gen.first_aux[1:2]).tolist() == ["hierarchical"]


@pytest.mark.parametrize("grammar,split", [(QuestionGrammar(), "train"), (MIXED, "train"), (MIXED, "test"),
                                           (MIXED, "gen"), (SMALL, "gen"), (AGREE, "train"), (AGREE, "gen")])
def test_outputs_labels_and_templates_read_back_from_the_words(grammar, split):
    examples = sample(grammar, split, 2000, seed=5)
    templates = grammar.templates()
    for s in range(len(examples)):
        got = read_back(grammar, examples, s)
        declarative, main = got["declarative"], got["main"]
        assert got["sequence"][0] == "<bos>" and got["tail"] == "<eos>" and declarative[-1] == "."
        assert got["marker"] + 1 == examples.output_start[s] and got["sequence"][got["marker"]] == examples.kind[s]
        if examples.kind[s] == "decl":
            assert got["output"] == declarative
        else:  # the question: the main auxiliary fronted, "?" for "."
            assert got["output"] == [declarative[main]] + declarative[:main] + declarative[main + 1 : -1] + ["?"]
        assert (examples.main_aux_position[s], examples.first_aux_position[s]) == (main, got["first"])
        words = grammar.words()
        assert words[examples.main_aux[s]] == declarative[main] and words[examples.first_aux[s]] == declarative[
            got["first"]]
        assert templates[examples.template[s]] == got["template"]
        assert (examples.subject_rc[s], examples.center_embedded[s]) == (got["rc_depth"] > 0, got["rc_depth"] == 2)
    assert examples.tokens.shape == (2000, grammar.max_length())
    valid = np.arange(grammar.max_length()) < examples.lengths[:, None]
    assert (examples.tokens[~valid] == PAD).all() and (examples.tokens[valid] != PAD).all()


def test_train_questions_are_ambiguous_and_gen_questions_are_not():
    train = sample(QuestionGrammar(complexity=0.5), "train", 5000, seed=1)
    quest = train.kind == "quest"
    assert 0.45 < quest.mean() < 0.55
    assert not train.subject_rc[quest].any() and train.subject_rc[~quest].any()  # declaratives do carry RCs
    assert (train.main_aux_position[quest] == train.first_aux_position[quest]).all()
    gen = sample(QuestionGrammar(), "gen", 5000, seed=1)
    assert (gen.kind == "quest").all() and gen.subject_rc.all()
    assert (gen.first_aux != gen.main_aux).all() and (gen.first_aux_position < gen.main_aux_position).all()
    assert abs(gen.center_embedded.mean() - 0.5) < 0.03  # uniform over the 20 subject-RC templates, 10 of depth 2
    assert set(np.unique(gen.template)) == set(np.flatnonzero(QuestionGrammar().template_depths() > 0))


def test_disambiguating_share():
    train = sample(QuestionGrammar(disambiguating=0.25), "train", 5000, seed=2)
    quest = train.kind == "quest"
    assert abs(train.subject_rc[quest].mean() - 0.25) < 0.04
    rc_questions = quest & train.subject_rc
    assert (train.first_aux[rc_questions] != train.main_aux[rc_questions]).all()  # they do disambiguate


@pytest.mark.parametrize("complexity", [0.0, 0.3, 0.8, 1.0])
def test_complexity_is_the_share_of_center_embedded_declaratives(complexity):
    train = sample(QuestionGrammar(complexity=complexity), "train", 5000, seed=3)
    declarative = train.kind == "decl"
    assert abs(train.center_embedded[declarative].mean() - complexity) < 0.04
    assert not train.center_embedded[~declarative].any()  # plain questions cannot carry a subject RC


@pytest.mark.parametrize("subject_rc, complexity", [(0.0, 0.0), (0.3, 0.0), (0.6, 0.5), (1.0, 1.0)])
def test_subject_rc_is_qin_et_al_s_share_of_declaratives_with_a_subject_relative_clause(subject_rc, complexity):
    train = sample(QuestionGrammar(subject_rc=subject_rc, complexity=complexity), "train", 5000, seed=4)
    declarative = train.kind == "decl"
    assert abs(train.subject_rc[declarative].mean() - subject_rc) < 0.04  # down to none at all
    assert abs(train.center_embedded[declarative].mean() - subject_rc * complexity) < 0.04
    assert not train.subject_rc[~declarative].any()  # questions stay ambiguous
    assert not train.center_embedded[declarative & ~train.subject_rc].any()
    # without the knob about half of the declaratives carry one at complexity 0 (the templates' own mix)
    mixed = sample(QuestionGrammar(), "train", 5000, seed=4)
    assert 0.4 < mixed.subject_rc[mixed.kind == "decl"].mean() < 0.6


@pytest.mark.parametrize("grammar", [QuestionGrammar(diversity=1, quest_share=0.0),
                                     QuestionGrammar(diversity=2, subject_rc=0.5),
                                     QuestionGrammar(diversity=1, subject_rc=0.0),
                                     QuestionGrammar(diversity=3, complexity=0.3),
                                     QuestionGrammar(diversity=7, complexity=0.3, disambiguating=0.2),
                                     QuestionGrammar(diversity=12), QuestionGrammar(diversity=30, complexity=0.5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diversity_is_the_number_of_distinct_training_templates(grammar, seed):
    allowed = training_templates(grammar, seed)
    assert len(allowed) == grammar.diversity
    for split in ("train", "test"):  # test draws from the same templates as train
        examples = sample(grammar, split, 5000, seed=seed)
        assert set(np.unique(examples.template)) == set(allowed)


def test_diversity_templates_depend_on_the_seed():
    grammar = QuestionGrammar(diversity=5, complexity=0.3)
    sets = {tuple(training_templates(grammar, seed)) for seed in range(6)}
    assert len(sets) > 1


def test_rule_scores_and_member_labels():
    main, first = np.array([20, 20, 20, 21]), np.array([21, 21, 21, 20])
    scores = rule_scores(np.array([20, 21, 9, 21]), main, first)
    assert scores.tolist() == ["hierarchical", "linear", "neither", "hierarchical"]
    assert rule_scores(np.array([20]), np.array([20]), np.array([20])).tolist() == ["hierarchical"]  # a tie
    with pytest.raises(ValueError, match="one shape"):
        rule_scores(np.array([1, 2]), np.array([1]), np.array([1]))

    def labelled(n_hierarchical, n_linear, n_neither):
        return member_rule(np.array(["hierarchical"] * n_hierarchical + ["linear"] * n_linear
                                    + ["neither"] * n_neither))

    assert HIERARCHICAL_LABEL_SHARE == 0.8
    assert labelled(8, 2, 0) == {"hierarchical": 0.8, "linear": 0.2, "neither": 0.0, "label": "hierarchical"}
    assert labelled(7, 3, 0)["label"] == "mixed"
    assert labelled(0, 9, 1) == {"hierarchical": 0.0, "linear": 0.9, "neither": 0.1, "label": "linear"}
    assert labelled(1, 7, 2)["label"] == "mixed"
    assert labelled(0, 0, 5)["label"] == "mixed"
    with pytest.raises(ValueError, match="unknown rule"):
        member_rule(np.array(["tree"]))
    with pytest.raises(ValueError, match="non-empty"):
        member_rule(np.array([], dtype=object))


@pytest.mark.parametrize("knobs,field,text", [
    ({"complexity": 1.5}, "complexity", "[0, 1]"),
    ({"disambiguating": -0.1}, "disambiguating", "[0, 1]"),
    ({"quest_share": 2}, "quest_share", "[0, 1]"),
    ({"n_auxiliaries": 1}, "n_auxiliaries", ">= 2"),
    ({"n_verbs": 1}, "n_verbs", ">= 2"),
    ({"n_nouns": 0}, "n_nouns", ">= 1"),
    ({"n_prepositions": 0}, "n_prepositions", ">= 1"),
    ({"diversity": -1}, "diversity", ">= 0"),
    ({"diversity": 2.5}, "diversity", "integer"),
    ({"diversity": 21}, "diversity", "<= 20"),  # complexity 0: the 10 center-embedded templates are out of reach
    ({"diversity": 1, "complexity": 0.3}, "diversity", "center-embedded"),
    ({"diversity": 2, "complexity": 0.3, "disambiguating": 0.2}, "diversity", "depth-1 subject-RC"),
    ({"subject_rc": 1.5}, "subject_rc", "[0, 1], or -1"),
    ({"diversity": 1, "subject_rc": 0.5}, "diversity", "depth-1 subject-RC"),
])
def test_check_names_each_bad_knob(knobs, field, text):
    grammar = QuestionGrammar(**knobs)
    problems = grammar.check()
    assert [name for name, _ in problems] == [field]
    assert text in problems[0][1]
    with pytest.raises(ValueError, match=field) as error:
        sample(grammar, "train", 10, seed=0)
    assert "\n" not in str(error.value)


def test_good_knobs_pass_and_bad_arguments_fail():
    for grammar in (QuestionGrammar(), MIXED, SMALL, QuestionGrammar(diversity=2, complexity=0.3),
                    QuestionGrammar(diversity=30, complexity=0.5), QuestionGrammar(quest_share=1.0, diversity=10)):
        assert grammar.check() == []
    with pytest.raises(ValueError, match="split must be one of train, test, gen"):
        sample(QuestionGrammar(), "validation", 10, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        sample(QuestionGrammar(), "train", -1, seed=0)
    assert len(sample(QuestionGrammar(), "gen", 0, seed=0)) == 0


def test_vocabulary_and_lengths():
    grammar = QuestionGrammar()
    words = grammar.words()
    assert len(words) == grammar.vocab_size == len(set(words)) and tuple(words[:5]) == SPECIALS
    assert len(grammar.templates()) == len(set(grammar.templates())) == 30
    assert grammar.max_length() == 2 * 22 + 3  # the longest declarative: template 29, 22 words
    longest = sample(grammar, "gen", 3000, seed=0)
    assert longest.lengths.max() == grammar.max_length()


def test_determinism():
    for split in ("train", "test", "gen"):
        a, b = sample(MIXED, split, 500, seed=7), sample(MIXED, split, 500, seed=7)
        for field in a.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert not np.array_equal(a.tokens, sample(MIXED, split, 500, seed=8).tokens)
    assert not np.array_equal(sample(MIXED, "train", 500, seed=7).tokens, sample(MIXED, "test", 500, seed=7).tokens)


# ---- agreement ------------------------------------------------------------------------------------------------


def test_with_agreement_every_auxiliary_agrees_with_its_own_subject():
    examples = sample(AGREE, "train", 3000, seed=2)
    words = AGREE.words()
    assert len(words) == AGREE.vocab_size == len(set(words))
    assert words[AGREE.first_auxiliary: AGREE.first_preposition] == ["does", "doesn't", "has", "hasn't",
                                                                     "do", "don't", "have", "haven't"]
    nouns, plural_noun = set(words[AGREE.first_noun: AGREE.first_verb]), set(words[AGREE.first_noun + AGREE.n_nouns:
                                                                                    AGREE.first_verb])
    agreements, attracted = 0, 0
    for s in range(len(examples)):
        declarative = [words[t] for t in examples.tokens[s, 1: examples.output_start[s] - 1]]
        for i, w in enumerate(declarative):
            if w not in words[AGREE.first_auxiliary: AGREE.first_preposition]:
                continue
            aux_plural = words.index(w) - AGREE.first_auxiliary >= AGREE.n_auxiliaries
            if i > 0 and declarative[i - 1] == "that":  # a subject-gap RC: its subject is the noun before "that"
                subject = declarative[i - 2]
            elif i == examples.main_aux_position[s]:
                subject = declarative[1]
                nearest = [x for x in declarative[:i] if x in nouns][-1]
                attracted += (nearest in plural_noun) != aux_plural
            else:
                raise AssertionError(f"an auxiliary neither main nor after 'that': {declarative}")
            assert (subject in plural_noun) == aux_plural, declarative
            agreements += 1
    assert agreements > 4000
    assert 0.1 < attracted / len(examples) < 0.4  # the nearest noun often has the other number: the cue


def test_agreement_adds_numbers_without_changing_the_sentences_drawn():
    for split in ("train", "gen"):
        plain, agreeing = sample(MIXED, split, 500, seed=3), sample(
            QuestionGrammar(complexity=0.3, disambiguating=0.25, quest_share=0.5, agreement=True), split, 500, 3)
        words, numbered = MIXED.words(), AGREE.words()
        lemma = {w: w for w in words}
        lemma |= {p: s for s, p in zip(numbered[AGREE.first_noun: AGREE.first_noun + AGREE.n_nouns],
                                       numbered[AGREE.first_noun + AGREE.n_nouns: AGREE.first_verb])}
        singular = numbered[AGREE.first_auxiliary: AGREE.first_auxiliary + AGREE.n_auxiliaries]
        plural = numbered[AGREE.first_auxiliary + AGREE.n_auxiliaries: AGREE.first_preposition]
        modal = words[MIXED.first_auxiliary: MIXED.first_preposition]
        lemma |= dict(zip(singular, modal)) | dict(zip(plural, modal))
        for s in range(len(plain)):
            assert [lemma.get(numbered[t], numbered[t]) for t in agreeing.tokens[s]] == [words[t] for t in
                                                                                          plain.tokens[s]]
        np.testing.assert_array_equal(plain.template, agreeing.template)


def test_agreement_is_for_questions():
    assert QuestionGrammar(kind="tense", agreement=True).check() == [
        ("agreement", "is for questions: tense reinflection's verbs agree already (got True)")]


# ---- tense reinflection (kind = "tense") ----------------------------------------------------------------------------

TENSE = QuestionGrammar(n_nouns=4, n_verbs=4, n_prepositions=2, kind="tense")


def test_tense_hand_decoded_examples():
    words = TENSE.words()
    assert words[3:5] == ["past", "present"] and words[9:17] == ["newt", "yak", "raven", "walrus", "newts", "yaks",
                                                                   "ravens", "walruses"]
    assert words[17:29] == ["walked", "swam", "saw", "admired", "walks", "swims", "sees", "admires", "walk", "swim",
                            "see", "admire"] and words[29:] == ["by", "near"]
    train = sample(TENSE, "train", 10, seed=3)
    # a training present example: the PP's noun has the subject's number, so both rules give "admires"
    assert render(TENSE, train.tokens[6]) == ("<bos> the raven by the newt admired the walrus . present the raven by "
                                              "the newt admires the walrus . <eos>")
    assert train.kind[6] == "present" and TENSE.templates()[train.template[6]] == "Det N P Det N V Det N ."
    assert words[train.main_aux[6]] == words[train.first_aux[6]] == "admires"
    assert (train.output_start[6], train.rule_position[6], train.main_aux_position[6], train.first_aux_position[6],
            train.lengths[6]) == (11, 16, 5, 4, 21)
    assert words[train.tokens[6, 16]] == "admires" and (train.tokens[6, 21:] == PAD).all()
    assert render(TENSE, train.tokens[9]) == ("<bos> the yak that admired the yak walked . past the yak that admired "
                                              "the yak walked . <eos>")
    gen = sample(TENSE, "gen", 5, seed=3)
    assert render(TENSE, gen.tokens[1]) == ("<bos> the newts by the raven saw the yaks . present the newts by the raven "
                                            "see the yaks . <eos>")
    output = [words[t] for t in gen.tokens[1, gen.output_start[1] : gen.lengths[1] - 1]]
    linear = ["the", "newts", "by", "the", "raven", "sees", "the", "yaks", "."]  # agreeing with "raven"
    assert output == ["the", "newts", "by", "the", "raven", "see", "the", "yaks", "."] and output != linear
    assert (words[gen.main_aux[1]], words[gen.first_aux[1]]) == ("see", "sees")
    assert (gen.rule_position[1], gen.output_start[1] + 5) == (16, 16) and words[gen.tokens[1, 16]] == "see"
    assert not gen.subject_rc[1]
    # center embedded: every verb agrees with its own subject; the main verb's attractor is "ravens"
    assert render(TENSE, gen.tokens[4]) == (
        "<bos> the newt that admired the raven that saw the ravens admired the walrus by the yaks . present the newt "
        "that admires the raven that sees the ravens admires the walrus by the yaks . <eos>")
    assert (words[gen.main_aux[4]], words[gen.first_aux[4]]) == ("admires", "admire") and gen.center_embedded[4]
    assert (gen.main_aux_position[4], gen.first_aux_position[4], gen.rule_position[4]) == (10, 9, 29)


def read_back_tense(grammar: QuestionGrammar, examples, s: int) -> dict:
    """Parse tense example s from its words alone: a verb right after "that" agrees with the noun before "that"
    (subject-gap RCs), the main verb (the first verb not after "that") with the first noun; the linear rule's noun
    is the last noun before the main verb."""
    words = grammar.words()
    n, v = grammar.n_nouns, grammar.n_verbs
    noun_number = {w: i // n for i, w in enumerate(words[grammar.first_noun : grammar.first_verb])}
    verb_form = {w: ("past", "sg", "pl")[i // v] for i, w in enumerate(words[grammar.first_verb :
                                                                             grammar.first_auxiliary])}
    lemma = {w: i % v for i, w in enumerate(words[grammar.first_verb : grammar.first_auxiliary])}
    sequence = [words[t] for t in examples.tokens[s, : examples.lengths[s]]]
    marker = next(i for i, w in enumerate(sequence) if w in ("past", "present"))
    declarative, output = sequence[1:marker], sequence[marker + 1 : -1]
    verbs = [i for i, w in enumerate(declarative) if w in verb_form]
    main = next(i for i in verbs if declarative[i - 1] != "that")
    subject_of = {i: (declarative[i - 2] if declarative[i - 1] == "that" else declarative[1]) for i in verbs}
    linear = max(i for i in range(main) if declarative[i] in noun_number)
    return {"marker": sequence[marker], "declarative": declarative, "output": output, "verbs": verbs, "main": main,
            "subject_of": subject_of, "linear": linear, "noun_number": noun_number, "verb_form": verb_form,
            "lemma": lemma, "marker_at": marker}


@pytest.mark.parametrize("grammar,split", [
    (TENSE, "train"), (QuestionGrammar(kind="tense", complexity=0.3, disambiguating=0.4), "train"),
    (QuestionGrammar(kind="tense", complexity=0.5), "test"), (QuestionGrammar(kind="tense"), "gen")])
def test_tense_every_present_verb_agrees_with_its_subject(grammar, split):
    examples = sample(grammar, split, 2000, seed=4)
    words = grammar.words()
    attractors = []
    for s in range(len(examples)):
        got = read_back_tense(grammar, examples, s)
        declarative, output, main = got["declarative"], got["output"], got["main"]
        number, form = got["noun_number"], got["verb_form"]
        assert got["marker_at"] + 1 == examples.output_start[s] and got["marker"] == examples.kind[s]
        assert len(output) == len(declarative) and declarative[-1] == "." and all(
            form[declarative[i]] == "past" for i in got["verbs"])
        if got["marker"] == "past":
            assert output == declarative
            continue
        for i, (said, wrote) in enumerate(zip(declarative, output)):
            if i in got["verbs"]:  # the same verb, present, agreeing in number with its own subject
                agree = ("sg", "pl")[number[got["subject_of"][i]]]
                assert got["lemma"][wrote] == got["lemma"][said] and form[wrote] == agree
            else:
                assert wrote == said
        assert words[examples.main_aux[s]] == output[main] and examples.main_aux_position[s] == main
        assert examples.rule_position[s] == examples.output_start[s] + main
        assert examples.tokens[s, examples.rule_position[s]] == examples.main_aux[s]
        linear_form = ("sg", "pl")[number[declarative[got["linear"]]]]
        first = words[examples.first_aux[s]]
        assert form[first] == linear_form and got["lemma"][first] == got["lemma"][output[main]]
        assert examples.first_aux_position[s] == got["linear"]
        attractors.append(number[declarative[got["linear"]]] != number[declarative[1]])
        rc = "that" in declarative[:main]
        if split == "gen" or (rc and got["linear"] > 1):  # an attractor: the other number right before the verb
            assert attractors[-1] and examples.main_aux[s] != examples.first_aux[s]
        else:  # no attractor: both rules give the same form
            assert not attractors[-1] and examples.main_aux[s] == examples.first_aux[s]
    assert len(attractors) > 200
    if split == "gen":
        assert (examples.kind == "present").all() and examples.center_embedded.any() and (~examples.subject_rc).any()
    elif grammar.disambiguating == 0:
        assert not any(attractors)  # training is ambiguous between the two rules


def test_tense_knobs_and_lengths():
    train = sample(QuestionGrammar(kind="tense", disambiguating=0.25), "train", 5000, seed=2)
    present = train.kind == "present"
    assert 0.45 < present.mean() < 0.55 and abs(train.subject_rc[present].mean() - 0.25) < 0.04
    for complexity in (0.0, 0.8):
        train = sample(QuestionGrammar(kind="tense", complexity=complexity), "train", 5000, seed=3)
        assert abs(train.center_embedded[train.kind == "past"].mean() - complexity) < 0.04
    grammar = QuestionGrammar(kind="tense")
    words = grammar.words()
    assert len(words) == grammar.vocab_size == len(set(words)) == 9 + 24 + 24 + 4
    assert grammar.max_length() == 2 * 18 + 3 and sample(grammar, "gen", 3000, seed=0).lengths.max() == 39
    assert len(grammar.gen_templates()) == 20 and "Aux" not in " ".join(grammar.templates())
    question = sample(QuestionGrammar(), "gen", 50, seed=0)  # questions score their first output token
    assert (question.rule_position == question.output_start).all()


def test_tense_bad_kind_is_one_line():
    grammar = QuestionGrammar(kind="bogus")
    assert grammar.check() == [("kind", "must be one of question, tense (got 'bogus')")]
    with pytest.raises(ValueError, match="kind: must be one of question, tense") as error:
        sample(grammar, "train", 10, seed=0)
    assert "\n" not in str(error.value)
